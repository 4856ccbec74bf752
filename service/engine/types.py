"""Plain data in and out of the engine (SPEC 3-6). Frozen, picklable, no vendor types.

Dates are int day numbers (days since 1970-01-01, see `service.calendar.date_to_day`)
so that state, Dask transfers and the engine share one compact unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "ENGINE_VERSION",
    "EngineParams",
    "Pattern",
    "PatternResult",
    "Position",
    "Signal",
    "SymbolWindows",
]

ENGINE_VERSION = "1.0.0"

Alignment = Literal["trading", "calendar"]
Status = Literal["ok", "insufficient_history"]


@dataclass(frozen=True, slots=True)
class EngineParams:
    """The few numbers the engine needs; built from Settings, never from the environment."""

    window_days: int = 60
    min_years: int = 3
    min_bars_per_year: int = 10
    alignment: Alignment = "trading"
    years: frozenset[int] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class SymbolWindows:
    """One symbol's bars inside windows: what travels to a Dask worker.

    `days` int32 strictly increasing, `closes` float64 > 0, same length; every day lies
    inside the window of some year 1901..2099. `latest` is latest(s) as a day number
    (it may lie outside every window).
    """

    symbol: str
    days: np.ndarray
    closes: np.ndarray
    latest: int


@dataclass(frozen=True, slots=True)
class Pattern:
    """SPEC 4 statistics. `volatility_ratio` None means infinite (SPEC 6 writes null)."""

    pattern_strength: float
    average_return_before: float
    average_return_after: float
    volatility_before: float
    volatility_after: float
    volatility_ratio: float | None
    consistency_score: float
    confidence_level: float
    peak_day: int
    trough_day: int


@dataclass(frozen=True, slots=True, eq=False)
class PatternResult:
    """The heavy, cacheable half of an analysis: depends only on closed windows.

    `curve_k` int32, `curve_mean` float64, `curve_n` int32, same length, ascending k;
    all empty (and `pattern` None) when status is insufficient_history.
    """

    symbol: str
    status: Status
    years: tuple[int, ...]
    pattern: Pattern | None
    curve_k: np.ndarray
    curve_mean: np.ndarray
    curve_n: np.ndarray


@dataclass(frozen=True, slots=True)
class Position:
    """SPEC 5 position relative to as_of = latest(s). `spring_festival_day` is a day number."""

    spring_festival_day: int
    days_to_spring_festival: int
    relative_day: int
    in_window: bool
    phase: str


@dataclass(frozen=True, slots=True)
class Signal:
    signal: str
    strength: float
    action: str
    volatility_warning: bool
