"""One way to start a helper process, and the life every helper leads.

Three parts of sfa do their work in helper processes: the probe server
(`service.run.probes`), replay's file reader (`service.files.source`) and the decode pool
(`service.decode.pool`). They used to start in three ways; the rules they need are one
set, so they live here:

- **Start**: a dedicated helper is `python -m service.helpers MODULE PARENT ARGS...`
  (`start`), which imports MODULE and calls its `helper_main(args)`. A plain child
  rather than multiprocessing's spawn: spawn re-imports the parent's `__main__` (the
  `sfa` script, a benchmark, a test runner) before any work starts, and the probe server
  must be up at once and import little. A pool of interchangeable helpers (`pool`) is the
  standard library's process pool over spawn, which already does the queueing, the
  pickling and a dead worker's error; its workers begin the same way (`enter`).
- **Signals are the parent's**: a terminal's Ctrl-C reaches the whole process group, so a
  helper gets SIGINT at the same moment as the command; left to Python it would raise
  `KeyboardInterrupt` inside whatever the helper was waiting on and print a traceback. A
  SIGTERM sent to the group would take a decode worker or the probe server away in the
  middle of the graceful stop the parent is running. Helpers ignore both; the parent
  decides what they mean (`service.cli.interrupt`, `service.cli.run`) and ends its helpers
  itself. stderr is the parent's, so a helper's last words land in the same log.
- **End**: with the parent. A SIGKILLed parent cannot shut its helpers down and an idle
  helper would wait for work forever, so each watches its parent (`exit_with_parent`).
  The parent's way to end one is `stop`: end of input on its stdin if it reads one (the
  probe server's snapshot stream), then SIGKILL after a grace period (at once for a
  helper with nothing to finish, such as the file reader).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

__all__ = ["enter", "exit_with_parent", "pool", "start", "stop"]


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


def enter(parent: int) -> None:
    """The start of every helper: SIGINT and SIGTERM are the parent's, end with `parent`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_with_parent(parent)


def start(
    module: str,
    args: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """A dedicated helper running `module.helper_main(args)`; raises OSError if it
    cannot be started."""
    command = [sys.executable, "-m", "service.helpers", module, str(os.getpid()), *args]
    return subprocess.Popen(command, stdin=stdin, stdout=stdout, pass_fds=tuple(pass_fds))


def pool(processes: int) -> concurrent.futures.ProcessPoolExecutor:
    """`processes` interchangeable helpers behind the standard library's executor.

    spawn, not fork: the parent runs an event loop, librdkafka and Dask threads, which a
    forked child would inherit mid-flight.
    """
    return concurrent.futures.ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=enter,
        initargs=(os.getpid(),),
    )


def stop(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """End a helper from `start`: close its stdin (its cue to finish), give it `grace_s`,
    then SIGKILL. Idempotent."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is not None:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _main(argv: list[str]) -> int:
    """`python -m service.helpers MODULE PARENT ARGS...`, started by `start` only."""
    module, parent, args = argv[0], int(argv[1]), argv[2:]
    enter(parent)
    code: int | None = importlib.import_module(module).helper_main(args)
    return code or 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
