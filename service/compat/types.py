"""The original system's data types (SPEC 8), as the engine's results see them.

Attribute names and meanings are the original's, so user code that reads them runs
unchanged; what the numbers are is SPEC 3-4's (see docs/migrating.md): relative days
count trading days by default and prices are normalised to each year's own anchor
(the last close before the festival). The original's single `baseline_price` is kept
next to the anchors, as the original defined it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from service.engine import Pattern, PatternResult

__all__ = [
    "AlignedDataPoint",
    "AlignedTimeSeries",
    "Alignment",
    "SeasonalPattern",
    "SpringFestivalWindow",
]

Alignment = Literal["trading", "calendar"]

_PATTERN_FIELDS = (
    *("pattern_strength", "average_return_before", "average_return_after", "volatility_before"),
    *("volatility_after", "consistency_score", "confidence_level", "peak_day", "trough_day"),
)


@dataclass(frozen=True)
class SpringFestivalWindow:
    """One year's window `[SF - W, SF + W]` in calendar days, both ends included (SPEC 3)."""

    year: int
    spring_festival_date: dt.date
    start_date: dt.date
    end_date: dt.date
    window_days: int

    def contains_date(self, check_date: dt.date) -> bool:
        """Within the window, both ends included."""
        return self.start_date <= check_date <= self.end_date

    def days_from_spring_festival(self, check_date: dt.date) -> int:
        """Calendar days from the festival, negative before it."""
        return (check_date - self.spring_festival_date).days

    def relative_position(self, check_date: dt.date) -> float:
        """Calendar position in the window, -1.0 at its start to 1.0 at its end."""
        return self.days_from_spring_festival(check_date) / self.window_days


@dataclass(slots=True)
class AlignedDataPoint:
    """One bar of a festival window.

    `relative_day` is SPEC 3's k: with trading-day alignment (the default) the last bar
    before the festival is -1 and the first bar on or after it is +1; with calendar
    alignment it is the calendar distance (the festival day is 0). `normalized_price` is
    SPEC 4's r = 100 (close / anchor - 1), the anchor being the year's last close before
    the festival; in a window with no bar before the festival (no anchor, and a year
    that never counts in a pattern) it is relative to that window's first close.
    """

    original_date: dt.date
    relative_day: int
    spring_festival_date: dt.date
    year: int
    price: float
    volume: float | None = None
    normalized_price: float | None = None

    @property
    def is_before_spring_festival(self) -> bool:
        """`relative_day < 0`, as in the original: a pre bar of SPEC 3."""
        return self.relative_day < 0

    @property
    def is_after_spring_festival(self) -> bool:
        """`relative_day > 0`, as in the original. The festival day itself (k = 0, only
        with calendar alignment) is neither before nor after; with trading alignment a
        bar dated on the festival is k = +1, the post side where SPEC 3 puts it."""
        return self.relative_day > 0


@dataclass
class AlignedTimeSeries:
    """One symbol's window bars, every window that holds one, in date order.

    `years` are the windows that hold bars; the pattern analyses those of them that
    qualify (closed, bars on both sides, enough bars: SPEC 3), listed in
    `SeasonalPattern.years_analyzed`. `baseline_price` is the original's: the mean close
    of every valid bar of the frame, in a window or not (None when a caller builds a
    series without one). `latest_date` is the symbol's latest valid bar, in a window or
    not: it decides which windows have closed. `anchor_prices` holds each year's anchor
    (its last close before the festival), what `normalized_price` is relative to; a
    window without a bar before the festival has none (its points are relative to the
    window's first close, and the year never counts in a pattern).
    """

    symbol: str
    data_points: list[AlignedDataPoint]
    window_days: int
    years: list[int]
    baseline_price: float | None = None
    alignment: Alignment = "trading"
    latest_date: dt.date | None = None
    anchor_prices: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_points.sort(key=lambda p: p.original_date)

    def get_year_data(self, year: int) -> list[AlignedDataPoint]:
        """The points of one festival year, in date order."""
        return [p for p in self.data_points if p.year == year]

    def get_relative_day_data(self, relative_day: int) -> list[AlignedDataPoint]:
        """The points of every year at one relative day: one column of the curve."""
        return [p for p in self.data_points if p.relative_day == relative_day]

    def get_before_spring_festival(self) -> list[AlignedDataPoint]:
        """Every year's pre bars."""
        return [p for p in self.data_points if p.is_before_spring_festival]

    def get_after_spring_festival(self) -> list[AlignedDataPoint]:
        """Every year's post bars (the festival day included)."""
        return [p for p in self.data_points if p.is_after_spring_festival]


