"""The SPEC 1 bar rules, one bar at a time, in the SPEC's order: the first broken rule
names the reason. Exact and simple, and slow (~1 µs a bar); the columnar checks
(`service.decode.columns`, `service.decode.fast`) only flag rows, and every flagged
row is decided here.

Aliases: the canonical name wins when both it and its alias carry a non-null value;
a null canonical value falls back to the alias (null counts as absent).

Valid symbols and dates are cached (the same ones repeat in every batch), and the
columnar checks read those caches directly.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import numpy as np

from service.calendar import FIRST_BAR_DAY, LAST_BAR_DAY, date_to_day

__all__ = [
    "ALIASES",
    "cached_days",
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
            if not FIRST_BAR_DAY <= day <= LAST_BAR_DAY:
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
