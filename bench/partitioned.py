"""Partitioned replay scaling (issue 23): `make bench` (e), or `python -m bench.partitioned`.

On one file (1,600 symbols x 25 years, one bar a line, by default), measured in one run:

* the bare single-core `orjson.loads` loop over the file (before, between and after the
  replays; each ratio uses the faster baseline, so noise cannot flatter the replay);
* the single-process replay, `--emit final`, in a fresh process (its peak RSS with its
  decode helper's: what one process holds for the whole market);
* the partitioned replay, `--emit final`, for every worker count from 1 to the cores
  (at most `--max-workers`), each in a fresh process: wall time with start-up, CPU of
  the driver and of the workers over the run (the driver's own CPU, all its threads
  including the LocalCluster's scheduler, against the workers' reported by each worker),
  each worker's peak RSS;
* the scaling model those costs give, and what it predicts for 8, 32 and 128 workers
  (docs/performance.md explains it).

Results and dead letters go to /dev/null, as in `bench.scale`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.scale import REPO, SIZES, bare_decode, generate, run_one
from service.partitioned.plan import default_partitions, pick_block_bytes

__all__ = ["Model", "driver_cost_per_task", "main", "model_from"]

DRIVER_SHARE_GOAL = 0.10
TWO_VS_ONE_GOAL = 1.7
VS_BARE_GOAL = 1.0
PREDICT = (8, 32, 128)


def _one(path: str, workers: int) -> dict[str, Any]:
    """In a fresh process: one partitioned replay with `workers` local worker processes."""
    t0 = time.perf_counter()
    from service.compute.partitioned import run_partitioned
    from service.settings import load_settings

    t_import = time.perf_counter() - t0
    settings = load_settings()
    with open(os.devnull, "wb") as results, open(os.devnull, "wb") as errors:
        run = run_partitioned([path], settings, results, errors, emit="final", workers=workers)
    seconds = time.perf_counter() - t0
    owner_seconds = [o.seconds for o in run.owners]
    return {
        "workers": run.workers,
        "partitions": run.partitions,
        "blocks": run.blocks,
        "bars": run.totals.bars,
        "seconds": seconds,
        "driver_cpu": run.driver_cpu,
        "worker_cpu": run.worker_cpu,
        "worker_peak_rss": run.worker_peak_rss,
        "owner_cpu": sum(owner_seconds),
        "state_bytes": sum(o.state_bytes for o in run.owners),
        "timings": run.timings,
        "import_s": t_import,
    }


def _run_one(path: Path, workers: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.partitioned", "--one", str(path), "--workers", str(workers)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        check=True,
    )
    got: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return got


@dataclass(frozen=True, slots=True)
class Model:
    """A partitioned replay of `bars` bars over W workers, from measured costs:

    * workers: `worker_s_per_m` CPU seconds per million bars (read, decode, split, apply,
      analyse, encode, Dask's own work on the workers), spread over W;
    * driver: `driver_s_per_task` CPU seconds per task (submitting it, the in-process
      scheduler's bookkeeping of a LocalCluster, its result), serial: the graph has
      B blocks x (3 + P) tasks plus P owners (a getitem per block and owner partition);
    * `startup_s`: interpreter, imports, cluster start and stop, the last owners' tail.
    """

    worker_s_per_m: float
    driver_s_per_task: float
    startup_s: float

    @staticmethod
    def tasks(file_bytes: int, workers: int) -> int:
        blocks = -(-file_bytes // pick_block_bytes(file_bytes, workers))
        p = default_partitions(workers)
        return blocks * (3 + p) + p

    def seconds(self, bars: int, file_bytes: int, workers: int) -> float:
        work = self.worker_s_per_m * bars / 1e6 / workers
        driver = self.driver_s_per_task * self.tasks(file_bytes, workers)
        return self.startup_s + max(work, driver)

    def speedup(self, bars: int, file_bytes: int, workers: int) -> float:
        return self.seconds(bars, file_bytes, 1) / self.seconds(bars, file_bytes, workers)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _make(i: int) -> dict[Any, int]:
    return {"meta": i, "status": i, 0: i, 1: i}


def driver_cost_per_task(n_blocks: int = 500) -> float:
    """Driver CPU per task of the partitioned graph's shape (a block, then a getitem per
    part), on a LocalCluster of two workers, beyond what the idle cluster costs."""
    import logging
    import operator

    from distributed import Client, LocalCluster, wait

    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # teardown chatter
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # the workers' own teardown chatter
        ) as cluster,
        Client(cluster) as client,
    ):
        c0, t0 = _cpu(), time.perf_counter()
        time.sleep(3)
        idle = (_cpu() - c0) / (time.perf_counter() - t0)
        c0, t0 = _cpu(), time.perf_counter()
        blocks = [client.submit(_make, i, pure=False) for i in range(n_blocks)]
        parts = [
            client.submit(operator.getitem, b, k, pure=False)
            for b in blocks
            for k in ("meta", "status", 0, 1)
        ]
        wait(parts)
        used = _cpu() - c0 - idle * (time.perf_counter() - t0)
    return max(used, 0.0) / (len(blocks) + len(parts))


def model_from(run: dict[str, Any], per_task: float) -> Model:
    """Start-up as measured: imports, the cluster coming up, and after the merge its stop."""
    t = run["timings"]
    startup = run["import_s"] + t["cluster"] + max(0.0, run["seconds"] - t["merged"])
    return Model(run["worker_cpu"] / (run["bars"] / 1e6), per_task, startup)


def _verdict(ok: bool, goal: str) -> str:
    return f"{'MET' if ok else 'MISSED'} ({goal})"


def scaling(path: Path, max_workers: int) -> int:
    counts = list(range(1, max(1, min(max_workers, os.cpu_count() or 1)) + 1))
    lines = bare_decode(path)
    print(f"    file: {path} ({lines.lines:,} bars), {os.cpu_count()} cores", flush=True)
    single = run_one(path, "final")
    bare = [lines.rate, bare_decode(path).rate]
    runs = []
    for w in counts:
        runs.append(_run_one(path, w))
        bare.append(bare_decode(path).rate)
    best_bare = max(bare)
    print(f"    bare orjson.loads loop, best of {len(bare)}: {best_bare:,.0f} lines/s")
    if single.rate is not None:
        print(
            f"    single-process replay --emit final: {single.rate:,.0f} bars/s "
            f"({single.rate / best_bare:.2f} of bare), peak RSS {single.rss / 2**20:,.0f} MiB"
        )
    head = (
        f"    {'workers':>7} {'parts':>5} {'blocks':>6} {'seconds':>8} {'bars/s':>10} "
        f"{'vs 1':>5} {'vs bare':>7} {'driver CPU':>10} {'worker CPU s':>12} "
        "peak RSS per worker MiB"
    )
    print(head)
    base = runs[0]["bars"] / runs[0]["seconds"]
    for r in runs:
        rate = r["bars"] / r["seconds"]
        share = r["driver_cpu"] / max(r["driver_cpu"] + r["worker_cpu"], 1e-9)
        rss = ", ".join(f"{x / 2**20:,.0f}" for x in r["worker_peak_rss"])
        print(
            f"    {r['workers']:>7} {r['partitions']:>5} {r['blocks']:>6} {r['seconds']:>8.1f} "
            f"{rate:>10,.0f} {rate / base:>5.2f} {rate / best_bare:>7.2f} {share:>10.1%} "
            f"{r['worker_cpu']:>12.1f} {rss}"
        )
    top = runs[-1]
    state_mb = top["state_bytes"] / 1e6
    print(
        f"    state: single process {single.state_bytes / 1e6:,.0f} MB; partitioned "
        f"{state_mb:,.0f} MB in all, {state_mb / top['partitions']:,.0f} MB per partition; "
        f"peak RSS single process {single.rss / 2**20:,.0f} MiB"
    )
    share = top["driver_cpu"] / max(top["driver_cpu"] + top["worker_cpu"], 1e-9)
    print(f"    driver CPU share at {top['workers']} workers: {_verdict(share <= 0.10, '<= 10%')}")
    if len(runs) >= 2:
        two = (runs[1]["bars"] / runs[1]["seconds"]) / base
        print(f"    2 workers vs 1: {two:.2f}  {_verdict(two >= TWO_VS_ONE_GOAL, '>= 1.7')}")
        vs_bare = (runs[1]["bars"] / runs[1]["seconds"]) / best_bare
        print(
            f"    2 workers vs bare: {vs_bare:.2f}  {_verdict(vs_bare >= VS_BARE_GOAL, '>= 1.0')}"
        )
    per_task = driver_cost_per_task()
    model = model_from(top, per_task)
    bars, size = top["bars"], path.stat().st_size
    owners = top["owner_cpu"] / (bars / 1e6)
    print(
        f"    model: workers {model.worker_s_per_m:.2f} CPU s per million bars (owners "
        f"{owners:.2f} of it), driver {per_task * 1e3:.2f} ms per task, start-up "
        f"{model.startup_s:.1f} s; pieces move 16 bytes a bar"
    )
    print(f"    stages of the top run (s from start): {top['timings']}")
    predicted = ", ".join(
        f"{n}: {model.tasks(size, n):,} tasks, x{model.speedup(bars, size, n):.1f} "
        f"({model.seconds(bars, size, n):.1f} s)"
        for n in PREDICT
    )
    print(f"    predicted for this file (workers: graph, speed-up over 1 worker): {predicted}")
    big = ", ".join(
        f"{n}: x{model.speedup(bars * 10, size * 10, n):.1f} "
        f"({model.seconds(bars * 10, size * 10, n):.0f} s)"
        for n in PREDICT
    )
    print(f"    predicted for a file 10x larger: {big}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--file", type=Path, help="an existing JSONL market (default: generate)")
    parser.add_argument("--size", default="1600x25", choices=sorted(SIZES))
    parser.add_argument("--max-workers", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(orjson.dumps(_one(args.one, args.workers)).decode(), flush=True)
        return 0
    print("\n(e) partitioned replay scaling (--emit final), each replay in a fresh process")
    if args.file is not None:
        return scaling(args.file, args.max_workers)
    with tempfile.TemporaryDirectory(prefix="sfa-part-") as tmp:
        market = Path(tmp) / "market.jsonl"
        generate(SIZES[args.size], market)
        return scaling(market, args.max_workers)


if __name__ == "__main__":
    sys.exit(main())
