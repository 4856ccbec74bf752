"""One daemon thread that runs blocking client calls in order: an `Executor` for
`loop.run_in_executor`.

`concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, so one
librdkafka call stuck on an unreachable broker (`init_transactions`, a restore) would
hold up the exit a signal asked for. A lane's thread is a daemon: once the service has
given up waiting for a call, the process can still exit at once.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Lane"]

T = TypeVar("T")
_Job = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Lane(concurrent.futures.Executor):
    """Calls run one at a time, in submission order, on one daemon thread."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("lane is shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; the thread ends after the calls already queued."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
        if wait:
            self._thread.join()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
