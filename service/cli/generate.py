"""`sfa generate`: write a deterministic synthetic market (`service.market`).

The output's name says its format, as it does for the readers: `.csv` is CSV with a
header, anything else JSONL; `.gz` compresses either. Names of formats the readers take
but this command does not write (`.json`, `.tsv`, `.parquet`) are refused (exit 2)
rather than filled with JSONL that would then be read as something else.

Streams: memory stays flat (a day of bars at a time) whatever the size. An output
that cannot be written is one line, exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import sys
from typing import IO

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
        "--output",
        default="-",
        help="file to write: .jsonl or .csv, optionally .gz; '-' for JSONL on stdout (default)",
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
    kind = _format(args.output)
    if kind is None:
        print(
            f"sfa: --output {args.output}: generate writes JSONL (.jsonl) or CSV (.csv), "
            "either optionally .gz",
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
    with atomic_output(args.output) as fh, contextlib.ExitStack() as stack:
        out: IO[bytes] = fh
        if args.output.lower().endswith(".gz"):
            zipped = gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=6, mtime=0)
            out = stack.enter_context(zipped)  # type: ignore[arg-type]
        write_jsonl(
            out,
            args.symbols,
            args.start_year,
            args.end_year,
            args.seed,
            progress=progress,
            csv=kind == "csv",
        )
    return 0


def _format(output: str) -> str | None:
    """The format the name asks for: `.csv` CSV; `.json`, `.tsv`, `.parquet` (formats the
    readers take but this command does not write) None; anything else JSONL. A `.gz`
    suffix compresses either (mtime 0: same arguments, same bytes)."""
    name = output.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".json", ".tsv", ".parquet")):
        return None
    return "jsonl"
