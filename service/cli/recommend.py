"""`sfa recommend`: sizing advice for a batch analysis (`service.compat.recommend`).

The advice names commands and variables a user of `sfa` has, and says when the data does
not fit in this machine's memory at all, rather than advising in-process work for it.
"""

from __future__ import annotations

import argparse
import json
import sys

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
        print("sfa: --stocks and --points must be >= 0", file=sys.stderr)
        return 2
    rec = get_processing_recommendations(args.stocks, args.points)
    if args.json:
        print(json.dumps(rec, indent=2, sort_keys=True))
        return 0
    too_big = rec["estimated_memory_gb"] > rec["available_memory_gb"]
    if too_big:  # no worker count makes it fit in this machine's memory
        advice = "too big to hold in this machine's memory: stream it (see below)"
    elif rec["use_distributed"]:
        advice = "run it on a Dask cluster"
    else:
        advice = "run it in-process (a cluster would not pay)"
    print(f"{rec['total_stocks']} symbols x {rec['avg_data_points_per_stock']} bars: {advice}")
    print(f"  workers            {rec['recommended_workers']} (1 thread each)")
    print(f"  chunk size         {rec['recommended_chunk_size']} symbols per task")
    print(f"  time, sequential   {rec['estimated_sequential_seconds']:.1f} s")
    print(f"  time, recommended  {rec['estimated_parallel_seconds']:.1f} s")
    print(f"  speedup            x{rec['speedup_factor']:.2f}")
    memory = f"{rec['estimated_memory_gb']:.2f} GB of {rec['available_memory_gb']:.1f} GB free"
    print(f"  memory             {memory}")
    if rec["memory_optimization_needed"]:
        print(
            "  memory is tight: stream the bars with `sfa replay FILE... --emit final` (it "
            "holds only the festival windows), or give DASK_SCHEDULER_ADDRESS a cluster "
            "with more memory; in Python: analyze_large_dataset_streaming"
        )
    return 0
