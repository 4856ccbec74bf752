"""A deliberately plain, per-row implementation of SPEC sections 3-5.

Why it exists: it is both the benchmark baseline (the original system's shape: loop
over DataFrame rows, one Python object per aligned point, `statistics` math) and the
test oracle for the vectorised engine. It therefore favours obviousness over speed,
follows the SPEC sentence by sentence, and must never import `service.engine`'s
implementation -- only the calendar and the output dataclasses.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from service.calendar import date_to_day, day_to_date, spring_festival_date
from service.engine.types import EngineParams, Pattern, PatternResult, Position, Signal

__all__ = ["AlignedPoint", "baseline_analyze", "baseline_position_and_signal"]

_FIRST_WINDOW_YEAR = 1901
_LAST_WINDOW_YEAR = 2099  # SPEC 3: 2100 only serves positions, never a window


@dataclass(frozen=True, slots=True)
class AlignedPoint:
    """One bar of one qualifying year, placed on the festival-relative axis."""

    year: int
    k: int
    date: dt.date
    close: float
    r: float


def _as_date(value: Any) -> dt.date:
    """Accept the date shapes a user's DataFrame may hold (date, Timestamp, str)."""
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).date()
    return dt.date.fromisoformat(str(value))


def _window_year(d: dt.date, w: int) -> int | None:
    """The year whose window [SF(y)-W, SF(y)+W] holds `d`, if any (windows never overlap)."""
    for y in (d.year, d.year + 1):
        if _FIRST_WINDOW_YEAR <= y <= _LAST_WINDOW_YEAR:
            sf = spring_festival_date(y)
            if sf - dt.timedelta(days=w) <= d <= sf + dt.timedelta(days=w):
                return y
    return None


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _pearson(xs: list[float], ys: list[float]) -> float:
    """Textbook Pearson correlation; callers guarantee both sides vary."""
    mx = statistics.fmean(xs)
    my = statistics.fmean(ys)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy)


def _insufficient(symbol: str, years: tuple[int, ...]) -> PatternResult:
    return PatternResult(
        symbol=symbol,
        status="insufficient_history",
        years=years,
        pattern=None,
        curve_k=np.zeros(0, dtype=np.int32),
        curve_mean=np.zeros(0, dtype=np.float64),
        curve_n=np.zeros(0, dtype=np.int32),
    )


def baseline_analyze(symbol: str, frame: pd.DataFrame, params: EngineParams) -> PatternResult:
    """SPEC 3-4 for one symbol from a DataFrame with columns `date` and `close`.

    Rows may be in any order; a later row for the same date replaces an earlier one
    (a correction, SPEC 1). `latest` is the greatest date of any row, in a window or not.
    """
    w = params.window_days
    # -- SPEC 1: corrections, then latest(s) over every bar.
    closes_by_date: dict[dt.date, float] = {}
    for row in frame.itertuples(index=False):
        closes_by_date[_as_date(row.date)] = float(row.close)  # type: ignore[arg-type]
    if not closes_by_date:
        return _insufficient(symbol, ())
    latest = max(closes_by_date)

    # -- SPEC 3: bucket bars into windows.
    windows: dict[int, list[tuple[dt.date, float]]] = defaultdict(list)
    for d in sorted(closes_by_date):
        y = _window_year(d, w)
        if y is not None:
            windows[y].append((d, closes_by_date[d]))

    qualifying: list[int] = []
    for y in sorted(windows):
        sf = spring_festival_date(y)
        if not latest > sf + dt.timedelta(days=w):
            continue  # open window
        bars = windows[y]
        n_pre = sum(1 for d, _ in bars if d < sf)
        n_post = len(bars) - n_pre
        if n_pre < 1 or n_post < 1 or n_pre + n_post < params.min_bars_per_year:
            continue
        if params.years is not None and y not in params.years:
            continue
        qualifying.append(y)
    years = tuple(qualifying)
    if len(years) < params.min_years:
        return _insufficient(symbol, years)

    # -- SPEC 3: alignment, anchors, normalised paths, daily returns.
    points: list[AlignedPoint] = []
    pre_returns: list[float] = []
    post_returns: list[float] = []
    pre_by_year: dict[int, float] = {}
    post_by_year: dict[int, float] = {}
    total_bars = 0
    for y in years:
        sf = spring_festival_date(y)
        bars = windows[y]
        pre = [(d, c) for d, c in bars if d < sf]
        post = [(d, c) for d, c in bars if d >= sf]
        anchor = pre[-1][1]
        total_bars += len(bars)
        for i, (d, c) in enumerate(bars):
            if params.alignment == "trading":
                k = i - len(pre) if d < sf else i - len(pre) + 1
            else:
                k = (d - sf).days
            points.append(AlignedPoint(y, k, d, c, 100.0 * (c / anchor - 1.0)))
            if i >= 1:
                q = 100.0 * (c / bars[i - 1][1] - 1.0)
                (pre_returns if d < sf else post_returns).append(q)
        pre_by_year[y] = 100.0 * (anchor / pre[0][1] - 1.0)
        post_by_year[y] = 100.0 * (post[-1][1] / anchor - 1.0)

    # -- SPEC 4: curve.
    r_by_k: dict[int, list[float]] = defaultdict(list)
    r_by_year: dict[int, dict[int, float]] = defaultdict(dict)
    for p in points:
        r_by_k[p.k].append(p.r)
        r_by_year[p.year][p.k] = p.r
    curve = [(k, statistics.fmean(r_by_k[k]), len(r_by_k[k])) for k in sorted(r_by_k)]
    valid = [(k, mean, n) for k, mean, n in curve if n >= 2]
    if not valid:
        return _insufficient(symbol, years)

    avg_before = statistics.fmean(pre_by_year[y] for y in years)
    avg_after = statistics.fmean(post_by_year[y] for y in years)
    vol_before = statistics.stdev(pre_returns) if len(pre_returns) >= 2 else 0.0
    vol_after = statistics.stdev(post_returns) if len(post_returns) >= 2 else 0.0
    if vol_before == 0.0:
        vol_ratio: float | None = None if vol_after > 0.0 else 1.0
    else:
        vol_ratio = vol_after / vol_before

    # Only days at least half of the years share, when there are any (SPEC 4);
    # max()/min() return the first extreme in ascending-k order: ties go to the smallest k.
    half = max(2, math.ceil(len(years) / 2))
    among = [(k, mean, n) for k, mean, n in valid if n >= half] or valid
    peak_day = max(among, key=lambda t: t[1])[0]
    trough_day = min(among, key=lambda t: t[1])[0]

    agree = sum(1 for y in years if _sign(pre_by_year[y]) == _sign(avg_before))
    agree += sum(1 for y in years if _sign(post_by_year[y]) == _sign(avg_after))
    consistency = agree / (2 * len(years))

    correlations: list[float] = []
    for a, b in itertools.combinations(years, 2):
        common = sorted(set(r_by_year[a]) & set(r_by_year[b]))
        if len(common) < 5:
            continue
        xs = [r_by_year[a][k] for k in common]
        ys = [r_by_year[b][k] for k in common]
        if len(set(xs)) < 2 or len(set(ys)) < 2:
            continue  # zero variance on a side: correlation undefined, pair skipped
        correlations.append(_pearson(xs, ys))
    strength = max(0.0, statistics.fmean(correlations)) if correlations else 0.0

    expected = 2 * w * 5 / 7
    density = min(1.0, total_bars / (len(years) * expected))
    significance = sum(1 for _, _, n in valid if n >= 3) / len(valid)
    confidence = 0.4 * min(1.0, len(years) / 10) + 0.3 * density + 0.3 * significance

    pattern = Pattern(
        pattern_strength=strength,
        average_return_before=avg_before,
        average_return_after=avg_after,
        volatility_before=vol_before,
        volatility_after=vol_after,
        volatility_ratio=vol_ratio,
        consistency_score=consistency,
        confidence_level=confidence,
        peak_day=peak_day,
        trough_day=trough_day,
    )
    return PatternResult(
        symbol=symbol,
        status="ok",
        years=years,
        pattern=pattern,
        curve_k=np.array([k for k, _, _ in curve], dtype=np.int32),
        curve_mean=np.array([m for _, m, _ in curve], dtype=np.float64),
        curve_n=np.array([n for _, _, n in curve], dtype=np.int32),
    )


