"""The one way the integration tests and drills start `sfa run` (or another `sfa`
command they must signal mid-way) as a real subprocess.

Why one: the tests are the oracle for what `sfa run` does as a process (its exit codes,
its JSON log, how it stops), so every test must start, watch and stop it the same way.
Four hand-made launchers used to differ in small ways that each cost a debugging hour:
a stderr pipe nobody read (a chatty service blocks on a full pipe), processes left
running when an assertion failed before the stop, stdout thrown away although SPEC says
every line `sfa run` prints is JSON.

So: stdout and stderr go to one log file (read while the process runs), waits are on a
condition with the process checked alive on every round, SIGTERM is followed by a
bounded wait, and `close()` kills whatever still runs. The `sfa_run` fixture in
conftest.py closes every process a test started, whatever the test did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["TIMED_OUT", "Launcher", "SfaProcess", "launched"]

REPO = Path(__file__).resolve().parents[2]

#: What `term()` returns when the process did not exit within its timeout (it is then
#: killed): no exit code a process can have.
TIMED_OUT = -999


class SfaProcess:
    """One `sfa` subprocess (`sfa run` unless `args` says otherwise) whose stdout and
    stderr go to `log_path`. `env` is its whole environment; `executable` the command
    (`python -m service` by default, the installed `sfa` script where that is what is
    tested); `new_session` gives it its own process group, so `interrupt()` reaches its
    helpers as a terminal's Ctrl-C does."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        args: Sequence[str] = ("run",),
        executable: Sequence[str] = (sys.executable, "-m", "service"),
        new_session: bool = False,
    ) -> None:
        self.log_path = log_path
        self.started = time.monotonic()
        self._is_run = tuple(args[:1]) == ("run",)
        self._new_session = new_session
        self._log = log_path.open("ab")
        self._own_from = self._log.tell()  # a log may hold an earlier process's lines
        self.proc = subprocess.Popen(
            [*executable, *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=new_session,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    # --- reading its output ---------------------------------------------------------

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Every line as the JSON object it must be (fails on one that is not)."""
        return [orjson.loads(line) for line in self.lines()]

    def tail(self, n: int = 30) -> str:
        """The last `n` lines, librdkafka's own chatter left out."""
        return "\n".join([line for line in self.lines() if "librdkafka" not in line][-n:])

    def non_json_lines(self) -> list[str]:
        """Lines that are not one JSON object (Dask's, multiprocessing's or librdkafka's
        own prints would be). A SIGKILL may cut the last line short: it is left out."""
        text = self.text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()
        bad = []
        for line in lines:
            try:
                if not isinstance(orjson.loads(line), dict):
                    bad.append(line)
            except orjson.JSONDecodeError:
                bad.append(line)
        return bad

    # --- watching it ----------------------------------------------------------------

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"sfa exited with {self.proc.returncode}:\n{self.tail()}")

    def wait_for(
        self, what: str, condition: Callable[[], bool], timeout: float, poll: float = 0.2
    ) -> None:
        """Until `condition()` holds; fails at once when the process ends first."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(poll)

    # --- ending it ------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def interrupt(self) -> None:
        """SIGINT to its whole process group, as Ctrl-C in a terminal (needs new_session)."""
        assert self._new_session, "interrupt() needs new_session=True"
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def term(self, timeout: float = 60.0) -> int:
        """SIGTERM (when still running) and its exit code, or TIMED_OUT after `timeout`
        seconds (it is then killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            return TIMED_OUT
        finally:
            self._log.close()

    def stop(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took to exit. Fails when it did not.

        A graceful stop of `sfa run` is asked once it has started: a SIGTERM during the
        interpreter's start-up, before the command installs its handlers (its first log
        line, `starting`, comes after), ends it by the default action (-15). A test whose
        input was all committed by an earlier instance sent exactly that, now and then.
        """
        self._wait_started(timeout)
        started = time.monotonic()
        code = self.term(timeout)
        if code == TIMED_OUT:
            raise AssertionError(f"no exit within {timeout} s of SIGTERM:\n{self.tail()}")
        return code, time.monotonic() - started

    def _wait_started(self, timeout: float) -> None:
        """Reads only what this process wrote, and each byte once."""
        deadline = time.monotonic() + timeout
        pending = b""
        with self.log_path.open("rb") as log:
            log.seek(self._own_from)
            while self._is_run and self.proc.poll() is None and time.monotonic() < deadline:
                *whole, pending = (pending + log.read()).split(b"\n")
                if any(_is_starting(line.decode(errors="replace")) for line in whole):
                    return
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash; waits until it is gone."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def close(self) -> None:
        """Kill whatever still runs (its whole group when it has one) and close the log."""
        if self.proc.poll() is None:
            if self._new_session:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            self.proc.wait(30)
        self._log.close()


def _is_starting(line: str) -> bool:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("msg") == "starting"


#: `launch(env, **options) -> SfaProcess`, the `sfa_run` fixture's factory.
Launcher = Callable[..., SfaProcess]


def launched(folder: Path) -> Iterator[Launcher]:
    """A factory of SfaProcess with logs `sfa-<n>.log` in `folder`; on exit every one
    still running is killed. The body of the `sfa_run` fixture, and usable as a context
    by harnesses that outlive one fixture (drills)."""
    started: list[SfaProcess] = []

    def launch(env: dict[str, str], *, log_path: Path | None = None, **options: Any) -> SfaProcess:
        path = log_path or folder / f"sfa-{len(started)}.log"
        process = SfaProcess(env, path, **options)
        started.append(process)
        return process

    try:
        yield launch
    finally:
        for process in started:
            process.close()
