"""A user's pandas frame -> the bars the service would keep (SPEC 1), in one place.

Every door of the compat API (the parallel engine, the sequential alignment engine,
`optimize_for_memory_usage`) reads frames through `clean_bars`, so a frame means the
same bars whichever door it goes through, and the same bars `sfa replay` keeps from the
equivalent JSONL: invalid rows are dropped as the service would reject them, and a
later row for the same date wins (a correction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from service.calendar import FIRST_BAR_DAY, LAST_BAR_DAY
from service.decode.rules import ALIASES
from service.engine import EngineParams, PatternResult, SymbolWindows, window_year_of

__all__ = [
    "CleanBars",
    "clean_bars",
    "column",
    "failure_reason",
    "frame_to_windows",
    "numbers",
    "symbol_of",
]

# The original column names (SPEC 8) -> SPEC 1 names: SPEC 1's alias table, reversed.
_ALIASES = {alias: canonical for canonical, alias in ALIASES.items()}


def _column_name(frame: pd.DataFrame, name: str) -> str | None:
    """The column holding SPEC 1 field `name`: its own name first, then the alias."""
    if name in frame.columns:
        return name
    for alias, canonical in _ALIASES.items():
        if canonical == name and alias in frame.columns:
            return alias
    return None


def _date_in_index(frame: pd.DataFrame) -> bool:
    return isinstance(frame.index, pd.DatetimeIndex) or frame.index.name in ("date", "trade_date")


def column(frame: pd.DataFrame, name: str) -> pd.Series | None:
    """SPEC 1 name first, then the original alias; a date may also be the index."""
    found = _column_name(frame, name)
    if found is not None:
        return frame[found]
    if name == "date" and _date_in_index(frame):
        return frame.index.to_series(index=frame.index)
    return None


def numbers(col: pd.Series) -> np.ndarray:
    """float64 values, NaN where a value is missing or not a number."""
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _valid_optional(frame: pd.DataFrame, name: str, low: float, strict: bool) -> np.ndarray:
    """Rows whose optional field is absent (null) or finite and in range (SPEC 1)."""
    col = column(frame, name)
    if col is None:
        return np.ones(len(frame), dtype=bool)
    values = numbers(col)
    absent = col.isna().to_numpy()
    in_range = values > low if strict else values >= low
    with np.errstate(invalid="ignore"):
        return np.asarray(absent | (np.isfinite(values) & in_range), dtype=bool)


@dataclass(frozen=True, slots=True)
class CleanBars:
    """A frame's valid bars: int32 day numbers ascending, float64 closes, and `rows`, the
    position in the frame of the row each bar came from (the last one for its date)."""

    days: np.ndarray
    closes: np.ndarray
    rows: np.ndarray
    #: Column that held the dates, or None when they came from the index.
    date_column: str | None
    close_column: str


def clean_bars(frame: Any) -> CleanBars | str:
    """The valid bars of `frame`, or a readable reason why it has none."""
    if not isinstance(frame, pd.DataFrame):
        return f"expected a pandas DataFrame, got {type(frame).__name__}"
    if frame.empty:
        return "Stock data is empty"  # the original's words
    dates, closes = column(frame, "date"), column(frame, "close")
    if dates is None or closes is None:
        missing = "date (or trade_date)" if dates is None else "close (or close_price)"
        return f"no {missing} column"
    stamps = pd.to_datetime(dates, errors="coerce")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_localize(None)
    has_date = stamps.notna().to_numpy()
    days = np.zeros(len(frame), dtype=np.int64)
    days[has_date] = stamps[has_date].to_numpy().astype("datetime64[D]").astype(np.int64)
    close = numbers(closes)
    with np.errstate(invalid="ignore"):
        ok = has_date & (days >= FIRST_BAR_DAY) & (days <= LAST_BAR_DAY) & np.isfinite(close)
        ok &= close > 0
    for name in ("open", "high", "low", "volume"):
        ok &= _valid_optional(frame, name, 0.0, strict=name != "volume")
    high, low = column(frame, "high"), column(frame, "low")
    if high is not None and low is not None:
        with np.errstate(invalid="ignore"):
            ok &= ~(numbers(low) > numbers(high))  # NaN on either side: the rule does not apply
    if not ok.any():
        return f"no valid bars: all {len(frame)} rows lack a valid date or close (or break SPEC 1)"
    rows = pd.Series(np.flatnonzero(ok), index=days[ok])
    rows = rows[~rows.index.duplicated(keep="last")].sort_index()
    kept = rows.to_numpy(dtype=np.int64)
    close_column = _column_name(frame, "close")
    assert close_column is not None
    return CleanBars(
        days=rows.index.to_numpy().astype(np.int32),
        closes=close[kept],
        rows=kept,
        date_column=_column_name(frame, "date"),
        close_column=close_column,
    )


def frame_to_windows(symbol: str, frame: Any, window_days: int) -> SymbolWindows | str:
    """A user's frame -> its window bars, or a readable reason it has none. `latest` is
    taken over all valid rows, in a window or not (SPEC 3)."""
    cleaned = clean_bars(frame)
    if isinstance(cleaned, str):
        return cleaned
    keep = window_year_of(cleaned.days, window_days) != 0
    return SymbolWindows(
        str(symbol), cleaned.days[keep], cleaned.closes[keep], latest=int(cleaned.days[-1])
    )


def symbol_of(frame: pd.DataFrame) -> str | None:
    """The one symbol named in the frame's `symbol` (or `stock_code`) column, or None.

    Why it refuses several: the original read the first row's code and analysed every
    row under it, so a frame of two stocks silently became one mixed series.
    """
    col = column(frame, "symbol")
    if col is None:
        return None
    names = col.dropna().astype(str).unique().tolist()
    if len(names) > 1:
        shown = ", ".join(sorted(names)[:5])
        raise ValueError(f"the frame holds {len(names)} symbols ({shown}); pass one at a time")
    return names[0] if names else None


def failure_reason(result: PatternResult, params: EngineParams) -> str:
    """Why a symbol has no pattern, in words a user can act on."""
    n = len(result.years)
    if n < params.min_years:
        return (
            f"insufficient_history: {n} qualifying year(s) {list(result.years)}, need "
            f"{params.min_years} closed Spring Festival windows with bars on both sides and "
            f">= {params.min_bars_per_year} bars each"
        )
    return "insufficient_history: no relative day is shared by two qualifying years"
