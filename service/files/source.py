"""Replay's source: files read, cut into batches and decoded in one helper process.

Why a process of its own instead of a decode pool: handing each 2 MB batch to a pool
costs a pickle and a pipe round trip, and the pool's manager thread fights the
pipeline's main thread for the GIL before the next task may start, so the helper sat
idle between batches. A helper that owns the whole read -> cut -> decode loop never
waits for the parent: it streams finished batches (compact columns, a few hundred
KB) through a pipe, and the pipe's capacity is the backpressure.

The helper starts and ends the way every helper does (`service.helpers`). The parent
receives on a thread (a blocking `recv` releases the GIL) and feeds the
same streamz pipeline as Kafka batches, with a decoded payload (`Batch.of_decoded`).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import orjson

from service import helpers
from service.batches import Batch, FileOrigin
from service.decode.batch import decode_batch, decode_lines
from service.errors import InputError
from service.files.readers import FileFailure, read_batches

__all__ = ["FileSource"]


def _serve(paths: list[str], batch_lines: int, max_message_bytes: int, out: Connection) -> None:
    """The helper's whole life: every batch in order, each broken file's `FileFailure`
    as soon as it is known, then None (or the error text)."""
    failures: list[FileFailure] = []
    try:
        for batch in read_batches(paths, batch_lines, failures):
            while failures:
                out.send(failures.pop(0))
            payload = batch.payload
            if isinstance(payload, bytes):
                decoded = decode_lines(payload, max_message_bytes)
            else:
                decoded = decode_batch(batch.messages(), max_message_bytes)
            out.send(Batch.of_decoded(decoded, batch.n_messages, batch.n_bytes, batch.origin))
        for failure in failures:
            out.send(failure)
        out.send(None)
    except InputError as exc:
        out.send(str(exc))
    except BrokenPipeError:  # the parent stopped reading: nothing left to do
        pass
    except BaseException as exc:  # anything else: say what, rather than dying silently
        out.send(f"file reader failed: {type(exc).__name__}: {exc}")
    finally:
        out.close()


class FileSource:
    """`async for batch in FileSource(paths, ...)`: decoded batches in file order.

    Paths are checked here, in the caller, so a missing file fails at once with one
    line. A file that breaks part way lands in `failures` and the next is read.
    `close()` stops the helper early (on error or interrupt).
    """

    def __init__(
        self,
        paths: Sequence[str],
        batch_lines: int,
        max_message_bytes: int,
        read_ahead: int = 8,
    ) -> None:
        read_batches(paths, batch_lines)  # validates the paths and batch size, reads nothing
        self.failures: list[FileFailure] = []
        read_fd, write_fd = os.pipe()
        spec = orjson.dumps([list(paths), batch_lines, max_message_bytes, write_fd])
        try:
            self._proc = helpers.start(__name__, [spec.decode()], pass_fds=(write_fd,))
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._conn = Connection(read_fd, writable=False)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, read_ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="sfa-file-recv", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        """Pipe -> queue; a blocking recv lets the pipeline run meanwhile."""
        while not self._stop.is_set():
            try:
                item = self._conn.recv()
            except (EOFError, OSError):
                item = "file reader exited unexpectedly"
            except Exception as exc:  # never leave the pipeline waiting on a dead thread
                item = f"file reader sent something unreadable: {exc}"
            self._queue.put(item)
            if not isinstance(item, Batch | FileFailure):
                return

    async def __aiter__(self) -> AsyncIterator[Batch[FileOrigin]]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = await loop.run_in_executor(None, self._queue.get)
            if item is None:
                return
            if isinstance(item, FileFailure):
                self.failures.append(item)
                continue
            if isinstance(item, str):
                raise InputError(item)
            yield item

    def close(self) -> None:
        self._stop.set()
        helpers.stop(self._proc, grace_s=0)  # nothing in the reader is worth finishing
        self._conn.close()
        while True:  # unblock the receiver if it waits on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break


def helper_main(argv: list[str]) -> int:
    """The helper's entry (`service.helpers.start`), started by `FileSource` only."""
    paths, batch_lines, max_message_bytes, fd = orjson.loads(argv[0])
    _serve(paths, batch_lines, max_message_bytes, Connection(fd, readable=False))
    return 0
