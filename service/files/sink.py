"""Replay's sink: results as JSONL to a file or stdout, dead letters (SPEC 1) to a file."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import IO

from service.batches import BatchOutput, FileOrigin
from service.encode import errors_file_record

__all__ = ["FileSink"]


class FileSink:
    """Results as JSONL to a file or stdout; dead letters as JSONL (SPEC 1) to a file.

    Writes run on a thread of their own: a write syscall releases the GIL, so the
    next batches are prepared meanwhile. One thread, so writes stay in call order.
    """

    def __init__(self, results: IO[bytes] | None, errors: IO[bytes] | None) -> None:
        self._results = results
        self._errors = errors
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sfa-writer")

    async def write(self, out: BatchOutput[FileOrigin]) -> None:
        data = b""
        if self._results is not None and out.results:
            # One copy of what can be gigabytes per run: the empty last element gives the
            # final newline (`+ b"\n"` would copy everything again).
            payloads = [payload for _, payload in out.results]
            payloads.append(b"")
            data = b"\n".join(payloads)
        errors = b""
        if self._errors is not None and out.rejects:
            origin = out.batch.origin
            errors = b"".join(
                errors_file_record(r, origin.file, origin.line_of(r.index)) + b"\n"
                for r in out.rejects
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
