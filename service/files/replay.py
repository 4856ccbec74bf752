"""Files through the same pipeline as the Kafka service, on a local Dask cluster.

The Dask cluster starts in the background while the first batches are read and
decoded, so start-up overlaps useful work instead of adding to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

from service.batches import Batch, BatchOutput, FileOrigin
from service.decode.pool import decode_processes
from service.files.readers import FileFailure, read_batches, total_size_hint
from service.files.sink import FileSink
from service.files.source import FileSource
from service.files.tally import FileTallies
from service.pipeline import Emit, Pipeline
from service.settings import Settings

__all__ = ["ReplayStats", "replay"]


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
    failures: list[FileFailure] = field(default_factory=list)  # files not read to the end
    files: FileTallies = field(default_factory=FileTallies)  # what each file gave

    def add(self, out: BatchOutput[FileOrigin]) -> None:
        self.files.add(out)
        self.batches += 1
        self.messages += out.batch.n_messages
        self.bars += out.n_bars
        self.results += len(out.results)
        self.analysed += out.analysed
        self.statuses.update(out.statuses)
        self.dead_letters.update(r.reason for r in out.rejects)
        self.executed_by.update(out.executed_by)


async def replay(
    paths: list[str],
    settings: Settings,
    results: IO[bytes] | None,
    errors: IO[bytes] | None,
    progress: bool = False,
    emit: Emit = "batch",
) -> tuple[ReplayStats, Pipeline[FileOrigin]]:
    """Run every file through the pipeline; returns the counts and the final pipeline.

    `emit="final"`: one result per symbol after the last batch instead of one per
    touched symbol per batch (a backfill whose users want only the end state).

    A file that breaks part way does not stop the run: what it and the other files
    yielded is processed, and the break is in `stats.failures` for the caller to
    report (the run is then incomplete). So is a file that gave no valid bar.
    """
    started = time.perf_counter()
    stats = ReplayStats()
    if settings.dask.dask_processes is None:
        threads = settings.dask.model_copy(update={"dask_processes": False})
        settings = settings.model_copy(update={"dask": threads})
    compute_task: asyncio.Future[Any] | None = None

    def compute() -> asyncio.Future[Any]:
        """Start Dask when the first chunk needs it: by then the decoder has a queue of
        batches, so the import and cluster start (which hold the loop ~1 s) overlap work."""
        nonlocal compute_task
        if compute_task is None:
            from service.compute.stream import open_async

            compute_task = asyncio.ensure_future(open_async(settings.dask))
        return compute_task

    bar = _progress_bar(paths) if progress else None

    def delivered(out: BatchOutput[FileOrigin]) -> None:
        stats.add(out)
        if bar is not None:
            bar.update(out.batch.n_bytes)

    # With a core to spare, a helper process reads and decodes (service.files.source);
    # otherwise the files are read here and decoded inline.
    helper = decode_processes(settings.batching) > 0
    source = (
        FileSource(paths, settings.batching.batch_max_messages, settings.batching.max_message_bytes)
        if helper
        else None
    )
    sink = FileSink(results, errors)
    pipeline = Pipeline(
        settings,
        compute,
        sink,
        on_delivered=delivered,
        emit=emit,
    )
    try:
        async for batch in _batches(
            paths, settings.batching.batch_max_messages, source, stats.failures
        ):
            await pipeline.submit(batch)
        await pipeline.finish(FileOrigin(paths[-1] if paths else "-"))
        await pipeline.drain()
        if source is not None:
            stats.failures.extend(source.failures)
        stats.failures.extend(stats.files.unread(paths, {f.file for f in stats.failures}))
    except Exception:
        # Let the batches in flight settle before the cluster closes under them, so the
        # one error the user sees is this one, not a closed client's internals.
        with contextlib.suppress(Exception):
            await pipeline.drain()
        raise
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


async def _batches(
    paths: list[str], batch_lines: int, source: FileSource | None, failures: list[FileFailure]
) -> AsyncIterator[Batch[FileOrigin]]:
    if source is not None:
        async for batch in source:
            batch.closed_at = time.monotonic()  # batch latency counts from here, as for Kafka
            yield batch
        return
    for batch in read_batches(paths, batch_lines, failures):
        yield batch
        await asyncio.sleep(0)  # let delivered batches be written between reads


def _progress_bar(paths: list[str]) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total_size_hint(paths), unit="B", unit_scale=True, desc="replay", file=sys.stderr
    )
