"""`make flaky`: run a test suite N times and count each test's failures.

A test that fails now and then is a race to find, never a retry to add; this is how we
find them. Each run is a separate pytest process writing JUnit XML under var/flaky/, so
a crashed or killed run still leaves the others' counts. The table lists every test
that failed or errored at least once, with how often, and the first line of its first
failure; the exit code is 1 when any did.

    python -m tests.flaky [--runs 5] [PYTEST_ARGS...]     (default: tests/integration)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

__all__ = ["count_failures", "main"]

REPO = Path(__file__).resolve().parents[1]


def count_failures(report: Path) -> tuple[int, dict[str, str]]:
    """(tests run, {test id: first line of its failure}) from one JUnit XML file."""
    root = ET.parse(report).getroot()
    ran, failed = 0, {}
    for case in root.iter("testcase"):
        ran += 1
        for tag in ("failure", "error"):
            bad = case.find(tag)
            if bad is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                message = (bad.get("message") or bad.text or tag).strip().splitlines()
                failed[name] = message[0][:160] if message else tag
    return ran, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make flaky", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="how many runs (default 5)")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "flaky")
    args, pytest_args = parser.parse_known_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pytest_args = pytest_args or ["tests/integration"]
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    codes = []
    for n in range(1, args.runs + 1):
        report = args.out / f"run-{n}.xml"
        report.unlink(missing_ok=True)
        started = time.monotonic()
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        done = subprocess.run([*command, f"--junitxml={report}", *pytest_args], cwd=REPO)
        codes.append(done.returncode)
        took = time.monotonic() - started
        if not report.exists():
            print(f"flaky: run {n}: exit {done.returncode} after {took:.0f} s, no report")
            continue
        ran, failed = count_failures(report)
        for name, message in failed.items():
            counts[name] += 1
            first.setdefault(name, message)
        print(
            f"flaky: run {n}: {ran} tests, {len(failed)} failed, "
            f"exit {done.returncode}, {took:.0f} s"
        )
    print(f"\nflaky: {args.runs} runs of {' '.join(pytest_args)}; exit codes {codes}")
    if not counts:
        print("flaky: no test failed in any run")
        return 0 if all(c == 0 for c in codes) else 1
    print(f"{'fails':>5}  test")
    for name, n in counts.most_common():
        print(f"{n:>3}/{args.runs}  {name}\n        {first[name]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
