"""Bar validation (SPEC 1): the rules, their order, and a fast columnar check.

Two implementations of the same rules live here on purpose:

* `validate_bar` checks one parsed bar field by field, in the SPEC's order, so the
  first broken rule names the reason. It is exact and simple, and slow (~1 µs).
* `check_bars` checks a whole batch column by column (C-level `map`/`set` passes and
  numpy comparisons), because per-bar Python costs more than parsing the JSON.
  It only *flags* rows; every flagged row is re-checked by `validate_bar`, which
  alone decides the reason (and keeps the row if it turns out valid). So the fast
  path can be conservative but never decides a reason on its own.

Aliases: the canonical name wins when both it and its alias carry a non-null value;
a null canonical value falls back to the alias (null counts as absent).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from service.calendar import date_to_day

__all__ = [
    "ALIASES",
    "DAY_MAX",
    "DAY_MIN",
    "CheckedBars",
    "cached_days",
    "check_bars",
    "parse_day",
    "symbol_ok",
    "validate_bar",
]

#: canonical field -> accepted alias (SPEC 1 table).
ALIASES: dict[str, str] = {
    "symbol": "stock_code",
    "date": "trade_date",
    "close": "close_price",
    "open": "open_price",
    "high": "high_price",
    "low": "low_price",
}
_NUMERIC = frozenset({float, int})  # bool is a subclass of int but `type(True) is bool`
_NUMERIC_OR_NONE = frozenset({float, int, type(None)})

DAY_MIN = date_to_day(dt.date(1901, 1, 1))
DAY_MAX = date_to_day(dt.date(2099, 12, 31))

_SYMBOL_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")

# Caches: the same symbols and dates repeat in every batch. Valid dates are bounded
# (73k days); symbols are bounded by clearing, so junk cannot grow memory for ever.
_SYMBOLS_OK: set[str] = set()
_DAYS_OK: dict[str, int] = {}
_CACHE_LIMIT = 500_000


def symbol_ok(value: object) -> bool:
    """A str of 1-32 chars of [A-Za-z0-9._-]; valid ones are remembered."""
    if type(value) is not str:
        return False
    if value in _SYMBOLS_OK:
        return True
    if _SYMBOL_RE.fullmatch(value) is None:
        return False
    if len(_SYMBOLS_OK) >= _CACHE_LIMIT:
        _SYMBOLS_OK.clear()
    _SYMBOLS_OK.add(value)
    return True


def parse_day(value: object) -> int | str:
    """Day number of a strict, real `YYYY-MM-DD` in range, else the reason code."""
    if type(value) is str:
        day = _DAYS_OK.get(value)
        if day is not None:
            return day
        m = _DATE_RE.fullmatch(value)
        if m is not None:
            try:
                d = dt.date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                return "invalid_field:date"
            day = date_to_day(d)
            if not DAY_MIN <= day <= DAY_MAX:
                return "date_out_of_range"
            _DAYS_OK[value] = day
            return day
    return "invalid_field:date"


def _get(bar: dict[str, Any], name: str) -> Any:
    value = bar.get(name)
    if value is None:
        alias = ALIASES.get(name)
        if alias is not None:
            value = bar.get(alias)
    return value


def _number(value: Any, positive: bool) -> bool:
    """A JSON number (never a bool), finite, > 0 (or >= 0 when not `positive`)."""
    if type(value) not in _NUMERIC:
        return False
    try:
        x = float(value)
    except OverflowError:
        return False
    return math.isfinite(x) and (x > 0.0 if positive else x >= 0.0)


def validate_bar(bar: dict[str, Any]) -> tuple[str, int, float] | str:
    """(symbol, day, close) of a valid bar, else the reason of the first broken rule."""
    symbol, date, close = _get(bar, "symbol"), _get(bar, "date"), _get(bar, "close")
    if symbol is None:
        return "missing_field:symbol"
    if date is None:
        return "missing_field:date"
    if close is None:
        return "missing_field:close"
    if not symbol_ok(symbol):
        return "invalid_field:symbol"
    day = parse_day(date)
    if type(day) is str:
        return day
    if not _number(close, True):
        return "invalid_field:close"
    prices: dict[str, float] = {}
    for name in ("open", "high", "low"):
        value = _get(bar, name)
        if value is not None:
            if not _number(value, True):
                return f"invalid_field:{name}"
            prices[name] = float(value)
    if "low" in prices and "high" in prices and prices["low"] > prices["high"]:
        return "invalid_field:low"
    volume = bar.get("volume")
    if volume is not None and not _number(volume, False):
        return "invalid_field:volume"
    assert type(day) is int
    return symbol, day, float(close)


@dataclass(slots=True)
class CheckedBars:
    """Outcome of `check_bars`: the valid rows (in order) and the rejected ones."""

    keep: np.ndarray | None  # bool per input row; None means every row is valid
    symbols: list[str]
    days: np.ndarray  # int32, valid rows only
    closes: np.ndarray  # float64, valid rows only
    rejected: list[tuple[int, str]]  # (row, reason), ascending row


_dict_get = dict.get


def _column(bars: list[dict[str, Any]], name: str) -> list[Any]:
    """The raw canonical column (None where absent), one C-level pass."""
    if name in bars[0]:
        try:
            return list(map(itemgetter(name), bars))
        except KeyError:
            pass
    return list(map(_dict_get, bars, repeat(name)))


def _with_alias(bars: list[dict[str, Any]], col: list[Any], name: str) -> list[Any]:
    """Fill absent canonical values from the alias (slow path only: scans for None)."""
    alias = ALIASES.get(name)
    if alias is None or None not in col:
        return col
    other = list(map(_dict_get, bars, repeat(alias)))
    return [b if a is None else a for a, b in zip(col, other, strict=True)]


def _numbers(
    bars: list[dict[str, Any]], name: str, positive: bool, required: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 values (NaN where absent) and a bad-row mask (None when no row is bad).

    Fast path: numpy's own type discovery yields a float or int array only when every
    value is a number or a bool; a bool can only have become 1.0 or 0.0, so only
    those few rows need their Python type looked at.
    """
    col = _column(bars, name)
    n = len(col)
    if name not in bars[0] and col.count(None) == n:  # usually absent from the whole batch
        col = _with_alias(bars, col, name)
        if col.count(None) == n:
            return np.full(n, np.nan), (np.ones(n, dtype=bool) if required else None)
    values: np.ndarray | None = None
    try:
        arr = np.array(col)
    except (ValueError, OverflowError):
        arr = None
    if arr is not None and arr.dtype.kind in "fiu" and arr.ndim == 1:
        values = arr.astype(np.float64, copy=False)
        suspects = np.flatnonzero((values == 1.0) | (values == 0.0)).tolist()
        if suspects and any([type(col[i]) is bool for i in suspects]):
            values = None
    bad_type: np.ndarray | None = None
    if values is None:
        col = _with_alias(bars, col, name)
        bad_type = np.fromiter((type(x) not in _NUMERIC_OR_NONE for x in col), bool, n)
        values = np.array(
            [math.nan if b else _to_float(x) for x, b in zip(col, bad_type.tolist(), strict=True)],
            dtype=np.float64,
        )
    with np.errstate(invalid="ignore"):
        good = (values > 0.0) if positive else (values >= 0.0)
    good &= np.isfinite(values)
    bad = ~good if required else ~good & ~np.isnan(values)
    if bad_type is not None:
        bad |= bad_type
    return values, (bad if bad.any() else None)


