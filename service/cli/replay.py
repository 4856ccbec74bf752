"""`sfa replay FILE...`: the files through the pipeline (`service.files.replay`), a summary.

Two modes with the same `--emit final` output: the single-process replay (the pipeline
of the service, one driver process), and the partitioned replay (`service.partitioned`,
run by the Dask workers: `service.compute.partitioned`), chosen for inputs of at least
`PARTITIONED_MIN_BYTES` or by `--partitions`.

Exit 0 once the input is processed (bad records included); 1 when nothing could run
(an input missing at start, an output that cannot be written or that names an
input); 2 when a Dask worker cannot read an input (partitioned, nothing ran); 3 when a
file broke part way or gave no valid bar (each named on one line with its line): the
results of everything read are still written, unless nothing valid was read at all,
when no output is replaced; 3 also when the Dask scheduler is lost mid-way
(partitioned): then nothing is written. Outputs appear only when the run ends
(`service.files.output`), so a failed run leaves existing files untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from service.cli.interrupt import exit_on_interrupt
from service.cli.report import EXIT_INCOMPLETE, render_summary, strongest_patterns
from service.errors import ConfigError, SfaError
from service.files.output import AtomicFile, refuse_overlaps
from service.files.replay import replay
from service.partitioned.plan import PARTITIONED_MIN_BYTES
from service.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSONL, CSV or Parquet bars")
    parser.add_argument(
        "--output",
        "-o",
        default="-",
        help="results as JSONL (default: stdout; '-' for stdout); partitioned replay: DIR/ "
        "(a trailing slash) leaves one part-NNNNN.jsonl per owner partition in DIR",
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
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="P",
        help="partitioned replay: the Dask workers read, decode, apply, analyse and encode, "
        "symbols split into P owner partitions (default: 2 per worker, at most 32, for inputs of "
        f"{PARTITIONED_MIN_BYTES // 1_000_000} MB or more; smaller inputs replay in one "
        "process); 1 forces the single-process replay. Local: DASK_N_WORKERS worker "
        "processes; remote: DASK_SCHEDULER_ADDRESS, whose workers must read the FILEs. "
        "With --emit batch a batch is a block of the input",
    )
    parser.add_argument(
        "--block-bytes",
        type=int,
        default=None,
        metavar="N",
        help="partitioned replay: JSONL cut into blocks of about N bytes "
        "(default: 4 per worker, 4-64 MiB)",
    )


def _input_bytes(paths: list[str]) -> int:
    total = 0
    for path in paths:
        try:
            total += os.path.getsize(path)
        except OSError:
            return 0  # the single-process replay says what is wrong with it
    return total


def _partitioned(args: argparse.Namespace, settings: Settings) -> bool:
    if args.partitions is not None:
        if args.partitions < 1:
            raise ConfigError("--partitions must be >= 1")
        if args.partitions > 1 and args.summary:
            raise ConfigError("--summary needs the single-process replay (--partitions 1)")
        return args.partitions > 1
    if args.summary or not settings.dask.dask_enable_distributed:
        return False
    return _input_bytes(args.files) >= PARTITIONED_MIN_BYTES


def run(args: argparse.Namespace, settings: Settings) -> int:
    if _partitioned(args, settings):
        return _run_partitioned(args, settings)
    if args.output.endswith("/"):
        raise ConfigError(f"--output {args.output}: a directory of parts needs --partitions > 1")
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
        f"compute={stats.compute_mode}, mode=single-process",
        file=sys.stderr,
    )
    if stats.fallback_reason:
        print(f"replay: WARNING Dask fallback: {stats.fallback_reason}", file=sys.stderr)
    if args.summary:
        print(
            render_summary(stats, pipeline.state, strongest_patterns(pipeline.state, limit=15)),
            file=sys.stderr if args.output == "-" else sys.stdout,
        )
    return _exit_code(stats.bars, len(stats.failures), len(args.files), outputs)


def _progress(enabled: bool) -> tuple[Callable[[int, int, int, int], None] | None, Any]:
    """A tqdm bar over the tasks, bars/s and partitions done beside it (on a terminal)."""
    if not enabled:
        return None, None
    from tqdm import tqdm

    holder: dict[str, Any] = {}
    t0 = time.perf_counter()

    def update(bars: int, blocks: int, owners: int, total: int) -> None:
        bar = holder.get("bar")
        if bar is None:
            bar = holder["bar"] = tqdm(total=total, unit="task", desc="replay", file=sys.stderr)
        bar.n = blocks + owners
        rate = bars / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{rate:,.0f} bars/s, partitions done {owners}", refresh=True)

    return update, holder


def _run_partitioned(args: argparse.Namespace, settings: Settings) -> int:
    from service.compute.partitioned import ClusterLost, InputsUnreadable, run_partitioned
    from service.partitioned.merge import PartDirectory

    refuse_overlaps({"--output": args.output, "--errors": args.errors or ""}, args.files)
    outputs: list[AtomicFile | PartDirectory] = []

    def open_out(path: str) -> IO[bytes]:
        out = AtomicFile(path)
        outputs.append(out)
        return out.file

    update, holder = _progress(sys.stderr.isatty() and not args.no_progress)
    try:
        results: IO[bytes] | PartDirectory
        if args.output == "-":
            results = sys.stdout.buffer
        elif args.output.endswith("/"):
            results = PartDirectory(args.output)
            outputs.append(results)
        else:
            results = open_out(args.output)
        errors = open_out(args.errors) if args.errors else None
        with exit_on_interrupt(outputs):
            done = run_partitioned(
                args.files,
                settings,
                results,
                errors,
                emit=args.emit,
                partitions=args.partitions,
                block_bytes=args.block_bytes,
                on_progress=update,
            )
            if done.totals.bars:  # a run that read nothing valid replaces nothing
                for out in outputs:
                    out.commit()
    except InputsUnreadable as exc:
        print(f"sfa: {exc}", file=sys.stderr)
        return 2
    except ClusterLost as exc:
        print(f"sfa: {exc} (nothing written)", file=sys.stderr)
        return EXIT_INCOMPLETE
    except OSError as exc:
        raise SfaError(f"cannot write the output: {exc.strerror or exc}") from None
    finally:
        for out in outputs:
            out.discard()
        if holder and holder.get("bar") is not None:
            holder["bar"].close()
    t = done.totals
    for failure in t.failures:
        print(f"sfa: {failure.message()}", file=sys.stderr)
    rate = t.bars / done.seconds if done.seconds else 0.0
    print(
        f"replay: {t.messages} messages, {t.bars} bars, {t.results} results "
        f"({t.statuses.get('ok', 0)} ok), {sum(t.dead_letters.values())} dead letters, "
        f"{t.symbols} symbols, {done.seconds:.1f}s ({rate:,.0f} bars/s), "
        f"compute={done.mode}, mode=partitioned, workers={done.workers}, "
        f"partitions={done.partitions}, blocks={done.blocks}",
        file=sys.stderr,
    )
    return _exit_code(t.bars, len(t.failures), len(args.files), outputs)


def _exit_code(bars: int, failed: int, files: int, outputs: Sequence[object]) -> int:
    """0, or 3 with one line: nothing valid read (no output replaced), or files that broke
    part way (what was read is written). Both replay modes end here."""
    if not bars:
        kept = " and ".join(str(getattr(o, "path", "")) for o in outputs)
        print(
            f"replay: INCOMPLETE: no valid bar in {files} input file(s)"
            + (f"; {kept} left as it was" if kept else ""),
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    if failed:
        print(
            f"replay: INCOMPLETE: {failed} of {files} input file(s) "
            "could not be read to the end (results of what was read are written)",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0
