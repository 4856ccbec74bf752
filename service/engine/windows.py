"""Festival windows (SPEC 3): which year a day belongs to, and where each window's bars sit.

Everything here is keyed on the cached SF day table, so no date objects are built on the
hot path. Year 2100 exists in the table only to place positions late in 2099; its window
never holds bars, which is why the window tables below stop at 2099.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from service.calendar import FIRST_YEAR, LAST_BAR_YEAR, sf_day_table

__all__ = [
    "LAST_WINDOW_YEAR",
    "N_WINDOW_YEARS",
    "sf_window_days",
    "window_year_of",
    "year_filter_mask",
]

LAST_WINDOW_YEAR = LAST_BAR_YEAR  # a window holds bars, so none for 2100
N_WINDOW_YEARS = LAST_WINDOW_YEAR - FIRST_YEAR + 1


def sf_window_days() -> np.ndarray:
    """int64 SF day numbers of the window years 1901..2099 (index `y - 1901`)."""
    return _sf_window_days()


@lru_cache(maxsize=1)
def _sf_window_days() -> np.ndarray:
    sf = sf_day_table()[:N_WINDOW_YEARS].astype(np.int64)
    sf.setflags(write=False)
    return sf


@lru_cache(maxsize=64)
def window_ends(window_days: int) -> np.ndarray:
    """Last day of every window, for `searchsorted`; cached because W rarely changes."""
    ends = _sf_window_days() + window_days
    ends.setflags(write=False)
    return ends


def window_year_of(days: np.ndarray, window_days: int) -> np.ndarray:
    """The year 1901..2099 whose window `[SF(y)-W, SF(y)+W]` holds each day, else 0.

    Windows never overlap (W <= 175 < half the gap between festivals), so the first
    window ending on or after a day is the only one that can hold it.
    """
    d = np.asarray(days)
    idx = np.searchsorted(window_ends(window_days), d)
    sf = _sf_window_days()
    inside = idx < N_WINDOW_YEARS
    inside[inside] = sf[idx[inside]] - window_days <= d[inside]
    return np.where(inside, idx + FIRST_YEAR, 0).astype(np.int32)


@lru_cache(maxsize=64)
def year_filter_mask(years: frozenset[int] | None) -> np.ndarray:
    """bool per window year: does it pass the `years` filter (all pass when None)."""
    mask = np.zeros(N_WINDOW_YEARS, dtype=bool)
    if years is None:
        mask[:] = True
    else:
        picked = [y - FIRST_YEAR for y in years if FIRST_YEAR <= y <= LAST_WINDOW_YEAR]
        mask[picked] = True
    mask.setflags(write=False)
    return mask
