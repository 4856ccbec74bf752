"""`sfa recommend`: sizing advice for a batch analysis (`service.compat.recommend`)."""

from __future__ import annotations

import argparse
import json

from service.compat.recommend import get_processing_recommendations

__all__ = ["add_arguments", "run"]


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