def _to_float(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except OverflowError:
        return math.inf


def _symbols(bars: list[dict[str, Any]]) -> tuple[list[Any], np.ndarray | None]:
    col = _column(bars, "symbol")
    try:
        unknown = set(col).difference(_SYMBOLS_OK)
    except TypeError:  # an unhashable value (list/dict)
        unknown = None
    if unknown is not None and all([symbol_ok(s) for s in unknown]):  # all: fill the cache
        return col, None
    col = _with_alias(bars, col, "symbol")
    bad = np.fromiter((not symbol_ok(s) for s in col), bool, len(col))
    return col, (bad if bad.any() else None)


def cached_days(dates: list[Any]) -> np.ndarray | None:
    """Day numbers through the cache of valid dates (at most 73k entries); a feed brings
    a new date now and then, which is parsed and cached before a second try. None when
    any value is not a valid date: the caller then looks row by row."""
    n = len(dates)
    lookup = _DAYS_OK.__getitem__
    try:
        return np.fromiter(map(lookup, dates), np.int32, n)
    except (KeyError, TypeError):
        pass
    try:
        for d in set(dates).difference(_DAYS_OK):
            parse_day(d)  # caches the valid ones
        return np.fromiter(map(lookup, dates), np.int32, n)
    except (KeyError, TypeError):  # an invalid or unhashable value
        return None


def _days(bars: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
    col = _column(bars, "date")
    n = len(col)
    days_or_none = cached_days(col)
    if days_or_none is not None:
        return days_or_none, None
    days = [parse_day(d) for d in _with_alias(bars, col, "date")]
    bad = np.fromiter((type(d) is str for d in days), bool, n)
    return np.array([0 if type(d) is str else d for d in days], dtype=np.int32), bad


def check_bars(bars: list[dict[str, Any]]) -> CheckedBars:
    """Validate a list of parsed bar dicts at once; see the module docstring."""
    n = len(bars)
    if n == 0:
        return CheckedBars(None, [], np.empty(0, np.int32), np.empty(0, np.float64), [])
    symbols, bad_symbols = _symbols(bars)
    days, bad_days = _days(bars)
    closes, bad_closes = _numbers(bars, "close", True, True)
    _, bad_opens = _numbers(bars, "open", True, False)
    highs, bad_highs = _numbers(bars, "high", True, False)
    lows, bad_lows = _numbers(bars, "low", True, False)
    with np.errstate(invalid="ignore"):
        inverted = lows > highs  # False wherever either is absent (NaN)
    _, bad_volumes = _numbers(bars, "volume", False, False)
    flagged: np.ndarray | None = inverted if inverted.any() else None
    for m in (bad_symbols, bad_days, bad_closes, bad_opens, bad_highs, bad_lows, bad_volumes):
        if m is not None:
            flagged = m if flagged is None else flagged | m
    if flagged is None:
        return CheckedBars(None, symbols, days, closes, [])
    keep = ~flagged
    rejected: list[tuple[int, str]] = []
    for row in np.flatnonzero(flagged).tolist():
        outcome = validate_bar(bars[row])
        if type(outcome) is str:
            rejected.append((row, outcome))
        else:  # the fast check is conservative: the exact check has the last word
            assert isinstance(outcome, tuple)
            keep[row] = True
            symbols[row], days[row], closes[row] = outcome
    kept = [s for s, k in zip(symbols, keep.tolist(), strict=True) if k]
    return CheckedBars(keep, kept, days[keep], closes[keep], rejected)
