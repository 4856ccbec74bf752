"""Window bounds for the store (SPEC 3): which window year a day falls in, when one closes.

A thin view over `service.engine.windows` (one definition of a window for the engine and
the store), plus the store's own questions: how many windows a `latest` has closed, and
one year's bounds. Everything is keyed on the cached SF day table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service.calendar import FIRST_YEAR
from service.engine.windows import LAST_WINDOW_YEAR, sf_window_days, window_year_of

__all__ = ["LAST_WINDOW_YEAR", "WindowTable", "frozen", "window_table"]


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
        """int32 window year of each day, 0 outside every window."""
        return window_year_of(days, self.window_days)

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
    sf = sf_window_days()
    return WindowTable(window_days, frozen(sf - window_days), frozen(sf + window_days))