@dataclass(frozen=True)
class SeasonalPattern:
    """One symbol's SPEC 4 pattern under the original attribute names."""

    symbol: str
    years_analyzed: list[int]
    pattern_strength: float
    average_return_before: float
    average_return_after: float
    volatility_before: float
    volatility_after: float
    consistency_score: float
    confidence_level: float
    peak_day: int
    trough_day: int
    #: SPEC 6's value as the engine computed it (None: infinite, or not given).
    raw_volatility_ratio: float | None = None
    #: (k, mean_k, n_k) rows of SPEC 4's curve.
    curve: list[tuple[int, float, int]] = field(default_factory=list, repr=False)

    @property
    def volatility_ratio(self) -> float:
        """After / before volatility; `inf` where the service's output writes `null`.

        The engine's value when it computed this pattern; for a pattern built by user
        code (or read back) without one, SPEC 4's rule on the two volatilities, the
        original's too: after / before when before is above 0, else `inf` if after is
        above 0, else 1.0.
        """
        ratio = self._spec_ratio()
        return math.inf if ratio is None else ratio

    def _spec_ratio(self) -> float | None:
        """The ratio as SPEC 6 writes it (None: infinite); see `volatility_ratio`."""
        if self.raw_volatility_ratio is not None:
            return self.raw_volatility_ratio
        before, after = self.volatility_before, self.volatility_after
        if before > 0:
            return after / before
        return None if after > 0 else 1.0

    @property
    def is_bullish_before(self) -> bool:
        """The years rose on average into the festival (SPEC 4's average_return_before > 0)."""
        return self.average_return_before > 0

    @property
    def is_bullish_after(self) -> bool:
        """The years rose on average out of the festival (average_return_after > 0)."""
        return self.average_return_after > 0

    @classmethod
    def from_result(cls, result: PatternResult) -> SeasonalPattern:
        """The engine's result under the original names; ValueError without a pattern."""
        p = result.pattern
        if p is None:
            raise ValueError(f"{result.symbol}: no pattern (status {result.status})")
        ks, means, ns = result.curve_k.tolist(), result.curve_mean.tolist(), result.curve_n.tolist()
        return cls(
            symbol=result.symbol,
            years_analyzed=list(result.years),
            raw_volatility_ratio=p.volatility_ratio,
            curve=list(zip(ks, means, ns, strict=True)),
            **{name: getattr(p, name) for name in _PATTERN_FIELDS},
        )

    def to_result(self) -> PatternResult:
        """Back to the engine's type, so SPEC 5's signal is the engine's own function."""
        pattern = Pattern(
            volatility_ratio=self._spec_ratio(),
            **{name: getattr(self, name) for name in _PATTERN_FIELDS},
        )
        rows = self.curve
        return PatternResult(
            symbol=self.symbol,
            status="ok",
            years=tuple(self.years_analyzed),
            pattern=pattern,
            curve_k=np.array([k for k, _, _ in rows], dtype=np.int32),
            curve_mean=np.array([m for _, m, _ in rows], dtype=np.float64),
            curve_n=np.array([n for _, _, n in rows], dtype=np.int32),
        )
