"""The columnar check of parsed bar dicts (the exact path's validation of a batch).

Per-bar Python costs more than parsing the JSON, so a whole batch is checked column
by column (C-level `map`/`set` passes and numpy comparisons). It only *flags* rows;
every flagged row is re-checked by `validate_bar` (`service.decode.rules`), which
alone decides the reason (and keeps the row if it turns out valid). So this check can
be conservative but never decides a reason on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from service.decode.rules import (
    _NUMERIC_OR_NONE,
    _SYMBOLS_OK,
    ALIASES,
    cached_days,
    parse_day,
    symbol_ok,
    validate_bar,
)

__all__ = ["CheckedBars", "check_bars"]


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
