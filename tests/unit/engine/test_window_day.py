"""SPEC 5 `window_day` by hand: today on the curve's axis, in the window's own unit."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from service.calendar import date_to_day
from service.engine import position_and_signal
from service.engine.types import EngineParams

SF_2024 = dt.date(2024, 2, 10)  # a Saturday
HELD = np.array([date_to_day(dt.date(2024, 2, d)) for d in (1, 2, 5, 12, 13, 15)], np.int32)


def _window_day(day: dt.date, alignment: str, window_days: int = 60) -> int | None:
    params = EngineParams(window_days=window_days, alignment=alignment)  # type: ignore[arg-type]
    position, _ = position_and_signal(date_to_day(day), None, params, HELD)
    return position.window_day


@pytest.mark.parametrize(
    ("day", "trading", "calendar"),
    [
        (dt.date(2024, 2, 5), -5, -5),  # Mon..Fri before a Saturday festival: 5 weekdays
        (dt.date(2024, 2, 8), -2, -2),  # Thu, Fri
        (dt.date(2024, 1, 27), -10, -14),  # two whole weeks: 10 weekdays, 14 days
        (dt.date(2024, 2, 12), 1, 2),  # the first post bar is +1 (the curve's numbering)
        (dt.date(2024, 2, 15), 3, 5),  # held bars on 12, 13, 15
        (SF_2024, 0, 0),  # festival day without a bar on it: no post bar yet
    ],
)
def test_window_day_by_hand(day: dt.date, trading: int, calendar: int) -> None:
    assert _window_day(day, "trading") == trading
    assert _window_day(day, "calendar") == calendar


def test_window_day_is_null_outside_every_window() -> None:
    assert _window_day(dt.date(2024, 6, 1), "trading") is None
    assert _window_day(dt.date(2024, 6, 1), "calendar") is None
    # Late 2099 lies within W of SF(2100), whose window holds no bar (SPEC 3).
    params = EngineParams(window_days=60)
    position, _ = position_and_signal(date_to_day(dt.date(2099, 12, 31)), None, params)
    assert position.in_window and position.window_day is None
