"""`sfa replay`: files through the same pipeline as the Kafka service, on local Dask.

The Dask cluster starts in the background while the first batches are read and
decoded, so start-up overlaps useful work instead of adding to it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

from service.codec import errors_file_record
from service.errors import SfaError
from service.filesource import FileSource
from service.pipeline import BatchOutput, Pipeline, RawBatch
from service.report import render_summary, strongest_patterns
from service.settings import Settings
from service.sources import read_batches, total_size_hint

__all__ = ["FileSink", "ReplayStats", "add_arguments", "replay", "run"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayStats:
    messages: int = 0
    bars: int = 0
    results: int = 0
    analysed: int = 0
    batches: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    executed_by: set[str] = field(default_factory=set)
    compute_mode: str = "?"
    fallback_reason: str | None = None
    seconds: float = 0.0

    def add(self, out: BatchOutput) -> None:
        self.batches += 1
        self.messages += out.raw.n_messages
        self.bars += out.n_bars
        self.results += len(out.results)
        self.analysed += out.analysed
        self.statuses.update(out.statuses)
        self.dead_letters.update(r.reason for r in out.rejects)
        self.executed_by.update(out.executed_by)


class FileSink:
    """Results as JSONL to a file or stdout; dead letters as JSONL (SPEC 1) to a file.

    Writes run on a thread of their own: a write syscall releases the GIL, so the
    next batches are prepared meanwhile. One thread, so writes stay in call order.
    """

    def __init__(self, results: IO[bytes] | None, errors: IO[bytes] | None) -> None:
        self._results = results
        self._errors = errors
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sfa-writer")

    async def write(self, out: BatchOutput) -> None:
        data = b""
        if self._results is not None and out.results:
            data = b"\n".join([payload for _, payload in out.results]) + b"\n"
        errors = b""
        if self._errors is not None and out.rejects:
            raw = out.raw
            file = raw.file or "-"
            errors = b"".join(
                errors_file_record(r, file, raw.line_of(r.index)) + b"\n" for r in out.rejects
            )
        if data or errors:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._writer, self._write, data, errors)

    def _write(self, data: bytes, errors: bytes) -> None:
        if data and self._results is not None:
            self._results.write(data)
        if errors and self._errors is not None:
            self._errors.write(errors)

    def close(self) -> None:
        """Wait for the writes already handed over."""
        self._writer.shutdown(wait=True)


async def replay(
    paths: list[str],
    settings: Settings,
    results: IO[bytes] | None,
    errors: IO[bytes] | None,
    progress: bool = False,
) -> tuple[ReplayStats, Pipeline]:
    """Run every file through the pipeline; returns the counts and the final pipeline."""
    started = time.perf_counter()
    stats = ReplayStats()
    if settings.dask_processes is None:
        settings = settings.model_copy(update={"dask_processes": False})
    compute_task: asyncio.Future[Any] | None = None

    def compute() -> asyncio.Future[Any]:
        """Start Dask when the first chunk needs it: by then the decoder has a queue of
        batches, so the import and cluster start (which hold the loop ~1 s) overlap work."""
        nonlocal compute_task
        if compute_task is None:
            from service.cluster import open_async

            compute_task = asyncio.ensure_future(open_async(settings))
        return compute_task

    bar = _progress_bar(paths) if progress else None

    def delivered(out: BatchOutput) -> None:
        stats.add(out)
        if bar is not None:
            bar.update(out.raw.n_bytes)

    # With a core to spare, a helper process reads and decodes (service.filesource);
    # otherwise the files are read here and decoded inline.
    helper = settings.effective_decode_processes() > 0
    source = (
        FileSource(paths, settings.batch_max_messages, settings.max_message_bytes)
        if helper
        else None
    )
    sink = FileSink(results, errors)
    pipeline = Pipeline(
        settings,
        compute,
        sink,
        on_delivered=delivered,
    )
    try:
        async for raw in _raw_batches(paths, settings.batch_max_messages, source):
            await pipeline.submit(raw)
        await pipeline.drain()
    finally:
        sink.close()
        if source is not None:
            source.close()
        if bar is not None:
            bar.close()
        if compute_task is not None:
            handle = await compute_task
            stats.compute_mode = str(getattr(handle, "mode", "?"))
            stats.fallback_reason = getattr(handle, "fallback_reason", None)
            with contextlib.suppress(Exception):
                await handle.close()
        else:
            stats.compute_mode = "none needed"
    stats.seconds = time.perf_counter() - started
    return stats, pipeline


async def _raw_batches(
    paths: list[str], batch_lines: int, source: FileSource | None
) -> AsyncIterator[RawBatch]:
    if source is not None:
        async for b in source:
            yield RawBatch(
                file=b.file,
                count=b.count,
                size=b.size,
                first_line=b.first_line,
                lines=b.lines,
                decoded=b.decoded,
            )
        return
    for fb in read_batches(paths, batch_lines):
        if fb.blob is not None:
            yield RawBatch(blob=fb.blob, count=fb.count, first_line=fb.first_line, file=fb.file)
        else:
            yield RawBatch(values=fb.values, file=fb.file, lines=fb.explicit_lines)
        await asyncio.sleep(0)  # let delivered batches be written between reads


def _progress_bar(paths: list[str]) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total_size_hint(paths), unit="B", unit_scale=True, desc="replay", file=sys.stderr
    )


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
