"""`SpringFestivalAlignmentEngine`: the original's one-stock-at-a-time API on our engine.

Why the pattern is computed from the aligned series' dates and closes, not from its
relative days: `identify_seasonal_patterns` turns the series back into `SymbolWindows`
and calls `analyze_patterns`, the very function the parallel engine, `sfa replay` and
`sfa run` use, so a pattern found through this door equals the one the service
publishes for the same bars. The relative days and normalised prices in the series are
for the caller to read; they are checked against the engine's curve in the tests.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from service.calendar import FIRST_BAR_DAY, FIRST_YEAR, LAST_BAR_DAY, date_to_day, day_to_date
from service.compat.calendar import ChineseCalendar, to_date
from service.compat.frames import clean_bars, column, failure_reason, numbers, symbol_of
from service.compat.types import (
    AlignedDataPoint,
    AlignedTimeSeries,
    Alignment,
    SeasonalPattern,
    SpringFestivalWindow,
)
from service.engine import (
    EngineParams,
    SymbolWindows,
    analyze_patterns,
    position_of,
    signal_of,
    window_year_of,
)
from service.engine.windows import sf_window_days

__all__ = ["PHASES", "SpringFestivalAlignmentEngine"]

log = logging.getLogger(__name__)

#: SPEC 5's phases, in the order of the cycle.
PHASES = (
    "normal_period",
    "approaching",
    "pre_festival",
    "festival_day",
    "post_festival",
    "recovery",
)
_BEFORE = frozenset({"approaching", "pre_festival"})


def _dates(days: np.ndarray) -> list[dt.date]:
    return list(np.asarray(days, dtype="datetime64[D]").astype(object))


class SpringFestivalAlignmentEngine:
    """Align one stock's frame on the festivals, find its pattern, place a date in the
    cycle and turn a pattern into a signal (SPEC 3-5)."""

    def __init__(self, window_days: int = 60, *, alignment: Alignment = "trading") -> None:
        if not 1 <= int(window_days) <= 175:
            raise ValueError("window_days must lie in 1..175 (SPEC 3)")
        if alignment not in ("trading", "calendar"):
            raise ValueError("alignment must be 'trading' or 'calendar' (SPEC 3)")
        self.window_days = int(window_days)
        self.alignment: Alignment = alignment
        self.chinese_calendar = ChineseCalendar()
        self.min_years = EngineParams().min_years

    def _params(self, years: Iterable[int] | None = None) -> EngineParams:
        chosen = frozenset(int(y) for y in years) if years is not None else None
        return EngineParams(window_days=self.window_days, alignment=self.alignment, years=chosen)

    def create_spring_festival_windows(self, years: Iterable[int]) -> list[SpringFestivalWindow]:
        """The window of each year, in the order given; years past 1901-2100 are skipped
        with a warning, as the original skipped years missing from its table."""
        span = dt.timedelta(days=self.window_days)
        windows: list[SpringFestivalWindow] = []
        for year in years:
            festival = self.chinese_calendar.get_spring_festival(year)
            if festival is None:
                log.warning("no Spring Festival date for year %s (calendar: 1901-2100)", year)
                continue
            windows.append(
                SpringFestivalWindow(
                    int(year), festival, festival - span, festival + span, span.days
                )
            )
        return windows

    def align_to_spring_festival(
        self,
        stock_data: pd.DataFrame,
        years: Iterable[int] | None = None,
        *,
        symbol: str | None = None,
    ) -> AlignedTimeSeries:
        """The frame's valid bars in festival windows (those of `years` when given).

        The frame is read as the service reads bars (SPEC 1 names or the original
        `stock_code`/`trade_date`/`close_price`/... names; invalid rows dropped, a later
        row for a date wins). The symbol is `symbol`, else the frame's one stock code.
        Raises ValueError when the frame has no valid bar at all.
        """
        cleaned = clean_bars(stock_data)
        if isinstance(cleaned, str):
            raise ValueError(cleaned)
        name = symbol if symbol is not None else symbol_of(stock_data)
        if name is None:
            raise ValueError("no stock_code (or symbol) column: pass symbol=")
        latest = day_to_date(int(cleaned.days[-1]))
        w = self.window_days
        year_of = window_year_of(cleaned.days, w)
        keep = year_of != 0
        if years is not None:
            keep &= np.isin(year_of, np.fromiter((int(y) for y in years), dtype=np.int64))
        days = cleaned.days[keep].astype(np.int64)
        closes = cleaned.closes[keep]
        year = year_of[keep].astype(np.int64)
        vol_col = column(stock_data, "volume")
        volumes = (
            numbers(vol_col)[cleaned.rows[keep]]
            if vol_col is not None
            else np.full(days.shape[0], np.nan)
        )
        if days.shape[0] == 0:
            return AlignedTimeSeries(str(name), [], w, [], self.alignment, latest, {})

        sf = sf_window_days()[year - FIRST_YEAR]
        before = days < sf
        # Runs of one year: days ascend, so each year's bars are contiguous, pre first.
        run_years, first, count = np.unique(year, return_index=True, return_counts=True)
        n_pre = np.add.reduceat(before.astype(np.int64), first)
        at = np.arange(days.shape[0]) - np.repeat(first, count)  # position within its year
        if self.alignment == "trading":  # SPEC 3: pre bars -n_pre..-1, post bars 1..n_post
            k = at - np.repeat(n_pre, count) + np.where(before, 0, 1)
        else:
            k = days - sf
        has_anchor = n_pre > 0
        anchor_at = first + n_pre - 1
        anchors = {
            int(y): float(closes[i])
            for y, i, ok in zip(
                run_years.tolist(), anchor_at.tolist(), has_anchor.tolist(), strict=True
            )
            if ok
        }
        anchor = np.repeat(np.where(has_anchor, closes[np.maximum(anchor_at, 0)], np.nan), count)
        normalized = (closes / anchor - 1.0) * 100.0  # SPEC 4's r, as the engine computes it

        dates, sf_dates = _dates(days), _dates(sf)
        points = [
            AlignedDataPoint(
                original_date=dates[i],
                relative_day=kk,
                spring_festival_date=sf_dates[i],
                year=yy,
                price=cc,
                volume=None if vv != vv else vv,
                normalized_price=None if rr != rr else rr,
            )
            for i, (kk, yy, cc, vv, rr) in enumerate(
                zip(
                    k.tolist(),
                    year.tolist(),
                    closes.tolist(),
                    volumes.tolist(),
                    normalized.tolist(),
                    strict=True,
                )
            )
        ]
        return AlignedTimeSeries(
            str(name), points, w, run_years.tolist(), self.alignment, latest, anchors
        )

    def identify_seasonal_patterns(self, aligned_data: AlignedTimeSeries) -> SeasonalPattern:
        """SPEC 4's pattern of the series' bars, by the engine (this engine's window and
        alignment); ValueError with the parallel engine's reason when there is none."""
        points = aligned_data.data_points
        days = np.fromiter((date_to_day(to_date(p.original_date)) for p in points), np.int64)
        closes = np.fromiter((p.price for p in points), np.float64, count=len(points))
        if not np.all(np.isfinite(closes) & (closes > 0)):
            raise ValueError("every price must be a finite number > 0 (SPEC 1)")
        if days.shape[0] and not (days.min() >= FIRST_BAR_DAY and days.max() <= LAST_BAR_DAY):
            raise ValueError("every date must lie in 1901-01-01..2099-12-31 (SPEC 1)")
        bars = pd.Series(closes, index=days)
        bars = bars[~bars.index.duplicated(keep="last")].sort_index()
        days = bars.index.to_numpy(dtype=np.int64)
        prices: np.ndarray = bars.to_numpy(dtype=np.float64)
        keep = window_year_of(days, self.window_days) != 0
        # latest(s) closes windows (SPEC 3); it is never before the series' last bar.
        latest = FIRST_BAR_DAY
        if aligned_data.latest_date is not None:
            latest = date_to_day(to_date(aligned_data.latest_date))
        if days.shape[0]:
            latest = max(latest, int(days[-1]))
        item = SymbolWindows(
            str(aligned_data.symbol), days[keep].astype(np.int32), prices[keep], latest
        )
        params = self._params()
        result = analyze_patterns([item], params)[0]
        if result.status != "ok" or result.pattern is None:
            raise ValueError(failure_reason(result, params))
        return SeasonalPattern.from_result(result)

    def get_current_position(self, symbol: str, current_date: Any = None) -> dict[str, Any]:
        """Where `current_date` (default today) lies in the festival cycle (SPEC 5).

        The festival is SPEC 5's S*: the first whose window has not ended by the date,
        so a December date already points at the coming festival (the original always
        took the festival of the date's calendar year).
        """
        day = to_date(current_date) if current_date is not None else dt.date.today()
        number = date_to_day(day)
        if not FIRST_BAR_DAY <= number <= LAST_BAR_DAY:
            raise ValueError(f"current_date {day} outside 1901-01-01..2099-12-31")
        position = position_of(number, self.window_days)
        return {
            "symbol": symbol,
            "current_date": day,
            "spring_festival_date": day_to_date(position.spring_festival_day),
            "days_to_spring_festival": position.days_to_spring_festival,
            "position": position.phase,
            "in_analysis_window": position.in_window,
            "relative_day": position.relative_day,
        }

    def generate_trading_signals(
        self, pattern: SeasonalPattern, current_position: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """SPEC 5's signal for `pattern` in the phase of `current_position` (default:
        today's position for the pattern's symbol), by the engine's `signal_of`."""
        if current_position is None:
            current_position = self.get_current_position(pattern.symbol)
        phase = current_position.get("position")
        if phase not in PHASES:
            raise ValueError(f"unknown position {phase!r}; expected one of {', '.join(PHASES)}")
        signal = signal_of(pattern.to_result(), str(phase))
        assert signal is not None  # an `ok` pattern always has one
        return {
            "signal": signal.signal,
            "strength": signal.strength,
            "reason": _reason(pattern, str(phase), signal.signal, signal.volatility_warning),
            "recommended_action": signal.action,
            "pattern_strength": pattern.pattern_strength,
            "confidence_level": pattern.confidence_level,
            "volatility_warning": signal.volatility_warning,
        }


def _reason(pattern: SeasonalPattern, phase: str, kind: str, warning: bool) -> str:
    """The signal in words; the numbers themselves come from the engine."""
    if phase == "normal_period":
        text = "Outside the Spring Festival analysis window"
    elif phase == "festival_day":
        text = "Spring Festival day: markets are closed"
    else:
        side = "before" if phase in _BEFORE else "after"
        avg = pattern.average_return_before if side == "before" else pattern.average_return_after
        if kind == "bullish":
            text = f"Historical pattern shows {avg:+.1f}% average return {side} the festival"
        elif kind == "bearish":
            text = f"Historical pattern shows {avg:.1f}% average decline {side} the festival"
        else:
            text = (
                f"No clear pattern {side} the festival (average {avg:+.1f}%, "
                f"strength {pattern.pattern_strength:.2f})"
            )
    if warning:
        ratio = pattern.volatility_ratio
        text += f" (high volatility: {ratio:.1f}x)" if np.isfinite(ratio) else " (high volatility)"
    return text
