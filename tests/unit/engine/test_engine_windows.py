"""SPEC 3 windows: which year's window holds a day (1901..2099 only)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from service.calendar import date_to_day, spring_festival_date
from service.engine import window_year_of


def _year(d: dt.date, w: int) -> int:
    return int(window_year_of(np.array([date_to_day(d)]), w)[0])


@pytest.mark.parametrize("w", [1, 60, 175])
def test_edges_of_a_window(w: int) -> None:
    sf = spring_festival_date(2021)
    assert _year(sf, w) == 2021
    assert _year(sf - dt.timedelta(days=w), w) == 2021
    assert _year(sf + dt.timedelta(days=w), w) == 2021
    assert _year(sf - dt.timedelta(days=w + 1), w) == 0
    assert _year(sf + dt.timedelta(days=w + 1), w) == 0


def test_first_and_last_window_years() -> None:
    assert _year(dt.date(1901, 2, 19), 60) == 1901
    assert _year(dt.date(1901, 1, 1), 60) == 1901
    assert _year(dt.date(2099, 1, 21), 60) == 2099
    assert _year(dt.date(2099, 3, 22), 60) == 2099  # SF(2099) + 60
    assert _year(dt.date(2099, 3, 23), 60) == 0


@pytest.mark.parametrize("w", [60, 175])
def test_late_2099_belongs_to_no_window(w: int) -> None:
    # SF(2100) = 2100-02-09: its window would start in late 2099, but 2100 never counts.
    assert _year(dt.date(2099, 12, 31), w) == 0
    assert _year(dt.date(2100, 2, 9), w) == 0


def test_vectorised_matches_scalar_rule() -> None:
    days = np.arange(date_to_day(dt.date(2015, 1, 1)), date_to_day(dt.date(2019, 12, 31)))
    got = window_year_of(days, 30)
    assert got.dtype == np.int32 and got.shape == days.shape
    for day, year in zip(days.tolist(), got.tolist(), strict=True):
        d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        want = next(
            (y for y in (d.year, d.year + 1) if abs((d - spring_festival_date(y)).days) <= 30),
            0,
        )
        assert year == want
