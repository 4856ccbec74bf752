"""The image's entrypoint parent (service/supervisor.py), driven through real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

SUPERVISE = [sys.executable, "-m", "service.supervisor"]

# A child that counts the SIGTERMs and SIGINTs it gets, says it is ready, and exits with
# 10 * terms + ints after it has had one of each, or after 20 s.
_COUNTER = """
import signal, sys, time
got = {"TERM": 0, "INT": 0}
def on(n, f):
    got["TERM" if n == signal.SIGTERM else "INT"] += 1
signal.signal(signal.SIGTERM, on)
signal.signal(signal.SIGINT, on)
print("ready", flush=True)
deadline = time.monotonic() + 20
while (got["TERM"] == 0 or got["INT"] == 0) and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.3)  # a duplicate delivery would land here
sys.exit(10 * got["TERM"] + got["INT"])
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPERVISE, *args], capture_output=True, text=True, timeout=60)


def test_a_death_by_signal_is_one_json_line_and_the_shell_exit_code(tmp_path: Path) -> None:
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    cores = tmp_path / "cores"  # where a core lands with the default core_pattern
    termination = tmp_path / "termination-log"
    termination.touch()  # Kubernetes creates the file; the supervisor only writes it
    env = {**os.environ, "SFA_CORE_DIR": str(cores), "SFA_TERMINATION_LOG": str(termination)}
    done = subprocess.run(
        [*SUPERVISE, sys.executable, "-c", crash],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 128 + signal.SIGSEGV
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    record = orjson.loads(lines[0])
    assert record["level"] == "CRITICAL" and record["signal"] == "SIGSEGV"
    assert record["exit"] == 139 and record["command"][0] == sys.executable
    assert "died by SIGSEGV" in record["msg"]
    assert orjson.loads(termination.read_text()) == record
    assert cores.is_dir()  # made for the child, which ran there
    for core in cores.iterdir():  # written or not as the host's core_pattern says
        core.unlink()


def test_the_child_runs_in_the_core_dir(tmp_path: Path) -> None:
    env = {**os.environ, "SFA_CORE_DIR": str(tmp_path)}
    done = subprocess.run(
        [*SUPERVISE, sys.executable, "-c", "import os; print(os.getcwd())"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path)


def test_the_core_limit_is_raised_to_the_hard_limit() -> None:
    show = "import resource; print(resource.getrlimit(resource.RLIMIT_CORE)[0])"
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    done = _run(sys.executable, "-c", show)
    assert done.returncode == 0 and int(done.stdout) == hard


def test_exit_codes_pass_through_silently() -> None:
    done = _run(sys.executable, "-c", "import sys; sys.exit(4)")
    assert (done.returncode, done.stderr) == (4, "")
    assert _run(sys.executable, "-c", "pass").returncode == 0


def test_a_command_that_cannot_start_is_one_line_and_127() -> None:
    done = _run("/nonexistent/sfa")
    assert done.returncode == 127
    assert done.stderr.startswith("sfa-supervise: cannot start /nonexistent/sfa")


def test_signals_reach_the_child_once_even_when_the_whole_group_gets_them() -> None:
    proc = subprocess.Popen(
        [*SUPERVISE, sys.executable, "-c", _COUNTER],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's process group, with the supervisor in it
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGTERM)  # what a container runtime sends
        time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        assert proc.wait(timeout=30) == 11  # one TERM, one INT: nothing doubled
    finally:
        proc.kill()
        proc.wait()
