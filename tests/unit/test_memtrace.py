"""`SFA_TRACEMALLOC_SECONDS` (service/memtrace.py): growth is reported, off by default."""

from __future__ import annotations

import logging
import time
import tracemalloc

import pytest

from service.memtrace import start_from_env


def test_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFA_TRACEMALLOC_SECONDS", raising=False)
    assert start_from_env() is None
    monkeypatch.setenv("SFA_TRACEMALLOC_SECONDS", "soon")
    assert start_from_env() is None


@pytest.mark.parametrize(("frames", "limit"), [("", 25), ("1", 1), ("many", 25)])
def test_a_growing_list_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, frames: str, limit: int
) -> None:
    """One frame still names the allocating line: the cheap setting for a soak."""
    monkeypatch.setenv("SFA_TRACEMALLOC_SECONDS", "0.2")
    monkeypatch.setenv("SFA_TRACEMALLOC_FRAMES", frames)
    hoard: list[bytes] = []
    caplog.set_level(logging.INFO, logger="service.memtrace")
    stop = start_from_env()
    assert stop is not None
    assert tracemalloc.get_traceback_limit() == limit
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            hoard.append(bytes(10_000) + str(len(hoard)).encode())  # about 1 MiB a tenth
            time.sleep(0.01)
            reports = [r for r in caplog.records if r.getMessage().startswith("tracemalloc:")]
            if reports and any(
                g["kib"] > 100 and any("test_memtrace.py" in w for w in g["where"])
                for g in reports[-1].growth  # type: ignore[attr-defined]
            ):
                break
        else:
            pytest.fail(f"no report named the growing list: {caplog.records[-3:]}")
    finally:
        stop.set()
        tracemalloc.stop()
