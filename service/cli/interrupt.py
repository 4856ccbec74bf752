"""Ctrl-C for a command that runs an event loop, a Dask cluster and helper processes.

A terminal sends SIGINT to the whole process group. Left to Python, it becomes a
`KeyboardInterrupt` somewhere inside `asyncio.run`, whose teardown then cancels the
pipeline half way: closed executors, a cluster already gone, chunks "lost", each saying
so with an ERROR line and a traceback before `sfa: interrupted`. An interrupted `sfa
replay` has nothing worth finishing (its outputs are discarded anyway), so the first
SIGINT removes the partial outputs, prints one line and ends the process at once with
130. Helper processes ignore SIGINT (`service.helpers`) and end with their
parent; a LocalCluster's workers are its children and end with it too.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from types import FrameType
from typing import Protocol

__all__ = [
    "EXIT_INTERRUPTED",
    "Interrupted",
    "block_sigint",
    "exit_on_interrupt",
    "quiet_resource_tracker",
]

#: Exit code of an interrupted command (the shell's 128 + SIGINT).
EXIT_INTERRUPTED = 130


# An interrupted run leaves semaphores for multiprocessing's resource tracker to remove,
# which it does with a plain-text UserWarning on our stderr: the removal is the remedy,
# the note is noise. The tracker is a new interpreter started with our environment.
_TRACKER_FILTER = "ignore:resource_tracker:UserWarning"


def quiet_resource_tracker() -> None:
    """Before the resource tracker starts: it will not warn about what it cleans up."""
    present = os.environ.get("PYTHONWARNINGS", "")
    if _TRACKER_FILTER not in present.split(","):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (present, _TRACKER_FILTER)))


def block_sigint() -> None:
    """Block SIGINT in this thread, so every thread it starts from now on, and every
    process those start, inherit it blocked: a helper that gets Ctrl-C while its
    interpreter starts (a Dask worker) prints a traceback before any of our code runs.
    multiprocessing's resource tracker unblocks SIGINT in the thread that first starts
    it, so it is started first (quiet)."""
    quiet_resource_tracker()
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class Discardable(Protocol):
    """An output that appears only when committed (`AtomicFile`, a part directory)."""

    def discard(self) -> None: ...


@contextmanager
def exit_on_interrupt(outputs: Iterable[Discardable]) -> Iterator[None]:
    """Inside the block, SIGINT discards `outputs` (read when the signal comes, so a
    list may grow), prints `sfa: interrupted` and exits 130 without unwinding. SIGINT is
    blocked (`block_sigint`) and taken by one thread; threads that existed before still
    reach the same handler."""

    def handle(number: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        try:
            for out in outputs:
                out.discard()
        finally:
            os.write(2, b"sfa: interrupted\n")
            os._exit(EXIT_INTERRUPTED)

    def wait() -> None:
        handle(signal.sigwait({signal.SIGINT}))

    block_sigint()
    previous = signal.signal(signal.SIGINT, handle)
    threading.Thread(target=wait, name="sfa-sigint", daemon=True).start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Interrupted:
    """Inside `with Interrupted() as stop:`, SIGINT only sets `stop.hit`; the loop asks.

    For commands whose work runs inside librdkafka calls (`produce`, `tail`): a
    KeyboardInterrupt raised while the client runs a Python callback (delivery reports,
    log lines) can surface as `SystemError: ... returned NULL without setting an
    exception` instead, a traceback and exit 1. Asking a flag between calls never raises.
    """

    def __init__(self) -> None:
        self.hit = False
        self._previous: object = None

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.hit = True

    def __enter__(self) -> Interrupted:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
