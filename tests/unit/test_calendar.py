"""SPEC 2: Spring Festival dates, checked against the SPEC's table and a second library.

`service.calendar` reads borax's published tables; lunar-python computes the calendar
astronomically, so agreement over all 200 years is a real cross-check. The borax check
stays too, in case the service ever switches libraries again.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from borax.calendars.lunardate import LunarDate
from lunar_python import Lunar

from service.calendar import (
    FIRST_YEAR,
    LAST_YEAR,
    date_to_day,
    day_to_date,
    sf_day_table,
    spring_festival_date,
)

SPEC_DATES = [
    "2010-02-14", "2011-02-03", "2012-01-23", "2013-02-10", "2014-01-31", "2015-02-19",
    "2016-02-08", "2017-01-28", "2018-02-16", "2019-02-05", "2020-01-25", "2021-02-12",
    "2022-02-01", "2023-01-22", "2024-02-10", "2025-01-29", "2026-02-17", "2027-02-06",
    "2028-01-26", "2029-02-13", "2030-02-03", "1901-02-19", "2099-01-21", "2100-02-09",
]  # fmt: skip


@pytest.mark.parametrize("iso", SPEC_DATES)
def test_spec_table(iso: str) -> None:
    d = dt.date.fromisoformat(iso)
    assert spring_festival_date(d.year) == d
    assert sf_day_table()[d.year - FIRST_YEAR] == date_to_day(d)


def test_agrees_with_borax_for_every_year() -> None:
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        assert spring_festival_date(year) == LunarDate(year, 1, 1).to_solar_date(), year


def test_agrees_with_astronomical_lunar_python_for_every_year() -> None:
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        solar = Lunar.fromYmd(year, 1, 1).getSolar()
        expected = dt.date(solar.getYear(), solar.getMonth(), solar.getDay())
        assert spring_festival_date(year) == expected, year


def test_day_table_matches_dates_and_is_read_only() -> None:
    table = sf_day_table()
    assert table.dtype == np.int32 and table.shape == (LAST_YEAR - FIRST_YEAR + 1,)
    assert [day_to_date(int(d)) for d in table] == [
        spring_festival_date(y) for y in range(FIRST_YEAR, LAST_YEAR + 1)
    ]
    with pytest.raises(ValueError):
        table[0] = 0


@pytest.mark.parametrize("year", [1800, 1900, 2101, 3000])
def test_out_of_range_years_raise(year: int) -> None:
    with pytest.raises(ValueError, match=rf"^year {year} outside 1901\.\.2100$"):
        spring_festival_date(year)


def test_day_numbers_round_trip() -> None:
    assert date_to_day(dt.date(1970, 1, 1)) == 0
    for d in (dt.date(1901, 1, 1), dt.date(2000, 2, 29), dt.date(2099, 12, 31)):
        assert day_to_date(date_to_day(d)) == d
