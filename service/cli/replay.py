"""`sfa replay FILE...`: the files through the pipeline (`service.files.replay`), a summary.

Exit 0 once the input is processed (bad records included); 1 when nothing could run
(an input missing at start, an output that cannot be written or that names an
input); 3 when a file broke part way or gave no valid bar (each named on one line):
the results of everything read are still written, unless nothing valid was read at
all, when no output is replaced. Outputs appear only when the run
ends (`service.files.output`), so a failed run leaves existing files untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import IO

from service.cli.interrupt import exit_on_interrupt
from service.cli.report import EXIT_INCOMPLETE, render_summary, strongest_patterns
from service.errors import SfaError
from service.files.output import AtomicFile, refuse_overlaps
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
    parser.add_argument(
        "--emit",
        choices=("batch", "final"),
        default="batch",
        help="batch: a result for every symbol a batch touched, after each batch (as the "
        "service does); final: one result per symbol after the last batch (backfills)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    refuse_overlaps({"--output": args.output, "--errors": args.errors or ""}, args.files)
    outputs: list[AtomicFile] = []

    def open_out(path: str) -> IO[bytes]:
        out = AtomicFile(path)
        outputs.append(out)
        return out.file

    try:
        results = sys.stdout.buffer if args.output == "-" else open_out(args.output)
        errors = open_out(args.errors) if args.errors else None
        progress = sys.stderr.isatty() and not args.no_progress
        with exit_on_interrupt(outputs):
            stats, pipeline = asyncio.run(
                replay(args.files, settings, results, errors, progress, args.emit)
            )
            if stats.bars:  # a run that read nothing valid replaces nothing
                for out in outputs:
                    out.commit()
    except OSError as exc:  # a write to an output failed (disk full, say)
        raise SfaError(f"cannot write the output: {exc.strerror or exc}") from None
    finally:
        for out in outputs:
            out.discard()  # a no-op once committed
    for failure in stats.failures:
        print(f"sfa: {failure.message()}", file=sys.stderr)
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
    if not stats.bars:
        kept = " and ".join(f"{o.path}" for o in outputs)
        print(
            f"replay: INCOMPLETE: no valid bar in {len(args.files)} input file(s)"
            + (f"; {kept} left as it was" if kept else ""),
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    if stats.failures:
        print(
            f"replay: INCOMPLETE: {len(stats.failures)} of {len(args.files)} input file(s) "
            "could not be read to the end (results of what was read are written)",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0
