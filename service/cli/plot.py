"""`sfa plot SYMBOL --results FILE | --bars FILE... [--output PNG|SVG]`: one symbol's curves.

For an analyst the pattern figures only mean something next to the paths they summarise,
so the plot shows every qualifying year's normalised path, their mean curve (faint where
fewer than half of the years reach a day: such a mean is never the peak or trough), the
festival day, the peak, the trough and today (`position.window_day`), with the figures in
the legend; the axis counts in the curve's unit (trading or calendar days).

`--results` reads the last result for the symbol from `sfa replay`/`sfa run` output; a
result holds the mean curve but not the yearly paths, so only `--bars` draws those: it
applies the symbol's bars to a `StateStore` and runs the engine exactly as replay does
(same decoder, same corrections, same parameters from the environment), so its mean curve
is the one replay would publish. Matplotlib is used through `Figure` directly (the Agg and
SVG canvases), never pyplot: no global figure state, no display needed.

Exit 0 with the image written; 1 (one line) when the symbol is absent or a file unreadable;
2 for an output name that is neither .png nor .svg.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.engine.types import EngineParams, SymbolWindows
from service.errors import InputError, SfaError
from service.settings import Settings

__all__ = [
    "YearPath",
    "add_arguments",
    "from_bars",
    "from_results",
    "render",
    "run",
    "year_paths",
]

_FORMATS = {".png": "png", ".svg": "svg"}


@dataclass(frozen=True)
class YearPath:
    """One qualifying year's normalised path r[y, k] (SPEC 3), ascending k."""

    year: int
    k: np.ndarray
    r: np.ndarray


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbol", metavar="SYMBOL", nargs="?", help="the symbol to draw")
    parser.add_argument(
        "--strongest",
        metavar="RESULTS",
        help="instead of SYMBOL: the symbol with the strongest pattern in a results JSONL file",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--results", metavar="FILE", help="results JSONL (sfa replay output)")
    source.add_argument(
        "--bars", metavar="FILE", nargs="+", help="bar files: analysed here, yearly paths drawn"
    )
    parser.add_argument(
        "--output", "-o", default=None, help="PNG or SVG to write (default: SYMBOL.png)"
    )


def _symbol_after_bars(args: argparse.Namespace) -> None:
    """`sfa plot --bars a.jsonl SYMBOL`: `--bars` takes one file or more, so argparse
    hands it the symbol too. A last "file" that does not exist, given without SYMBOL,
    is the symbol."""
    bars = args.bars or []
    if args.symbol is None and len(bars) > 1 and not Path(bars[-1]).exists():
        args.symbol = bars.pop()


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    _symbol_after_bars(args)
    if (args.symbol is None) == (args.strongest is None):
        print("sfa: give either SYMBOL or --strongest RESULTS", file=sys.stderr)
        return 2
    if args.strongest is not None:
        args.symbol = strongest(args.strongest)
        if not args.bars and not args.results:
            args.results = args.strongest  # the file that named it also holds its result
    if not args.bars and not args.results:
        print("sfa: give --results FILE or --bars FILE... to draw from", file=sys.stderr)
        return 2
    output = Path(args.output or f"{args.symbol}.png")
    fmt = _FORMATS.get(output.suffix.lower())
    if fmt is None:
        print(f"sfa: --output must end in .png or .svg, got {output.name!r}", file=sys.stderr)
        return 2
    paths: list[YearPath] = []
    if args.results:
        result = from_results(args.results, args.symbol)
    else:
        if settings is None:
            from service.settings import load_settings

            settings = load_settings()
        result, paths = from_bars(args.bars, args.symbol, settings)
    render(result, paths, output, fmt)
    print(f"plot: {args.symbol} -> {output}", file=sys.stderr)
    return 0


def _last_results(path: str) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    try:
        with open(path, "rb") as fh:
            for line in fh:
                obj = orjson.loads(line)
                if isinstance(obj, dict) and isinstance(obj.get("symbol"), str):
                    last[obj["symbol"]] = obj
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path} is not results JSONL: {exc}") from None
    return last