def _phase(days: int, w: int) -> str:
    if abs(days) > w:
        return "normal_period"
    if days > 15:
        return "approaching"
    if days >= 1:
        return "pre_festival"
    if days == 0:
        return "festival_day"
    if days >= -14:
        return "post_festival"
    return "recovery"


def _window_day(as_of: dt.date, params: EngineParams, bar_dates: Iterable[Any]) -> int | None:
    """SPEC 5 `window_day`, sentence by sentence, one day and one bar at a time."""
    w = params.window_days
    year = _window_year(as_of, w)
    if year is None:
        return None
    sf = spring_festival_date(year)
    if params.alignment == "calendar":
        return (as_of - sf).days
    if as_of < sf:
        weekdays, d = 0, as_of
        while d < sf:
            weekdays += d.weekday() < 5
            d += dt.timedelta(days=1)
        return -weekdays
    return len({d for d in map(_as_date, bar_dates) if sf <= d <= as_of})


def baseline_position_and_signal(
    latest_day: int,
    result: PatternResult,
    params: EngineParams,
    bar_dates: Iterable[Any] = (),
) -> tuple[Position, Signal | None]:
    """SPEC 5, relative to as_of = `latest_day` (a day number); `bar_dates` are the
    symbol's bar dates, which `window_day` counts in trading alignment after the festival."""
    w = params.window_days
    as_of = day_to_date(latest_day)
    sf = spring_festival_date(as_of.year)
    if as_of > sf + dt.timedelta(days=w):
        sf = spring_festival_date(as_of.year + 1)
    days = (sf - as_of).days
    phase = _phase(days, w)
    position = Position(
        spring_festival_day=date_to_day(sf),
        days_to_spring_festival=days,
        relative_day=-days,
        in_window=abs(days) <= w,
        phase=phase,
        window_day=_window_day(as_of, params, bar_dates),
    )
    pattern = result.pattern
    if result.status != "ok" or pattern is None:
        return position, None

    kind, strength, action = "neutral", 0.0, "hold"
    if phase in ("approaching", "pre_festival", "post_festival", "recovery"):
        before = phase in ("approaching", "pre_festival")
        avg = pattern.average_return_before if before else pattern.average_return_after
        if avg > 0 and pattern.pattern_strength > 0.5:
            kind = "bullish"
        elif avg < -2.0:
            kind = "bearish"
        if kind != "neutral":
            strength = pattern.pattern_strength * pattern.confidence_level
            if kind == "bullish":
                action = "buy" if strength > 0.6 else "watch"
            else:
                action = "sell" if strength > 0.6 else "reduce"
    warning = pattern.volatility_ratio is None or pattern.volatility_ratio > 2
    if warning:
        strength *= 0.8
    return position, Signal(
        signal=kind, strength=strength, action=action, volatility_warning=warning
    )
