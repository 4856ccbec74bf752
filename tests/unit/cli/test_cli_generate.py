"""`sfa generate` streams: memory does not grow with the market, errors are one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across exec, so
# a child of a pytest process that has grown to 500 MB would report 500 MB.
_PEAK = (
    "import sys\n"
    "from service.market import write_jsonl\n"
    "n, start, end = map(int, sys.argv[1:4])\n"
    "with open(sys.argv[4], 'wb') as out:\n"
    "    write_jsonl(out, n, start, end, 0)\n"
    "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "print(int(hwm.split()[1]) // 1024)\n"  # KiB -> MiB
)


def _peak_mib(tmp_path: Path, n: int, start: int, end: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(n), str(start), str(end), str(tmp_path / "m.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(done.stdout)


def test_memory_stays_flat_as_the_market_grows(tmp_path: Path) -> None:
    """10x the symbols and 10x the years both cost next to nothing: a day is held at a
    time (the year-at-a-time writer took ~1.1 MB per symbol-year: 2.2 GB for the 10x)."""
    small = _peak_mib(tmp_path, 200, 2020, 2020)
    more_symbols = _peak_mib(tmp_path, 2000, 2020, 2020)
    more_years = _peak_mib(tmp_path, 200, 2011, 2020)
    assert more_symbols - small < 40, (small, more_symbols)
    assert more_years - small < 40, (small, more_years)
    assert max(small, more_symbols, more_years) < 300


def _sfa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "generate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unwritable_output_is_one_line(tmp_path: Path) -> None:
    args = ["--symbols", "2", "--start-year", "2020", "--end-year", "2020"]
    for target in [tmp_path / "no" / "dir.jsonl", tmp_path]:
        done = _sfa(*args, "--output", str(target))
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]
        assert str(target) in done.stderr and "Traceback" not in done.stderr


def test_an_interrupted_run_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "m.jsonl"
    target.write_bytes(b"previous\n")
    argv = [
        "--symbols",
        "3000",
        "--start-year",
        "1990",
        "--end-year",
        "2020",
        "--output",
        str(target),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "generate", *argv],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not [p for p in tmp_path.iterdir() if p.name.endswith(".part") and p.stat().st_size]:
            assert proc.poll() is None, "finished before it could be interrupted"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip() == "sfa: interrupted"
    assert target.read_bytes() == b"previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]
