"""`sfa recommend`: sizing advice for a batch analysis, from measured costs.

The original system guessed (a fixed "n_workers x 0.8" speedup). Here a small cost model
uses constants measured on this codebase (2-core x86 VM, numpy 2, pandas 2; 400 symbols of
500 and 4000 business-day bars with date/close/open/high/low/volume columns):

    convert  = stocks * (CONVERT_SECONDS_PER_SYMBOL + points * CONVERT_SECONDS_PER_POINT)
    analyze  = stocks * points * ANALYZE_SECONDS_PER_POINT
    sequential = convert + analyze
    parallel   = CLUSTER_START_SECONDS + convert + analyze / workers
                 + tasks * SECONDS_PER_TASK / workers

Frames are converted to window arrays in the caller's process (only those arrays travel),
so conversion does not shrink with workers; the vectorised engine is fast enough that a
cluster pays only for very large batches. Memory is the caller's frames
(`BYTES_PER_POINT_IN_FRAMES`) plus the window arrays shipped to workers.
"""

from __future__ import annotations

import math
from typing import Any

import psutil

from service.host import usable_cores

__all__ = [
    "ANALYZE_SECONDS_PER_POINT",
    "BYTES_PER_POINT_IN_FRAMES",
    "CLUSTER_START_SECONDS",
    "CONVERT_SECONDS_PER_POINT",
    "CONVERT_SECONDS_PER_SYMBOL",
    "SECONDS_PER_TASK",
    "get_processing_recommendations",
]

#: Frame -> window arrays, per symbol (pandas call overhead dominates), measured 1.5 ms.
CONVERT_SECONDS_PER_SYMBOL = 1.5e-3
#: Frame -> window arrays, per input bar, measured.
CONVERT_SECONDS_PER_POINT = 1.5e-7
#: `analyze_patterns` per input bar (about a third of the bars lie in windows), measured.
ANALYZE_SECONDS_PER_POINT = 6.0e-8
#: Scatter + schedule + gather per chunk task on a 2-worker LocalCluster, measured 3.3 ms.
SECONDS_PER_TASK = 3.3e-3
#: LocalCluster start (0.7 s measured) plus the workers' first import of the engine.
CLUSTER_START_SECONDS = 2.0
#: A frame with date (datetime64), close, open, high, low and volume, measured.
BYTES_PER_POINT_IN_FRAMES = 48.0
#: Aim for each task to run this many times its overhead, so overhead stays <= ~5 %.
_TASK_WORK_FACTOR = 20.0
#: Chunks per worker that still balance load when symbols differ in size.
_CHUNKS_PER_WORKER = 4
_MIN_GAIN = 0.9
_WINDOW_SHARE = 121 / 365  # default W=60: 2W+1 days of a year lie in a window


def get_processing_recommendations(
    total_stocks: int, avg_data_points_per_stock: int = 2000
) -> dict[str, Any]:
    """Chunk size, workers and expected speedup/memory for a batch of this size.

    Times are given in seconds (`estimated_sequential_seconds`, ...) and, under the
    original's keys, in minutes (`estimated_sequential_time_minutes`, ...).

    Workers grow with the work (never beyond the machine's cores) and only when the
    cluster start pays for itself, so every figure is monotone in `total_stocks`.
    """
    if total_stocks < 0 or avg_data_points_per_stock < 0:
        raise ValueError("total_stocks and avg_data_points_per_stock must be >= 0")
    points = total_stocks * avg_data_points_per_stock
    convert = total_stocks * (
        CONVERT_SECONDS_PER_SYMBOL + avg_data_points_per_stock * CONVERT_SECONDS_PER_POINT
    )
    per_symbol = max(avg_data_points_per_stock, 1) * ANALYZE_SECONDS_PER_POINT
    analyze = total_stocks * per_symbol
    sequential = convert + analyze
    cores = usable_cores()

    # Smallest chunk whose work dwarfs its task overhead, unless that starves workers.
    chunk = max(1, math.ceil(_TASK_WORK_FACTOR * SECONDS_PER_TASK / per_symbol))
    best_workers, best_time = 1, sequential
    for workers in range(2, cores + 1):
        size = min(chunk, max(1, math.ceil(total_stocks / (workers * _CHUNKS_PER_WORKER))))
        tasks = math.ceil(total_stocks / size) if total_stocks else 0
        t = CLUSTER_START_SECONDS + convert + (analyze + tasks * SECONDS_PER_TASK) / workers
        if t < best_time:
            best_workers, best_time = workers, t
    if best_time > _MIN_GAIN * sequential:  # a cluster is not worth it for under ~10 %
        best_workers, best_time = 1, sequential
    use_distributed = best_workers > 1
    chunk = min(chunk, max(1, total_stocks))
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
        # The original's keys: the same measured model, in minutes.
        "estimated_sequential_time_minutes": sequential / 60.0,
        "estimated_parallel_time_minutes": best_time / 60.0,
        "speedup_factor": sequential / best_time if best_time > 0 else 1.0,
        "estimated_memory_gb": estimated_gb,
        "available_memory_gb": available_gb,
        "memory_optimization_needed": estimated_gb > 0.5 * available_gb,
    }
