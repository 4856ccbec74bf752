"""Flatten a batch of symbols and find every (symbol, window year) group in one pass.

Why flat: per-symbol numpy calls cost microseconds each, and a batch holds hundreds of
symbols. Concatenating once and locating every window with three `searchsorted` calls on
a globally sorted key makes the cost per bar, not per symbol. The key is
`day + symbol * 2**18`: days 1901..2100 span fewer than 2**18 numbers, so it is sorted
whenever each symbol's days are (the `SymbolWindows` contract).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.engine.types import EngineParams, SymbolWindows
from service.engine.windows import N_WINDOW_YEARS, sf_window_days, window_ends, year_filter_mask

__all__ = ["Batch", "Groups", "find_groups", "flatten"]

_SYMBOL_SHIFT = 18


@dataclass(frozen=True, slots=True)
class Batch:
    """All bars of a batch back to back; symbol `s` owns `[offsets[s], offsets[s+1])`."""

    days: np.ndarray  # int32
    closes: np.ndarray  # float64
    offsets: np.ndarray  # int64, len S+1
    latest: np.ndarray  # int64, len S


@dataclass(frozen=True, slots=True)
class Groups:
    """Qualifying (symbol, year) groups, sorted by symbol then year (SPEC 3).

    `start`/`pivot`/`end` index the batch's flat arrays: pre bars are
    `[start, pivot)`, post bars `[pivot, end)`.
    """

    symbol: np.ndarray  # int64 batch index of the symbol
    year_index: np.ndarray  # int64 year - 1901
    start: np.ndarray
    pivot: np.ndarray
    end: np.ndarray


def flatten(items: Sequence[SymbolWindows]) -> Batch:
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([it.days.shape[0] for it in items], out=offsets[1:])
    days = np.concatenate([it.days for it in items], dtype=np.int32)
    closes = np.concatenate([it.closes for it in items], dtype=np.float64)
    latest = np.array([it.latest for it in items], dtype=np.int64)
    return Batch(days=days, closes=closes, offsets=offsets, latest=latest)


def find_groups(batch: Batch, params: EngineParams) -> Groups:
    """Every closed window that qualifies; windows with no bars never become candidates."""
    w = params.window_days
    offsets = batch.offsets
    n_sym = offsets.shape[0] - 1
    lengths = offsets[1:] - offsets[:-1]
    key = (np.arange(n_sym) << _SYMBOL_SHIFT).repeat(lengths)
    key += batch.days

    # Candidate years per symbol: from the window of its first bar to that of its last.
    nonempty = lengths > 0
    first_day = batch.days[offsets[:-1][nonempty]]
    last_day = batch.days[offsets[1:][nonempty] - 1]
    sf = sf_window_days()
    lo = np.searchsorted(window_ends(w), first_day)
    hi = np.searchsorted(sf - w, last_day, side="right")  # one past the last candidate
    lo = np.minimum(lo, N_WINDOW_YEARS)
    count = np.maximum(hi - lo, 0)
    cand_sym = nonempty.nonzero()[0].repeat(count)
    first_of = np.cumsum(count) - count
    cand_year = np.arange(cand_sym.shape[0]) + (lo - first_of).repeat(count)

    sf_g = sf[cand_year]
    base = cand_sym << _SYMBOL_SHIFT
    start = np.searchsorted(key, base + (sf_g - w))
    pivot = np.searchsorted(key, base + sf_g)
    end = np.searchsorted(key, base + (sf_g + w), side="right")

    n_pre = pivot - start
    n_post = end - pivot
    ok = batch.latest[cand_sym] > sf_g + w  # closed window
    ok &= n_pre >= 1
    ok &= n_post >= 1
    ok &= n_pre + n_post >= params.min_bars_per_year
    if params.years is not None:
        ok &= year_filter_mask(params.years)[cand_year]
    return Groups(
        symbol=cand_sym[ok],
        year_index=cand_year[ok],
        start=start[ok],
        pivot=pivot[ok],
        end=end[ok],
    )
