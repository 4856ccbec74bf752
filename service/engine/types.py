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
    "PairCache",
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
class PairCache:
    """What `pattern_strength` learnt about one symbol's year pairs, for the next analysis.

    Why pairs and not sums: a pair's correlation and whether it counts depend only on its
    two year rows of the cube, so a year whose row is unchanged keeps every pair with
    another unchanged year. A new or corrected year then costs Y pairs, not Y(Y-1)/2.
    9 bytes per pair (the float and the flag) is the least that reproduces the mean bit
    for bit; the six sums behind a pair would take 48.

    Why fingerprints decide, not the caller: whatever changed a row (a correction, a new
    bar, another W or alignment) changes its fingerprint, so a stale cache costs only
    recomputation, never a wrong answer (short of a 64-bit fingerprint collision between
    the old and new row of one year). `years` int16 ascending (the qualifying years),
    `fingerprints` uint64 per year (see `strength.fingerprints`), `corr` float64 (0.0
    where the pair does not count) and `counts` bool per pair, in `np.triu_indices`
    order of `years`.
    """

    years: np.ndarray
    fingerprints: np.ndarray
    corr: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class SymbolWindows:
    """One symbol's bars inside windows: what travels to a Dask worker.

    `days` int32 strictly increasing, `closes` float64 > 0, same length; every day lies
    inside the window of some year 1901..2099. `latest` is latest(s) as a day number
    (it may lie outside every window). `prior` is the pair cache of the symbol's last
    result, if any: it only saves work, the result is the same without it.
    """

    symbol: str
    days: np.ndarray
    closes: np.ndarray
    latest: int
    prior: PairCache | None = None


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
    all empty (and `pattern` None) when status is insufficient_history. `pairs` is None
    when no pair was computed (fewer than `max(min_years, 2)` years).
    """

    symbol: str
    status: Status
    years: tuple[int, ...]
    pattern: Pattern | None
    curve_k: np.ndarray
    curve_mean: np.ndarray
    curve_n: np.ndarray
    pairs: PairCache | None = None


@dataclass(frozen=True, slots=True)
class Position:
    """SPEC 5 position relative to as_of = latest(s). `spring_festival_day` is a day number.

    `window_day` is latest(s) on the curve's axis (trading or calendar days from the
    festival, as `curve`, `peak_day` and `trough_day` count), None outside every window;
    the other fields count calendar days.
    """

    spring_festival_day: int
    days_to_spring_festival: int
    relative_day: int
    in_window: bool
    phase: str
    window_day: int | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    signal: str
    strength: float
    action: str
    volatility_warning: bool
