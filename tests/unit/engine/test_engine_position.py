"""SPEC 5: every phase boundary, every signal branch and every action threshold."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from service.calendar import date_to_day, spring_festival_date
from service.engine import EngineParams, Pattern, PatternResult, position_and_signal

SF21 = spring_festival_date(2021)  # 2021-02-12
W60 = EngineParams()
EMPTY = np.zeros(0)

BASE = Pattern(
    pattern_strength=0.9,
    average_return_before=3.0,
    average_return_after=-5.0,
    volatility_before=1.0,
    volatility_after=1.0,
    volatility_ratio=1.0,
    consistency_score=1.0,
    confidence_level=0.8,
    peak_day=-1,
    trough_day=1,
)


def ok(**changes: object) -> PatternResult:
    pattern = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
    return PatternResult("P.SH", "ok", (2019, 2020, 2021), pattern, EMPTY, EMPTY, EMPTY)


def at(days_to_festival: int) -> int:
    return date_to_day(SF21) - days_to_festival


@pytest.mark.parametrize(
    ("days", "phase"),
    [
        (61, "normal_period"),
        (60, "approaching"),
        (16, "approaching"),
        (15, "pre_festival"),
        (1, "pre_festival"),
        (0, "festival_day"),
        (-1, "post_festival"),
        (-14, "post_festival"),
        (-15, "recovery"),
        (-60, "recovery"),
    ],
)
def test_phase_boundaries(days: int, phase: str) -> None:
    pos, _ = position_and_signal(at(days), ok(), W60)
    assert (pos.phase, pos.days_to_spring_festival, pos.relative_day) == (phase, days, -days)
    assert pos.in_window == (phase != "normal_period")
    assert pos.spring_festival_day == date_to_day(SF21)


def test_after_the_window_the_next_festival_is_used() -> None:
    pos, _ = position_and_signal(at(-61), ok(), W60)
    assert pos.spring_festival_day == date_to_day(spring_festival_date(2022))
    assert pos.phase == "normal_period" and not pos.in_window
    late = position_and_signal(date_to_day(dt.date(2099, 12, 31)), None, W60)[0]
    assert late.spring_festival_day == date_to_day(dt.date(2100, 2, 9))
    assert (late.days_to_spring_festival, late.phase) == (40, "approaching")


def test_window_size_moves_the_edges() -> None:
    pos, _ = position_and_signal(at(11), ok(), EngineParams(window_days=10))
    assert pos.phase == "normal_period"
    pos, _ = position_and_signal(at(10), ok(), EngineParams(window_days=10))
    assert pos.phase == "pre_festival"


def test_first_and_last_valid_as_of_days() -> None:
    first = position_and_signal(date_to_day(dt.date(1901, 1, 1)), None, W60)[0]
    assert first.spring_festival_day == date_to_day(dt.date(1901, 2, 19))
    assert (first.days_to_spring_festival, first.phase, first.in_window) == (
        49,
        "approaching",
        True,
    )
    last = position_and_signal(date_to_day(dt.date(2099, 12, 31)), None, EngineParams(175))[0]
    assert (last.days_to_spring_festival, last.phase) == (40, "approaching")


@pytest.mark.parametrize(
    "day", [date_to_day(dt.date(1900, 12, 31)), date_to_day(dt.date(2100, 1, 1))]
)
def test_as_of_out_of_range_raises(day: int) -> None:
    with pytest.raises(ValueError):
        position_and_signal(day, None, W60)


def test_no_signal_without_an_ok_pattern() -> None:
    insufficient = PatternResult("P.SH", "insufficient_history", (2020,), None, EMPTY, EMPTY, EMPTY)
    assert position_and_signal(at(5), insufficient, W60)[1] is None
    assert position_and_signal(at(5), None, W60)[1] is None
    # the status decides, even for a hand-built result that carries a pattern anyway
    stale = PatternResult("P.SH", "insufficient_history", (2020,), BASE, EMPTY, EMPTY, EMPTY)
    assert position_and_signal(at(5), stale, W60)[1] is None


@pytest.mark.parametrize(
    ("days", "changes", "expected"),
    [
        # outside the window and on the festival day: neutral whatever the pattern
        (61, {}, ("neutral", 0.0, "hold", False)),
        (0, {}, ("neutral", 0.0, "hold", False)),
        # before: average_return_before = 3 > 0 and strength 0.9 > 0.5 -> bullish 0.72
        (40, {}, ("bullish", 0.72, "buy", False)),
        (5, {}, ("bullish", 0.72, "buy", False)),
        (5, {"confidence_level": 0.6}, ("bullish", 0.54, "watch", False)),
        (5, {"pattern_strength": 0.6, "confidence_level": 1.0}, ("bullish", 0.6, "watch", False)),
        (5, {"pattern_strength": 0.5}, ("neutral", 0.0, "hold", False)),
        (5, {"average_return_before": 0.0}, ("neutral", 0.0, "hold", False)),
        (5, {"average_return_before": -2.0}, ("neutral", 0.0, "hold", False)),
        (
            5,
            {"average_return_before": -2.5, "pattern_strength": 0.1},
            ("bearish", 0.08, "reduce", False),
        ),
        # after: average_return_after = -5 -> bearish
        (-1, {}, ("bearish", 0.72, "sell", False)),
        # exactly 0.6 is not above 0.6, on either side of the festival
        (-1, {"pattern_strength": 0.6, "confidence_level": 1.0}, ("bearish", 0.6, "reduce", False)),
        (
            5,
            {"average_return_before": -3.0, "pattern_strength": 0.6, "confidence_level": 1.0},
            ("bearish", 0.6, "reduce", False),
        ),
        (-1, {"average_return_after": -2.0}, ("neutral", 0.0, "hold", False)),
        (-1, {"average_return_after": 0.0}, ("neutral", 0.0, "hold", False)),
        (-15, {"confidence_level": 0.5}, ("bearish", 0.45, "reduce", False)),
        (-20, {"average_return_after": 1.0}, ("bullish", 0.72, "buy", False)),
        (
            -20,
            {"average_return_after": 1.0, "pattern_strength": 0.4},
            ("neutral", 0.0, "hold", False),
        ),
        # volatility warning: ratio > 2 or infinite; action decided before the 0.8 factor
        (-20, {"volatility_ratio": None}, ("bearish", 0.576, "sell", True)),
        (-20, {"volatility_ratio": 2.5}, ("bearish", 0.576, "sell", True)),
        (-20, {"volatility_ratio": 2.0}, ("bearish", 0.72, "sell", False)),
        (61, {"volatility_ratio": 3.0}, ("neutral", 0.0, "hold", True)),
        (0, {"volatility_ratio": None}, ("neutral", 0.0, "hold", True)),
    ],
)
def test_signal_branches(days: int, changes: dict[str, object], expected: tuple) -> None:
    _, signal = position_and_signal(at(days), ok(**changes), W60)
    assert signal is not None
    kind, strength, action, warning = expected
    assert (signal.signal, signal.action, signal.volatility_warning) == (kind, action, warning)
    assert signal.strength == pytest.approx(strength, abs=1e-12)
