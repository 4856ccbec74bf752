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
from service.settings import load_settings

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
#: The original's answer for a date the calendar cannot place (no festival to measure from).
UNKNOWN = "unknown"


def _dates(days: np.ndarray) -> list[dt.date]:
    return list(np.asarray(days, dtype="datetime64[D]").astype(object))


class SpringFestivalAlignmentEngine:
    """Align one stock's frame on the festivals, find its pattern, place a date in the
    cycle and turn a pattern into a signal (SPEC 3-5)."""

    def __init__(
        self,
        window_days: int | None = 60,
        *,
        alignment: Alignment = "trading",
        min_years: int | None = None,
    ) -> None:
        """`window_days` None reads SFA_WINDOW_DAYS and `min_years` None reads
        SFA_MIN_YEARS (3 by default), as the original read both from its settings.
        `min_years` stays an attribute: setting it later takes effect on the next call."""
        settings = load_settings() if window_days is None or min_years is None else None
        if window_days is None:
            assert settings is not None
            window_days = settings.engine.window_days
        if not 1 <= int(window_days) <= 175:
            raise ValueError("window_days must lie in 1..175 (SPEC 3)")
        if alignment not in ("trading", "calendar"):
            raise ValueError("alignment must be 'trading' or 'calendar' (SPEC 3)")
        self.window_days = int(window_days)
        self.alignment: Alignment = alignment
        self.chinese_calendar = ChineseCalendar()
        if min_years is None:
            assert settings is not None
            min_years = settings.engine.min_years
        self.min_years: int = min_years
        self._checked_min_years()

    def _checked_min_years(self) -> int:
        """`min_years` as set now (users assign it); ValueError unless an int >= 1."""
        value: Any = self.min_years
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
            return int(value)
        raise ValueError(f"min_years must be an integer >= 1, got {value!r}")

    def _params(self, years: Iterable[int] | None = None) -> EngineParams:
        chosen = frozenset(int(y) for y in years) if years is not None else None
        return EngineParams(
            window_days=self.window_days,
            min_years=self._checked_min_years(),
            alignment=self.alignment,
            years=chosen,
        )

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
        Raises ValueError, as the original did, with `Stock data is empty` for an empty
        frame and `Insufficient years for analysis` when fewer than `min_years` windows
        hold bars; also when the frame has no valid bar at all.
        """
        if isinstance(stock_data, pd.DataFrame) and stock_data.empty:
            raise ValueError("Stock data is empty")
        cleaned = clean_bars(stock_data)
        if isinstance(cleaned, str):
            raise ValueError(cleaned)
        name = symbol if symbol is not None else symbol_of(stock_data)
        if name is None:
            raise ValueError("no stock_code (or symbol) column: pass symbol=")
        need = self._checked_min_years()
        latest = day_to_date(int(cleaned.days[-1]))
        baseline = float(np.mean(cleaned.closes))  # the original's: every close of the frame
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
        # Runs of one year: days ascend, so each year's bars are contiguous, pre first.
        run_years, first, count = np.unique(year, return_index=True, return_counts=True)
        if run_years.shape[0] < need:
            raise ValueError(
                f"Insufficient years for analysis. Need at least {need}, got "
                f"{run_years.shape[0]}: Spring Festival windows holding bars "
                f"{run_years.tolist()}"
            )
        sf = sf_window_days()[year - FIRST_YEAR]
        before = days < sf
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
        # A window with no bar before the festival: relative to its first close instead.
        anchor = np.repeat(
            np.where(has_anchor, closes[np.maximum(anchor_at, 0)], closes[first]), count
        )
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
                normalized_price=rr,
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
            symbol=str(name),
            data_points=points,
            window_days=w,
            years=run_years.tolist(),
            baseline_price=baseline,
            alignment=self.alignment,
            latest_date=latest,
            anchor_prices=anchors,
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
        took the festival of the date's calendar year). A date the calendar cannot place
        (outside 1901-01-01..2099-12-31) gets the original's answer: `position`
        'unknown', not in the window, None for the festival and the distances.
        """
        day = to_date(current_date) if current_date is not None else dt.date.today()
        number = date_to_day(day)
        if not FIRST_BAR_DAY <= number <= LAST_BAR_DAY:
            return {
                "symbol": symbol,
                "current_date": day,
                "spring_festival_date": None,
                "days_to_spring_festival": None,
                "position": UNKNOWN,
                "in_analysis_window": False,
                "relative_day": None,
            }
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
        today's position for the pattern's symbol), by the engine's `signal_of`. The
        'unknown' position of a date outside the calendar is outside every window:
        neutral, as in the original."""
        if current_position is None:
            current_position = self.get_current_position(pattern.symbol)
        phase = current_position.get("position")
        if phase == UNKNOWN:
            phase = "normal_period"
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
    """The signal in words, in the original's wording where it had one (an empty reason
    where the original had none is a sentence here); the numbers come from the engine."""
    if phase == "normal_period":
        text = "Outside Spring Festival analysis window"
    elif phase == "festival_day":
        text = "Spring Festival day - markets typically closed"
    else:
        side = "before" if phase in _BEFORE else "after"
        avg = pattern.average_return_before if side == "before" else pattern.average_return_after
        if kind == "bullish":
            text = f"Historical pattern shows {avg:.1f}% avg return {side} SF"
        elif kind == "bearish":
            text = f"Historical pattern shows {avg:.1f}% avg decline {side} SF"
        else:
            text = (
                f"No clear pattern {side} SF (avg {avg:+.1f}%, "
                f"strength {pattern.pattern_strength:.2f})"
            )
    if warning:
        ratio = pattern.volatility_ratio
        text += f" (High volatility: {ratio:.1f}x)" if np.isfinite(ratio) else " (High volatility)"
    return text
