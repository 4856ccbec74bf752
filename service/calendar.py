"""Spring Festival dates (SPEC 2) from a maintained lunar-calendar library.

`borax` (MIT) converts lunar to Gregorian dates for 1900..2100 from its own published
calendar data; we never keep a hand table. It was chosen over `lunar-python` (MIT, an
astronomical computation, now the tests' independent cross-check) because that one
takes ~0.8 s per process to produce the 200 dates, paid again by every Dask worker
and every CLI start. The range is computed once per process and cached.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np

__all__ = [
    "EPOCH",
    "FIRST_BAR_DAY",
    "FIRST_YEAR",
    "LAST_BAR_DAY",
    "LAST_BAR_YEAR",
    "LAST_YEAR",
    "date_to_day",
    "day_to_date",
    "sf_day_table",
    "spring_festival_date",
]

FIRST_YEAR = 1901
LAST_YEAR = 2100
EPOCH = dt.date(1970, 1, 1)
_EPOCH_ORDINAL = EPOCH.toordinal()

#: SPEC 1: a bar's date lies in 1901-01-01..2099-12-31. The calendar reaches 2100 only
#: so that late-2099 positions know the next festival; no 2100 bar is ever valid.
LAST_BAR_YEAR = 2099
FIRST_BAR_DAY = dt.date(FIRST_YEAR, 1, 1).toordinal() - _EPOCH_ORDINAL
LAST_BAR_DAY = dt.date(LAST_BAR_YEAR, 12, 31).toordinal() - _EPOCH_ORDINAL


def date_to_day(d: dt.date) -> int:
    """Day number (days since 1970-01-01): the engine's compact date unit."""
    return d.toordinal() - _EPOCH_ORDINAL


def day_to_date(day: int) -> dt.date:
    return dt.date.fromordinal(int(day) + _EPOCH_ORDINAL)


@lru_cache(maxsize=1)
def _table() -> tuple[dt.date, ...]:
    from borax.calendars.lunardate import LunarDate  # lazily: only this module knows it

    return tuple(LunarDate(year, 1, 1).to_solar_date() for year in range(FIRST_YEAR, LAST_YEAR + 1))


def spring_festival_date(year: int) -> dt.date:
    """First day of the first lunar month of `year`, for 1901..2100."""
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"year {year} outside {FIRST_YEAR}..{LAST_YEAR}")
    return _table()[year - FIRST_YEAR]


@lru_cache(maxsize=1)
def sf_day_table() -> np.ndarray:
    """int32 day numbers of SF(y); index `y - FIRST_YEAR`. Read-only."""
    arr = np.array([date_to_day(d) for d in _table()], dtype=np.int32)
    arr.setflags(write=False)
    return arr
