"""`make bench`: engine, replay and memory figures, each measured as a ratio in one run.

The machines are noisy, so every speed is reported against a baseline measured in the
same process moments before: (a) the vectorised engine against a straightforward
per-row implementation of the same SPEC (the original system's shape), (b) `sfa replay`
against bare `orjson.loads` of every line of the same file, (c) memory per held bar,
(d) the market-scale table of `bench.scale` (replay speed, peak RSS and state per held bar
from 400 to 5,000 symbols, each replay in a fresh process; also var/bench/scale.md),
(e) the partitioned replay's scaling over 1..cores workers (`bench.partitioned`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.baseline import baseline_analyze
from bench.scale import DEFAULT_SIZES, MARKDOWN, SIZES, bare_decode, parse_sizes, scale_table
from service.calendar import date_to_day
from service.engine import EngineParams, SymbolWindows, analyze_patterns, window_year_of

ORIGINAL_SYMBOLS_PER_S = 32.0  # the original engine, sequential, on this machine kind (issue 2)
ENGINE_GOAL = 30_000.0
REPLAY_GOAL = 0.40
BYTES_PER_BAR_GOAL = 32.0


def _demo_workload(n_symbols: int = 200) -> tuple[list[SymbolWindows], dict[str, pd.DataFrame]]:
    """The original system's demo: one bar per calendar day 2018-01-01..2023-12-31."""
    rng = np.random.default_rng(42)
    dates = pd.date_range("2018-01-01", "2023-12-31", freq="D")
    days = np.array([date_to_day(d.date()) for d in dates], dtype=np.int32)
    in_window = window_year_of(days, 60) != 0
    items, frames = [], {}
    for i in range(n_symbols):
        closes = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, len(days))))
        symbol = f"{600000 + i}.SH"
        items.append(
            SymbolWindows(symbol, days[in_window], closes[in_window], latest=int(days[-1]))
        )
        frames[symbol] = pd.DataFrame({"date": dates.date, "close": closes})
    return items, frames


def bench_engine(repeats: int, baseline_symbols: int) -> dict[str, float]:
    params = EngineParams(window_days=60, years=frozenset({2020, 2021, 2022, 2023}))
    items, frames = _demo_workload()
    analyze_patterns(items, params)  # warm caches (SF table, numpy dispatch)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        analyze_patterns(items, params)
        best = min(best, time.perf_counter() - t0)
    engine_rate = len(items) / best
    t0 = time.perf_counter()
    for symbol in list(frames)[:baseline_symbols]:
        baseline_analyze(symbol, frames[symbol], params)
    base_rate = baseline_symbols / (time.perf_counter() - t0)
    return {"engine": engine_rate, "baseline": base_rate}


def _replay(path: Path, out_dir: Path) -> tuple[float, int, float, int]:
    from service.files.replay import replay
    from service.settings import load_settings

    settings = load_settings()
    with (
        open(out_dir / "results.jsonl", "wb") as results,
        open(out_dir / "errors.jsonl", "wb") as errors,
    ):
        t0 = time.perf_counter()
        stats, pipeline = asyncio.run(replay([str(path)], settings, results, errors))
        seconds = time.perf_counter() - t0
    state = pipeline.state
    return stats.bars / seconds, stats.bars, state.nbytes / max(state.n_bars, 1), state.n_bars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", type=int, default=400, help="replay market size")
    parser.add_argument("--start-year", type=int, default=2004)
    parser.add_argument("--end-year", type=int, default=2023)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--baseline-symbols", type=int, default=20)
    parser.add_argument(
        "--scale-sizes",
        type=lambda text: parse_sizes(text) if text.strip() else [],
        default=list(DEFAULT_SIZES),
        help=f"(d) market-scale sizes, comma-separated, of {', '.join(SIZES)}; '' skips (d)",
    )
    parser.add_argument(
        "--scale-markdown", type=Path, default=MARKDOWN, help="(d) as Markdown, for the README"
    )
    parser.add_argument(
        "--scaling-size",
        default="1600x25",
        help="(e) partitioned replay scaling on this size of bench.scale; '' skips (e)",
    )
    args = parser.parse_args(argv)

    print(
        "(a) engine: original demo workload "
        "(200 symbols, daily bars 2018-2023, years 2020-2023, W=60)"
    )
    e = bench_engine(args.repeats, args.baseline_symbols)
    print(f"    vectorised engine, one core : {e['engine']:>12,.0f} symbols/s")
    print(f"    per-row baseline (same spec): {e['baseline']:>12,.1f} symbols/s")
    print(f"    speed-up vs baseline        : {e['engine'] / e['baseline']:>12,.0f}x")
    print(
        f"    vs original 32 symbols/s    : {e['engine'] / ORIGINAL_SYMBOLS_PER_S:>12,.0f}x"
        f"   goal >= {ENGINE_GOAL:,.0f}/s: {'MET' if e['engine'] >= ENGINE_GOAL else 'MISSED'}"
    )

    with tempfile.TemporaryDirectory(prefix="sfa-bench-") as tmp:
        out = Path(tmp)
        market = out / "market.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "generate",
                "--symbols",
                str(args.symbols),
                "--start-year",
                str(args.start_year),
                "--end-year",
                str(args.end_year),
                "--seed",
                "11",
                "--output",
                str(market),
            ],
            check=True,
        )
        with open(market, "rb") as fh:
            lines = sum(1 for _ in fh)
        print(
            f"\n(b) replay: {lines:,} bars ({market.stat().st_size / 1e6:.0f} MB JSONL), "
            f"{os.cpu_count()} cores"
        )
        gc.collect()
        bare = bare_decode(market).rate
        rate, _bars, bytes_per_bar, held = _replay(market, out)
        print(f"    bare orjson.loads per line  : {bare:>12,.0f} lines/s")
        print(f"    sfa replay (start-up incl.) : {rate:>12,.0f} bars/s")
        ratio = rate / bare
        print(
            f"    ratio                       : {ratio:>12.2f}"
            f"   goal >= {REPLAY_GOAL:.2f}: {'MET' if ratio >= REPLAY_GOAL else 'MISSED'}"
        )

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("\n(c) memory")
    print(f"    peak RSS of this process    : {peak / 2**20:>12,.0f} MiB")
    print(f"    held bars after replay      : {held:>12,}")
    print(
        f"    state bytes per held bar    : {bytes_per_bar:>12.1f}"
        f"   goal <= {BYTES_PER_BAR_GOAL:.0f}: "
        f"{'MET' if bytes_per_bar <= BYTES_PER_BAR_GOAL else 'MISSED'}"
    )
    rows = scale_table(args.scale_sizes, args.scale_markdown) if args.scale_sizes else []
    if args.scaling_size:
        from bench.partitioned import main as scaling

        scaling(["--size", args.scaling_size])
    print(f"\nmeasured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `make bench`")
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