def strongest(path: str) -> str:
    """The symbol whose last result has the highest pattern strength (ties: first in name order)."""
    ranked = sorted(
        (-float(r["pattern"]["pattern_strength"]), symbol)
        for symbol, r in _last_results(path).items()
        if r.get("status") == "ok" and isinstance(r.get("pattern"), dict)
    )
    if not ranked:
        raise SfaError(f"no symbol with a pattern in {path}")
    return ranked[0][1]


def from_results(path: str, symbol: str) -> dict[str, Any]:
    """The last result for `symbol` in a results JSONL file (the state after all input)."""
    needle = orjson.dumps(symbol)
    last: dict[str, Any] | None = None
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if needle not in line:  # skip parsing the other symbols' lines
                    continue
                obj = orjson.loads(line)
                if isinstance(obj, dict) and obj.get("symbol") == symbol:
                    last = obj
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path} is not results JSONL: {exc}") from None
    if last is None:
        raise SfaError(f"symbol {symbol!r} not found in {path}")
    if "status" not in last or "window_days" not in last:
        raise InputError(
            f"{path} holds bars, not results (sfa replay's --output); "
            f"to draw from bars: sfa plot {symbol} --bars {path}"
        )
    return last


def from_bars(
    files: list[str], symbol: str, settings: Settings
) -> tuple[dict[str, Any], list[YearPath]]:
    """Replay's analysis of one symbol from bar files, plus its yearly paths."""
    from service.decode.batch import decode_batch
    from service.encode import encode_pattern_part, encode_result
    from service.engine import analyze_patterns, position_and_signal
    from service.files.readers import read_batches
    from service.state.store import StateStore

    params = settings.engine.engine_params()
    store = StateStore(params)
    needle = orjson.dumps(symbol)[1:-1]
    for batch in read_batches(files):
        values = [v for v in batch.messages() if needle in v]
        if not values:
            continue
        decoded = decode_batch(values, settings.batching.max_message_bytes)
        keep = np.asarray(decoded.symbols, dtype=object) == symbol
        if keep.any():
            store.apply([symbol] * int(keep.sum()), decoded.days[keep], decoded.closes[keep])
    if symbol not in store:
        raise SfaError(f"symbol {symbol!r} has no valid bar in {', '.join(files)}")
    windows = store.windows(symbol)
    [pattern] = analyze_patterns([windows], params)
    position, signal = position_and_signal(windows.latest, pattern, params, windows.days)
    encoded = encode_result(
        symbol=symbol,
        as_of_day=windows.latest,
        status=pattern.status,
        window_days=params.window_days,
        alignment=params.alignment,
        pattern_part=encode_pattern_part(pattern),
        position=position,
        signal=signal,
        bars_in_state=store.bars(symbol),
        input_ref=None,
    )
    return orjson.loads(encoded), year_paths(windows, params)


def year_paths(windows: SymbolWindows, params: EngineParams) -> list[YearPath]:
    """r[y, k] of every qualifying year (SPEC 3), using the engine's own window groups."""
    from service.engine.groups import find_groups, flatten
    from service.engine.windows import sf_window_days

    batch = flatten([windows])
    groups = find_groups(batch, params)
    sf = sf_window_days()
    paths = []
    for year_index, start, pivot, end in zip(
        groups.year_index.tolist(),
        groups.start.tolist(),
        groups.pivot.tolist(),
        groups.end.tolist(),
        strict=True,
    ):
        closes = batch.closes[start:end]
        if params.alignment == "calendar":
            k = batch.days[start:end].astype(np.int64) - int(sf[year_index])
        else:
            k = np.concatenate([np.arange(start - pivot, 0), np.arange(1, end - pivot + 1)])
        r = 100.0 * (closes / batch.closes[pivot - 1] - 1.0)
        paths.append(YearPath(1901 + int(year_index), k, r))
    return paths


def _figures(result: dict[str, Any]) -> list[str]:
    """The pattern figures and the signal as legend lines."""
    p = result.get("pattern")
    if not p:
        return [f"status: {result['status']}"]
    ratio = p["volatility_ratio"]
    lines = [
        f"strength {p['pattern_strength']:.2f}, confidence {p['confidence_level']:.2f}",
        f"consistency {p['consistency_score']:.2f}",
        f"avg return before {p['average_return_before']:+.2f}%, "
        f"after {p['average_return_after']:+.2f}%",
        f"volatility before {p['volatility_before']:.2f}, after {p['volatility_after']:.2f}"
        f" (ratio {'inf' if ratio is None else f'{ratio:.2f}'})",
    ]
    signal = result.get("signal")
    if signal:
        lines.append(
            f"signal {signal['signal']} ({signal['action']}, strength {signal['strength']:.2f})"
        )
    return lines


