"""What this host offers, and how our helper processes live on it.

One home for three facts several modules need: how many cores this process may use (the
Dask worker count, the decoder helpers, the compat cost model all size themselves by
it), and how a helper process notices that its parent died (a SIGKILLed parent cannot
shut its helpers down, and an idle helper would wait for work forever), and that a
Ctrl-C is its parent's business alone.
"""

from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["exit_with_parent", "helper_process", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def exit_with_parent(parent: int, interval_s: float = 1.0) -> threading.Thread:
    """Start a daemon thread that ends this process once `parent` is no longer its
    parent (it died and we were re-parented)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def helper_process(parent: int) -> None:
    """The start of every helper process (decode pool, file reader): ignore SIGINT and
    end with `parent`.

    A terminal's Ctrl-C goes to the whole process group, so a helper gets it at the same
    moment as the command; left to Python's default it raises `KeyboardInterrupt` inside
    whatever the helper was waiting on and prints a traceback. The parent decides what
    an interrupt means and shuts its helpers down itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
