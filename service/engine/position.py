"""Position and signal (SPEC 5): the cheap half, recomputed on every emission.

Why scalar Python and not numpy: it runs once per emitted result, and for one value a
`bisect` over a cached list of ints beats any array call. The SF day list is built once
per window size.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache

import numpy as np

from service.calendar import FIRST_BAR_DAY, LAST_BAR_DAY, sf_day_table
from service.engine.types import Alignment, EngineParams, PatternResult, Position, Signal

__all__ = [
    "bars_since_festival",
    "festival_of_window",
    "phase_of",
    "position_and_signal",
    "position_of",
    "signal_of",
]

_NEUTRAL_PHASES = frozenset({"normal_period", "festival_day"})
_BEFORE_PHASES = frozenset({"approaching", "pre_festival"})


@lru_cache(maxsize=64)
def _festivals(window_days: int) -> tuple[list[int], list[int]]:
    """SF days 1901..2100 and the last day of each window, as plain ints for `bisect`."""
    sf: list[int] = sf_day_table().tolist()
    return sf, [d + window_days for d in sf]


def phase_of(days_to_festival: int, window_days: int) -> str:
    """SPEC 5 phase from the days still to go to S* (negative once it has passed)."""
    if days_to_festival > window_days or days_to_festival < -window_days:
        return "normal_period"
    if days_to_festival > 15:
        return "approaching"
    if days_to_festival >= 1:
        return "pre_festival"
    if days_to_festival == 0:
        return "festival_day"
    if days_to_festival >= -14:
        return "post_festival"
    return "recovery"


def position_and_signal(
    latest_day: int,
    result: PatternResult | None,
    params: EngineParams,
    days: np.ndarray | None = None,
) -> tuple[Position, Signal | None]:
    """SPEC 5 relative to as_of = `latest_day` (a day number, 1901-01-01..2099-12-31).

    `days`: the symbol's held window days (ascending), which `window_day` needs in
    trading alignment on and after the festival; without them it counts none."""
    post = 0 if days is None else bars_since_festival(days, latest_day, params.window_days)
    position = position_of(latest_day, params.window_days, params.alignment, post)
    return position, signal_of(result, position.phase)


def festival_of_window(latest_day: int, window_days: int) -> int | None:
    """SF(y) of the window [SF(y) - W, SF(y) + W] (y in 1901..2099) holding the day, or
    None when it lies in none (SPEC 3: 2100's window holds no bar)."""
    sf, ends = _festivals(window_days)
    i = bisect_left(ends, latest_day)
    if i >= len(sf) - 1 or latest_day < sf[i] - window_days:
        return None
    return sf[i]


def bars_since_festival(days: np.ndarray, latest_day: int, window_days: int) -> int:
    """How many of `days` (a symbol's held bar days, ascending) lie in SF(y)..latest,
    the festival of latest's window: 0 before the festival or outside every window."""
    festival = festival_of_window(latest_day, window_days)
    if festival is None or latest_day < festival:
        return 0
    first = np.searchsorted(days, festival, side="left")
    return int(np.searchsorted(days, latest_day, side="right") - first)


def _window_day(latest_day: int, window_days: int, alignment: Alignment, post: int) -> int | None:
    """SPEC 5 `window_day`. Before the festival in trading alignment the days still to
    come are unknown, so weekdays stand for them (the curve numbers pre bars the same
    way back from the festival); from the festival on, the symbol's own bars count."""
    festival = festival_of_window(latest_day, window_days)
    if festival is None:
        return None
    if alignment == "calendar":
        return latest_day - festival
    if latest_day < festival:
        begin, end = np.datetime64(latest_day, "D"), np.datetime64(festival, "D")
        return -int(np.busday_count(begin, end))
    return post


@lru_cache(maxsize=4096)
def position_of(
    latest_day: int, window_days: int, alignment: Alignment = "trading", post_bars: int = 0
) -> Position:
    """SPEC 5 position; it depends on the day (and, for `window_day` in trading alignment
    on or after the festival, `post_bars`: `bars_since_festival`), so the symbols of a
    batch, which mostly share their latest day, share a few cached objects.

    S* is the festival of the first window that has not ended by as_of: the window of
    SF(year - 1) always ends by August, so this is SF(year) or, past its window,
    SF(year + 1), exactly as the SPEC words it.
    """
    if not FIRST_BAR_DAY <= latest_day <= LAST_BAR_DAY:
        raise ValueError(f"as_of day {latest_day} outside 1901-01-01..2099-12-31")
    sf, ends = _festivals(window_days)
    festival = sf[bisect_left(ends, latest_day)]
    days = festival - latest_day
    phase = phase_of(days, window_days)
    return Position(
        spring_festival_day=festival,
        days_to_spring_festival=days,
        relative_day=-days,
        in_window=phase != "normal_period",
        phase=phase,
        window_day=_window_day(latest_day, window_days, alignment, post_bars),
    )


def signal_of(result: PatternResult | None, phase: str) -> Signal | None:
    """SPEC 5 signal of a pattern in a phase; None without an `ok` pattern."""
    if result is None or result.status != "ok" or result.pattern is None:
        return None
    p = result.pattern
    kind, strength, action = "neutral", 0.0, "hold"
    if phase not in _NEUTRAL_PHASES:
        avg = p.average_return_before if phase in _BEFORE_PHASES else p.average_return_after
        if avg > 0 and p.pattern_strength > 0.5:
            strength = p.pattern_strength * p.confidence_level
            kind, action = "bullish", ("buy" if strength > 0.6 else "watch")
        elif avg < -2.0:
            strength = p.pattern_strength * p.confidence_level
            kind, action = "bearish", ("sell" if strength > 0.6 else "reduce")
    warning = p.volatility_ratio is None or p.volatility_ratio > 2
    if warning:
        strength *= 0.8
    return Signal(kind, strength, action, warning)
