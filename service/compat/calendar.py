"""`ChineseCalendar`: the original's class methods over the service's calendar (SPEC 2).

The original kept a hand table of 21 festivals (2010-2030) and answered None outside
it; this one reads `service.calendar` (1901-2100), the same dates the engine aligns on,
so a date the calendar reports is the date every analysis uses.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from service.calendar import FIRST_YEAR, LAST_YEAR, spring_festival_date

__all__ = ["ChineseCalendar", "to_date"]

_ONE_DAY = dt.timedelta(days=1)


def to_date(value: Any) -> dt.date:
    """A date from a date, datetime, pandas Timestamp, numpy datetime64 or ISO string."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    stamp = pd.Timestamp(value)
    if pd.isna(stamp):
        raise ValueError(f"not a date: {value!r}")
    return stamp.date()


class _FestivalTable(Mapping[int, dt.date]):
    """year -> festival date for 1901..2100, read-only; the original's class attribute,
    built lazily so that importing the API computes no dates."""

    def __getitem__(self, year: int) -> dt.date:
        try:
            number = operator.index(year)  # ints, numpy ints; not floats or strings
        except TypeError:
            raise KeyError(year) from None
        if not FIRST_YEAR <= number <= LAST_YEAR:
            raise KeyError(year)
        return spring_festival_date(number)

    def __iter__(self) -> Iterator[int]:
        return iter(range(FIRST_YEAR, LAST_YEAR + 1))

    def __len__(self) -> int:
        return LAST_YEAR - FIRST_YEAR + 1

    def __repr__(self) -> str:
        return f"<Spring Festival dates {FIRST_YEAR}..{LAST_YEAR}>"


class ChineseCalendar:
    """Spring Festival dates for 1901-2100; None (never an error) outside, as before."""

    SPRING_FESTIVAL_DATES: Mapping[int, dt.date] = _FestivalTable()

    @classmethod
    def get_spring_festival(cls, year: int) -> dt.date | None:
        """The festival's Gregorian date in `year` (1901-2100), else None."""
        return cls.SPRING_FESTIVAL_DATES.get(year)

    @classmethod
    def get_available_years(cls) -> list[int]:
        """Every year the calendar knows, ascending (1901-2100)."""
        return list(cls.SPRING_FESTIVAL_DATES)

    @classmethod
    def is_spring_festival_period(
        cls, check_date: Any, window_days: int = 15
    ) -> tuple[bool, dt.date | None]:
        """(inside `[SF - window_days, SF + window_days]` of some festival, that festival).

        Unlike the original, which only looked at the festival of the date's own year,
        a late-December date can lie in the next year's window. Outside every window the
        festival of the date's year is returned (None past the calendar), as before.
        """
        if window_days < 0:
            raise ValueError("window_days must be >= 0")
        day = to_date(check_date)
        span = dt.timedelta(days=int(window_days))
        for year in (day.year - 1, day.year, day.year + 1):
            festival = cls.get_spring_festival(year)
            if festival is not None and festival - span <= day <= festival + span:
                return True, festival
        return False, cls.get_spring_festival(day.year)

    @classmethod
    def get_trading_days_to_spring_festival(cls, check_date: Any) -> int | None:
        """Weekdays (Monday to Friday) to the festival of the date's year; negative after it.

        Before: weekdays in [date, festival), so the last weekday before it is 1, the same
        count as SPEC 3's trading alignment (k = -1). After: minus the weekdays in
        (festival, date]. 0 on the day itself. Exchange holidays are not known here, so
        this counts the weekdays an exchange could open; None outside 1901-2100.
        """
        day = to_date(check_date)
        festival = cls.get_spring_festival(day.year)
        if festival is None:
            return None
        if day < festival:
            return int(np.busday_count(day, festival))
        if day == festival:
            return 0
        return -int(np.busday_count(festival + _ONE_DAY, day + _ONE_DAY))
