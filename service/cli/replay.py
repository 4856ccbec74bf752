"""`sfa replay FILE...`: the files through the pipeline (`service.files.replay`), a summary.

Exit 0 once the input is processed (bad records included), 1 for an unreadable file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import IO

from service.cli.report import render_summary, strongest_patterns
from service.errors import SfaError
from service.files.replay import replay
from service.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSONL, CSV or Parquet bars")
    parser.add_argument(
        "--output", "-o", default="-", help="results as JSONL (default: stdout; '-' for stdout)"
    )
    parser.add_argument(
        "--errors", default=None, help="dead letters as JSONL (default: counted, not kept)"
    )
    parser.add_argument(
        "--summary", action="store_true", help="print a readable report (strongest patterns)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    with contextlib.ExitStack() as stack:
        results: IO[bytes] | None
        if args.output == "-":
            results = sys.stdout.buffer
        else:
            results = stack.enter_context(_open_out(args.output))
        errors = stack.enter_context(_open_out(args.errors)) if args.errors else None
        progress = sys.stderr.isatty() and not args.no_progress
        stats, pipeline = asyncio.run(replay(args.files, settings, results, errors, progress))
    rate = stats.bars / stats.seconds if stats.seconds else 0.0
    ok = stats.statuses.get("ok", 0)
    print(
        f"replay: {stats.messages} messages, {stats.bars} bars, {stats.results} results "
        f"({ok} ok), {sum(stats.dead_letters.values())} dead letters, "
        f"{len(pipeline.state)} symbols, {stats.seconds:.1f}s ({rate:,.0f} bars/s), "
        f"compute={stats.compute_mode}",
        file=sys.stderr,
    )
    if stats.fallback_reason:
        print(f"replay: WARNING Dask fallback: {stats.fallback_reason}", file=sys.stderr)
    if args.summary:
        print(
            render_summary(stats, pipeline.state, strongest_patterns(pipeline.state, limit=15)),
            file=sys.stderr if args.output == "-" else sys.stdout,
        )
    return 0


def _open_out(path: str) -> IO[bytes]:
    try:
        return open(path, "wb")
    except OSError as exc:
        raise SfaError(f"cannot write {path}: {exc.strerror}") from None