def render(result: dict[str, Any], paths: list[YearPath], output: Path, fmt: str) -> None:
    """Draw and write the image; `paths` may be empty (results only)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11, 6.2), layout="constrained")
    ax = fig.add_subplot()
    colours = _year_colours(len(paths))
    if paths:
        for path, colour in zip(paths, colours, strict=True):
            ax.plot(path.k, path.r, color=colour, linewidth=0.8, alpha=0.55)
    curve = np.asarray(result.get("curve") or [], dtype=np.float64).reshape(-1, 3)
    handles: list[Any] = []
    if paths:
        years = f"{paths[0].year}-{paths[-1].year}"
        label = f"yearly paths: {len(paths)} years {years} (dark = early)"
        handles.append(Line2D([], [], color=colours[len(colours) // 2], lw=0.8, label=label))
    n_years = len(result.get("years_analyzed") or []) or int(curve[:, 2].max(initial=0))
    half = max(2, -(-n_years // 2))  # SPEC 4: days at least half of the years share
    if curve.size:
        # A mean of few years is noise (the ends of a trading-day window): drawn faint,
        # and never the peak or trough.
        ax.plot(curve[:, 0], curve[:, 1], color="black", lw=1.4, alpha=0.3)
        shared = np.where(curve[:, 2] >= half, curve[:, 1], np.nan)
        (mean,) = ax.plot(
            curve[:, 0],
            shared,
            color="black",
            lw=2.2,
            label=f"mean curve (faint: fewer than {half} of {n_years} years)",
        )
        handles.append(mean)
    ax.axvline(0, color="tab:red", ls="--", lw=1.2)
    handles.append(Line2D([], [], color="tab:red", ls="--", label="Spring Festival"))
    pattern = result.get("pattern")
    if pattern and curve.size:
        at = dict(zip(curve[:, 0].astype(int).tolist(), curve[:, 1].tolist(), strict=True))
        for day, marker, colour, name in (
            (pattern["peak_day"], "^", "tab:green", "peak"),
            (pattern["trough_day"], "v", "tab:orange", "trough"),
        ):
            handles.append(
                ax.scatter(
                    [day],
                    [at[day]],
                    marker=marker,
                    s=110,
                    color=colour,
                    zorder=5,
                    label=f"{name} day {day:+d} ({at[day]:+.2f}%)",
                )
            )
    pos = result.get("position") or {}
    today = pos.get("window_day")
    if today is not None:
        handles.append(
            ax.axvline(
                today,
                color="tab:purple",
                ls=":",
                lw=1.6,
                label=f"today ({result.get('as_of')}): day {today:+d}",
            )
        )
    else:
        handles.append(Line2D([], [], ls="none", label="today: outside every window"))
    handles.extend(Line2D([], [], ls="none", label=line) for line in _figures(result))
    ax.legend(handles=handles, loc="upper left", fontsize=8.5, framealpha=0.9)
    ax.axhline(0, color="grey", lw=0.6)
    w = result.get("window_days")
    if result.get("alignment", "trading") == "trading":
        ax.set_xlabel(
            f"trading days from the Spring Festival (the window, ±{w} calendar days, holds "
            "about 5 trading days in 7)"
        )
    else:
        ax.set_xlabel(f"calendar days from the Spring Festival (window ±{w})")
    ax.set_ylabel("% from the last close before the festival")
    ax.set_title(
        f"{result['symbol']}: Spring Festival alignment, as of {result.get('as_of')}; "
        f"festival {pos.get('spring_festival_date')} ({pos.get('phase')})",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    try:
        fig.savefig(output, format=fmt, dpi=110)
    except OSError as exc:
        raise SfaError(f"cannot write {output}: {exc.strerror}") from None


def _year_colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, n)]
