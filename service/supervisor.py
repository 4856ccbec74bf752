"""`sfa-supervise CMD...`: run the service so that a death by signal leaves a trace.

A crash in native code (librdkafka, OpenSSL, numpy) kills the process before Python can
say anything: librdkafka's threads block every signal, so not even `faulthandler` runs,
and a container that just exits 139 tells the operator nothing. The image's entrypoint
therefore runs `sfa` under this small parent, which:

- raises the core-file limit to the hard limit (`ulimit -c`), so the kernel may write a
  core where the host's `kernel.core_pattern` says (docs/operations.md); with a relative
  pattern (`core`, the kernel's default) the core lands in the child's working
  directory, which is `SFA_CORE_DIR` when that is set (the manifests mount a volume
  there), the supervisor's own otherwise;
- forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the child, once
  each, the child running in its own process group so that a terminal's Ctrl-C is not
  delivered to it twice;
- when the child dies by a signal, writes one JSON line (the service's log format) with
  the signal's name and whether a core was dumped, and exits 128 + the signal number,
  as a shell would, so compose and Kubernetes record the same code; the same line goes
  to `SFA_TERMINATION_LOG` (default `/dev/termination-log`, where it exists), which
  Kubernetes shows as the container's last termination message;
- otherwise exits with the child's own code.

It imports nothing heavy: it must start fast and cannot itself be the thing that crashes.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from types import FrameType

import orjson

__all__ = ["death_record", "main", "raise_core_limit"]

_FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_USAGE = "usage: sfa-supervise COMMAND [ARG...]   (the image runs: sfa-supervise sfa run)\n"


def raise_core_limit() -> int:
    """Soft core limit up to the hard one; returns the new soft limit (-1: unlimited)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    return hard


def death_record(argv: list[str], pid: int, status: int) -> tuple[int, dict[str, object] | None]:
    """Exit code for a raw wait status, and the log record when the child was signalled."""
    if not os.WIFSIGNALED(status):
        return os.waitstatus_to_exitcode(status), None
    number = os.WTERMSIG(status)
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    core = os.WCOREDUMP(status)
    return 128 + number, {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "level": "CRITICAL",
        "logger": "sfa.supervisor",
        "msg": f"{argv[0]} (pid {pid}) died by {name}"
        + (", core dumped" if core else ", no core (see docs/operations.md)"),
        "signal": name,
        "core_dumped": core,
        "exit": 128 + number,
        "command": argv,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_USAGE + (__doc__ or ""))
        return 0 if args else 2
    with contextlib.suppress(OSError, ValueError):  # a platform that refuses: no cores
        raise_core_limit()
    # A blocked signal in the mask we were started with would be inherited by the child
    # and never reach either of us (a runtime or a parent may hand one down).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    core_dir = os.environ.get("SFA_CORE_DIR", "").strip() or None
    if core_dir is not None:
        try:
            os.makedirs(core_dir, exist_ok=True)
        except OSError as exc:
            sys.stderr.write(f"sfa-supervise: SFA_CORE_DIR {core_dir}: {exc.strerror}\n")
            return 2
    try:
        child = subprocess.Popen(args, process_group=0, cwd=core_dir)
    except OSError as exc:
        sys.stderr.write(f"sfa-supervise: cannot start {args[0]}: {exc.strerror}\n")
        return 127

    def forward(number: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, number)

    for number in _FORWARDED:
        signal.signal(number, forward)
    _, status = os.waitpid(child.pid, 0)  # retried across forwarded signals (PEP 475)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    code, record = death_record(args, child.pid, status)
    if record is not None:
        line = orjson.dumps(record).decode() + "\n"
        sys.stderr.write(line)
        sys.stderr.flush()
        _termination_message(line)
    return code


def _termination_message(line: str) -> None:
    path = os.environ.get("SFA_TERMINATION_LOG", "").strip() or "/dev/termination-log"
    if os.path.exists(path):
        with contextlib.suppress(OSError), open(path, "w") as out:
            out.write(line)


if __name__ == "__main__":
    sys.exit(main())
