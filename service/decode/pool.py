"""Where `decode_batch` runs: inline, or in helper processes beside the pipeline.

Decoding and validating is the costliest per-message step (about twice a bare
`orjson.loads`), pure CPU and GIL-bound, so threads cannot help; a small spawn-based
process pool decodes the next batches while the main thread updates state and emits
results for the current one. Batches go in as lists of bytes and come back as compact
columns, so the transfer costs a fraction of the work saved. Results are awaited in
batch order by the pipeline, so order and corrections are unaffected.

With a schema registry (`SFA_SCHEMA_REGISTRY_URL`), the schemas a batch's wire-format
messages name are looked up here, on the event loop, before the batch goes to a helper:
the helpers stay pure (`service.decode.wire`) and the cache lives in one place. The
helpers start and end the way every helper does (`service.helpers.pool`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

from service import helpers
from service.decode.batch import decode_batch, decode_lines
from service.decode.types import DecodedBatch, concat
from service.decode.wire import InputFormat, WireSchema, decode_wire_batch, wire_ids
from service.host import usable_cores
from service.settings import BatchSettings

__all__ = [
    "SPLIT_BYTES",
    "Decoder",
    "SchemaLookup",
    "decode_processes",
    "default_decode_processes",
    "split_points",
]

#: A batch of at least this many bytes is decoded in slices, at once: one per helper
#: and one on the caller's side. A default batch of one-bar messages (20,000 x ~80 B)
#: stays whole; a few dozen snapshot arrays are split.
SPLIT_BYTES = 4 << 20


class SchemaLookup(Protocol):
    """Where the schemas come from (`service.registry.Schemas`)."""

    async def resolve(self, ids: Iterable[int]) -> Mapping[int, WireSchema | None]: ...


def default_decode_processes() -> int:
    """One helper process when there is a core to spare for it, else none."""
    return 1 if usable_cores() >= 2 else 0


def decode_processes(settings: BatchSettings) -> int:
    """SFA_DECODE_PROCESSES, or the default for this host when it is unset."""
    if settings.decode_processes is None:
        return default_decode_processes()
    return settings.decode_processes


def split_points(values: Sequence[bytes], n: int, min_bytes: int) -> list[int]:
    """Where to cut `values` into at most `n` slices of about equal bytes (each slice's
    first index, starting with 0); one slice when they hold fewer than `min_bytes`."""
    sizes = np.fromiter((len(v) for v in values), np.int64, len(values))
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    if n < 2 or total < min_bytes:
        return [0]
    cuts = np.searchsorted(ends, [total * k // n for k in range(1, n)], side="right")
    return sorted({0, *(int(c) for c in cuts if 0 < c < len(values))})


def _warm() -> int:
    return os.getpid()


class Decoder:
    """`await decoder.decode(values)`; `processes=0` decodes inline on the caller's thread."""

    def __init__(
        self,
        max_message_bytes: int,
        processes: int = 0,
        *,
        input_format: InputFormat = "json",
        schemas: SchemaLookup | None = None,
    ) -> None:
        self._max = max_message_bytes
        self._format: InputFormat = input_format if schemas is not None else "json"
        self._schemas = schemas
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._processes = max(0, processes)
        if processes > 0:
            self._pool = helpers.pool(processes)  # signals are ours; they end with us
            self._pool.submit(_warm)  # start the interpreter now, while the input opens

    @property
    def processes(self) -> int:
        return 0 if self._pool is None else self._processes

    async def decode(self, values: Sequence[bytes]) -> DecodedBatch:
        if self._schemas is not None:
            ids = wire_ids(values)
            if ids or self._format != "auto":
                return await self._decode_wire(values, await self._schemas.resolve(ids))
        if self._pool is None or len(values) < 256:  # tiny batches: the hop costs more
            return decode_batch(values, self._max)
        return await self._spread(decode_batch, values, self._max)

    async def _decode_wire(
        self, values: Sequence[bytes], schemas: Mapping[int, WireSchema | None]
    ) -> DecodedBatch:
        fmt, limit = self._format, self._max
        if self._pool is None or len(values) < 256:
            return decode_wire_batch(values, schemas, fmt, limit)
        return await self._spread(decode_wire_batch, values, dict(schemas), fmt, limit)

    async def _spread(
        self, fn: Callable[..., DecodedBatch], values: Sequence[bytes], *args: object
    ) -> DecodedBatch:
        """`fn(values, *args)` in the helpers; a big batch cut in slices of equal bytes.

        A big batch (an end-of-day snapshot: hundreds of arrays) would leave this process
        idle for seconds: the helpers take all slices but the last, which is decoded
        here, on a thread, meanwhile.
        """
        loop = asyncio.get_running_loop()
        starts = split_points(values, self._processes + 1, SPLIT_BYTES)
        if len(starts) == 1:
            return await loop.run_in_executor(self._pool, fn, list(values), *args)
        ends = [*starts[1:], len(values)]
        jobs: list[Awaitable[DecodedBatch]] = [
            loop.run_in_executor(self._pool, fn, list(values[a:b]), *args)
            for a, b in zip(starts[:-1], ends[:-1], strict=True)
        ]
        jobs.append(asyncio.to_thread(fn, values[starts[-1] :], *args))
        decoded = await asyncio.gather(*jobs)
        return concat(list(zip(starts, decoded, strict=True)))

    async def decode_lines(self, blob: bytes) -> DecodedBatch:
        """A file batch as one newline-joined blob: one bytes object to pickle."""
        if self._pool is None or len(blob) < 32_768:
            return decode_lines(blob, self._max)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, decode_lines, blob, self._max)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
