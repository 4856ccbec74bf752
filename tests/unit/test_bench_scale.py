"""bench/scale.py: the quick size end to end, and the table's verdicts and layout.

The end-to-end test checks the figures against what the generated market must give,
computed here independently (trading days x symbols; bars inside the festival windows),
so a table that was not measured cannot pass.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.scale import COLUMNS, NO_FINAL, SIZES, OneRun, Row, Size, cells, start_replay, text_table
from service.engine import window_year_of
from service.market import trading_days
from service.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    tmp = tmp_path_factory.mktemp("scale")
    markdown = tmp / "out" / "scale.md"
    command = [sys.executable, "-m", "bench.scale", "--quick"]
    done = subprocess.run(
        [*command, "--markdown", str(markdown), "--tmp", str(tmp)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    rows = [
        line
        for line in markdown.read_text().splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    assert head == list(COLUMNS)
    assert len(rows) == 2, rows  # the header and the one quick row
    row = dict(zip(head, (c.strip() for c in rows[1].strip("|").split("|")), strict=True))
    return done.stdout, row, tmp


def test_quick_row_holds_the_markets_bars(quick_run: tuple[str, dict[str, str], Path]) -> None:
    _, row, tmp = quick_run
    quick = SIZES["quick"]
    days = trading_days(quick.start_year, quick.end_year)
    in_window = int((window_year_of(days, load_settings().engine.window_days) != 0).sum())
    assert row["size"] == "quick"
    assert _number(row["bars"]) == len(days) * quick.symbols  # every generated bar replayed
    assert _number(row["held bars"]) == in_window * quick.symbols  # those in windows held
    assert 0 < in_window < len(days)  # both kinds exist, so the two checks differ
    # three columns (int32 day, float64 close, int64 stamp) are the floor per held bar
    assert _number(row["B/held bar"]) >= 20.0
    assert _number(row["peak RSS MiB"]) > 10
    assert list(tmp.glob("sfa-scale-*")) == []  # the market was deleted


def test_quick_row_ratios_are_the_rates_over_the_baseline(
    quick_run: tuple[str, dict[str, str], Path],
) -> None:
    _, row, _ = quick_run
    bare, batch = _number(row["bare lines/s"]), _number(row["batch bars/s"])
    assert bare > 0 and batch > 0
    assert _number(row["ratio"]) == pytest.approx(batch / bare, abs=0.006)
    if row["final bars/s"] != NO_FINAL:
        # the final ratio has its own baseline (around its replay), so only bounds hold
        assert _number(row["final bars/s"]) > 0
        assert 0 < _number(row["final ratio"]) < 100
    for goal in ("speed goal", "RSS goal", "bytes goal"):
        assert row[goal] == "-"  # the quick size is judged against nothing


def test_text_table_matches_the_markdown(quick_run: tuple[str, dict[str, str], Path]) -> None:
    stdout, row, _ = quick_run
    lines = [line.strip() for line in stdout.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("size "))
    assert re.split(r"\s{2,}", lines[start]) == list(COLUMNS)
    assert re.split(r"\s{2,}", lines[start + 1]) == list(row.values())


# --- the emit fallback ---------------------------------------------------------------


async def _old_replay(*args: Any) -> str:
    return "batch"


async def _new_replay(*args: Any, emit: str = "batch") -> str:
    return emit


def _run(coro: Coroutine[Any, Any, Any] | None) -> Any:
    import asyncio

    return None if coro is None else asyncio.run(coro)


def test_final_mode_needs_the_emit_keyword() -> None:
    assert _run(start_replay(_old_replay, (), "final")) is None
    assert _run(start_replay(_old_replay, (), "batch")) == "batch"
    assert _run(start_replay(_new_replay, (), "final")) == "final"
    assert _run(start_replay(_new_replay, (), "batch")) == "batch"


def test_other_type_errors_are_not_taken_for_a_missing_keyword() -> None:
    def broken(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError, match="unsupported"):
        start_replay(broken, (), "final")


# --- verdicts and layout -------------------------------------------------------------


def _row(
    ratio: float,
    rss: int,
    per_bar: float,
    goal: float,
    final_error: str | None = None,
    batch_error: str | None = None,
) -> Row:
    held = 1_000
    batch = OneRun(
        "batch", bars=10_000, seconds=1.0, rss=rss, state_bytes=int(per_bar * held), held_bars=held
    )
    if batch_error:
        batch = OneRun("batch", error=batch_error)
    final = OneRun(
        "final",
        bars=10_000,
        seconds=0.5,
        rss=rss + 1,
        state_bytes=int(per_bar * held),
        held_bars=held,
    )
    if final_error:
        final = OneRun("final", error=final_error)
    size = Size("t", 1, 2020, 2020, ratio_goal=goal, rss_goal=True, bytes_goal=True)
    return Row(size, 10_000, 1, 10_000 / ratio, 10_000 / ratio, batch, final)


@given(
    ratio=st.floats(0.01, 5.0),
    goal=st.floats(0.01, 5.0),
    rss=st.integers(1, 4 * 10**9),
    per_bar=st.floats(1.0, 100.0),
    final_error=st.booleans(),
)
def test_verdicts_follow_the_goals(
    ratio: float, goal: float, rss: int, per_bar: float, final_error: bool
) -> None:
    row = _row(ratio, rss, per_bar, goal, NO_FINAL if final_error else None)
    got = dict(zip(COLUMNS, cells(row), strict=True))
    assert row.ratio is not None and row.bytes_per_bar is not None
    assert got["speed goal"].startswith("MET" if row.ratio >= goal else "MISSED")
    peak = rss if final_error else rss + 1  # the larger of the two modes' peaks
    assert got["peak RSS MiB"] == f"{peak / 2**20:,.0f}"
    assert got["RSS goal"].startswith("MET" if peak < 10**9 else "MISSED")
    assert got["bytes goal"].startswith("MET" if row.bytes_per_bar <= 32 else "MISSED")
    assert (got["final bars/s"] == NO_FINAL) == final_error
    assert not row.failed  # a missing keyword is not a failure


def test_a_failed_replay_is_never_met() -> None:
    row = _row(1.0, 10, 10.0, 0.5, batch_error="failed (exit 1)")
    got = dict(zip(COLUMNS, cells(row), strict=True))
    assert row.failed
    assert got["batch bars/s"] == got["ratio"] == "failed (exit 1)"
    assert got["speed goal"] == "not measured (>= 0.50)"
    assert got["RSS goal"].startswith("MET")  # the final replay still ran and measured
    both = _row(1.0, 10, 10.0, 0.5, final_error="failed (exit 1)", batch_error="failed (exit 1)")
    got = dict(zip(COLUMNS, cells(both), strict=True))
    for goal in ("speed goal", "RSS goal", "bytes goal"):
        assert got[goal].startswith("not measured")


@given(st.lists(st.tuples(st.floats(0.01, 5.0), st.integers(1, 4 * 10**9)), min_size=1, max_size=5))
def test_text_table_columns_line_up(rows: list[tuple[float, int]]) -> None:
    table = text_table([_row(r, rss, 25.0, 0.5) for r, rss in rows], indent="")
    lines = table.splitlines()
    assert len(lines) == len(rows) + 1
    assert len({len(line) for line in lines}) == 1  # figures right-aligned to one width
