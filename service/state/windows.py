"""Window bounds for the store (SPEC 3): which window year a day falls in, when one closes.

A private twin of `service.engine.windows`, written while the engine was still in
progress so the store would not depend on a moving target; a unit test checks that both
agree for every day and several W. Everything is keyed on the cached SF day table, so no
date objects are built on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service.calendar import FIRST_YEAR, sf_day_table

__all__ = ["LAST_WINDOW_YEAR", "WindowTable", "frozen", "window_table"]

LAST_WINDOW_YEAR = 2099  # 2100 is in the SF table only for positions; its window holds nothing
_N_YEARS = LAST_WINDOW_YEAR - FIRST_YEAR + 1


def frozen(a: np.ndarray) -> np.ndarray:
    """Mark an array read-only: stored arrays are shared with snapshots, never mutated."""
    a.setflags(write=False)
    return a


@dataclass(frozen=True, slots=True)
class WindowTable:
    """Window bounds `[SF(y) - W, SF(y) + W]` of the years 1901..2099, int64 day numbers."""

    window_days: int
    starts: np.ndarray
    ends: np.ndarray

    def year_of(self, days: np.ndarray) -> np.ndarray:
        """int32 window year of each day, 0 outside every window.

        Windows never overlap (W <= 175), so the first window ending on or after a day is
        the only one that can hold it.
        """
        d = days.astype(np.int64, copy=False)
        idx = np.searchsorted(self.ends, d, side="left")
        inside = idx < _N_YEARS
        inside[inside] &= self.starts[idx[inside]] <= d[inside]
        return np.where(inside, idx + FIRST_YEAR, 0).astype(np.int32)

    def n_closed(self, latest: np.ndarray) -> np.ndarray:
        """How many windows are closed (latest > SF(y) + W) at each latest."""
        return np.searchsorted(self.ends, latest, side="left")

    def bounds(self, year: int) -> tuple[int, int]:
        """First and last day of the window of `year`."""
        i = year - FIRST_YEAR
        return int(self.starts[i]), int(self.ends[i])


@lru_cache(maxsize=8)
def window_table(window_days: int) -> WindowTable:
    """Cached per W: W is fixed for a run, and the table is shared by every store."""
    sf = sf_day_table()[:_N_YEARS].astype(np.int64)
    return WindowTable(window_days, frozen(sf - window_days), frozen(sf + window_days))
