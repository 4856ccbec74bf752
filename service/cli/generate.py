"""`sfa generate`: write a deterministic synthetic market as JSONL (`service.market`).

Streams: memory stays flat (a day of bars at a time) whatever the size. An output
that cannot be written is one line, exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from service.calendar import FIRST_YEAR
from service.files.output import atomic_output
from service.market import LAST_YEAR, write_jsonl

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sfa generate` (the dispatcher in `service.__main__` calls this)."""
    parser.add_argument("--symbols", type=int, required=True, help="number of symbols")
    parser.add_argument("--start-year", type=int, required=True, help="first calendar year")
    parser.add_argument("--end-year", type=int, required=True, help="last calendar year")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--output", default="-", help="JSONL file to write, '-' for stdout (default)"
    )


def run(args: argparse.Namespace) -> int:
    """Write the market; a progress bar appears only when stderr is a terminal."""
    if args.symbols < 1:
        print("sfa: --symbols must be >= 1", file=sys.stderr)
        return 2
    if not FIRST_YEAR <= args.start_year <= args.end_year <= LAST_YEAR:
        print(
            f"sfa: need {FIRST_YEAR} <= --start-year <= --end-year <= {LAST_YEAR}",
            file=sys.stderr,
        )
        return 2
    progress = sys.stderr.isatty()
    if args.output == "-":
        try:
            write_jsonl(
                sys.stdout.buffer,
                args.symbols,
                args.start_year,
                args.end_year,
                args.seed,
                progress=progress,
            )
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `sfa generate ... | head`: the reader has enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        return 0
    # Written beside the target and renamed at the end: an interrupted or failed run
    # (disk full) never leaves half a market, nor destroys the previous file.
    with atomic_output(args.output) as fh:
        write_jsonl(fh, args.symbols, args.start_year, args.end_year, args.seed, progress=progress)
    return 0
