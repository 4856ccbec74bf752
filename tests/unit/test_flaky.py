"""`make flaky`'s counting (tests/flaky.py), on a real pytest run of a tiny suite."""

from __future__ import annotations

from pathlib import Path

from tests.flaky import count_failures, main

SUITE = """
import os
def test_passes():
    pass
def test_fails_on_odd_runs():
    path = os.environ["FLAKY_COUNTER"]
    n = int(open(path).read() or 0) + 1 if os.path.exists(path) else 1
    open(path, "w").write(str(n))
    assert n % 2 == 0, f"odd run {n}"
"""


def test_counts_each_tests_failures_over_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    suite = tmp_path / "test_tiny.py"
    suite.write_text(SUITE)
    monkeypatch.setenv("FLAKY_COUNTER", str(tmp_path / "counter"))
    out = tmp_path / "out"
    code = main(["--runs", "3", "--out", str(out), str(suite)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "2/3" in printed and "test_fails_on_odd_runs" in printed and "odd run 1" in printed
    assert "test_passes" not in printed.split("fails  test")[1]
    ran, failed = count_failures(out / "run-2.xml")
    assert ran == 2 and failed == {}
