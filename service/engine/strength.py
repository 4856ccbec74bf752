"""`pattern_strength` (SPEC 4): mean Pearson correlation over pairs of years, all symbols at once.

Each qualifying (symbol, year) window is a row of a dense cube over the fixed relative-day
axis (`k + W`), zero where the year has no bar, with a 0/1 mask beside it. A pair's sums
over its common `k` are then row-wise dot products (`einsum`), because a zero on either
side drops the term.

Symbols are bucketed by their number of years `u`. In a big bucket the rows are viewed as
(symbols, u, K) and each of the u(u-1)/2 year pairs costs six `einsum` calls over all
symbols at once, with no copies; a small bucket (say one symbol with 150 years) instead
gathers its pairs' rows in chunks of at most `_PAIR_CELLS` cells.

Why the rows are centred on their own mean first: the one-pass covariance formula loses
digits when values sit far from their mean, and a row's mean is close to its mean over any
large common subset. Pairs where cancellation could still bite (variance below
`_TOLERANCE` of the raw sum of squares, which includes every constant side) are redone
two-pass on the raw values with an exact constancy test, so "non-zero variance" means
exactly what the SPEC says.

Why results never depend on the batch: the cube width is fixed by W, each sum runs over
one pair's two rows with the same kernel in either bucket mode, and the per-symbol mean
over pairs is a `bincount` (sequential) in the fixed pair order.

Why a prior makes a closed year cost Y pairs, not Y(Y-1)/2 (issue 12): a pair's figures
depend on its two rows alone, so the previous result's `PairCache` holds per year a
fingerprint of its row and per pair (corr, counts). Rows whose (year, fingerprint) match
keep their pairs, which are copied into place; only pairs with a new or changed row are
computed, gathered in one pass over the chunk in blocks small enough to stay in cache
(`_PAIR_CELLS`; 1 << 20 took three times as long). The same bincount then adds all pairs
in the same order, so the result is bit-identical to a computation without the prior.
Copying is still O(Y^2) per symbol, but a few integer and float moves per pair against
six dot products over K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service.engine.types import PairCache

__all__ = ["fingerprints", "pattern_strength"]

_PAIR_CELLS = 1 << 16
_HASH_CELLS = 1 << 18
_VIEW_MIN_CELLS = 4096
_TOLERANCE = 1e-4
_MIN_COMMON = 5
#: Row-wise dot products of two (rows, K) arrays: each pair's sums over its common days.
_ROWDOT = "ij,ij->i"
_YEAR_BITS = 16  # (symbol, year) keys: years < 2**16
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31))
_NO_YEARS = np.zeros(0, dtype=np.int16)
_NO_FINGERPRINT = np.zeros(1, dtype=np.uint64)  # the sentinel's: its key never matches
_NO_CORR = np.zeros(0)
_NO_COUNTS = np.zeros(0, dtype=bool)
_NO_PAIRS = np.zeros(0, dtype=np.int64)


@lru_cache(maxsize=256)
def _triu(n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(n, 1)
    return a.astype(np.int64), b.astype(np.int64)


def _combine(
    sums: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, sa, sb, sab, saa, sbb) on centred rows -> (corr or 0, counts, redo exactly)."""
    n, sa, sb, sab, saa, sbb = sums
    enough = n >= _MIN_COMMON
    with np.errstate(divide="ignore", invalid="ignore"):
        va = saa - sa * sa / n
        vb = sbb - sb * sb / n
        clean = enough & (va > _TOLERANCE * saa) & (vb > _TOLERANCE * sbb)
        corr = (sab - sa * sb / n) / np.sqrt(va * vb)
    return np.where(clean, corr, 0.0), clean, enough & ~clean


def _sums_by_view(
    xc: np.ndarray, xc2: np.ndarray, mask: np.ndarray, rows: np.ndarray, u: int
) -> np.ndarray:
    """(6, pairs, symbols) sums for a bucket whose symbols' rows are `rows` (u per symbol)."""
    width = xc.shape[1]
    n_sym = rows.shape[0] // u
    if rows.shape[0] == xc.shape[0]:  # the whole cube: a free reshape
        c3, q3, m3 = (a.reshape(n_sym, u, width) for a in (xc, xc2, mask))
    else:
        c3, q3, m3 = (a[rows].reshape(n_sym, u, width) for a in (xc, xc2, mask))
    ia, ib = _triu(u)
    out = np.empty((6, ia.shape[0], c3.shape[0]))
    for p, (i, j) in enumerate(zip(ia.tolist(), ib.tolist(), strict=True)):
        ca, cb, ma, mb = c3[:, i], c3[:, j], m3[:, i], m3[:, j]
        np.einsum(_ROWDOT, ma, mb, out=out[0, p])
        np.einsum(_ROWDOT, ca, mb, out=out[1, p])
        np.einsum(_ROWDOT, cb, ma, out=out[2, p])
        np.einsum(_ROWDOT, ca, cb, out=out[3, p])
        np.einsum(_ROWDOT, q3[:, i], mb, out=out[4, p])
        np.einsum(_ROWDOT, q3[:, j], ma, out=out[5, p])
    return out


def _sums_by_gather(
    xc: np.ndarray, xc2: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    out = np.empty((6, a.shape[0]))
    ma, mb = mask[a], mask[b]
    ca, cb = xc[a], xc[b]
    np.einsum(_ROWDOT, ma, mb, out=out[0])
    np.einsum(_ROWDOT, ca, mb, out=out[1])
    np.einsum(_ROWDOT, cb, ma, out=out[2])
    np.einsum(_ROWDOT, ca, cb, out=out[3])
    np.einsum(_ROWDOT, xc2[a], mb, out=out[4])
    np.einsum(_ROWDOT, xc2[b], ma, out=out[5])
    return out


def _exact(
    x: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two-pass Pearson on raw values; a side counts as constant only if exactly so."""
    common = (mask[a] * mask[b]) > 0
    xa, xb = x[a], x[b]
    n = common.sum(axis=1)
    # Only 0/0 can occur here (no common day, or a side constant on them), never x/0.
    with np.errstate(invalid="ignore"):
        da = np.where(common, xa - (np.where(common, xa, 0.0).sum(axis=1) / n)[:, None], 0.0)
        db = np.where(common, xb - (np.where(common, xb, 0.0).sum(axis=1) / n)[:, None], 0.0)
        saa = np.einsum(_ROWDOT, da, da)
        sbb = np.einsum(_ROWDOT, db, db)
        corr = np.einsum(_ROWDOT, da, db) / np.sqrt(saa * sbb)
    varies_a = np.where(common, xa, np.inf).min(axis=1) < np.where(common, xa, -np.inf).max(axis=1)
    varies_b = np.where(common, xb, np.inf).min(axis=1) < np.where(common, xb, -np.inf).max(axis=1)
    # A side that varies on the common days has a non-zero deviation there, so saa > 0.
    ok = (n >= _MIN_COMMON) & varies_a & varies_b
    return np.where(ok, corr, 0.0), ok


def _finish(
    x: np.ndarray, mask: np.ndarray, sums: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(corr or 0, counts) of pairs (a, b) from their sums; cancelling ones redone exactly."""
    corr, ok, redo = _combine(sums)
    at = redo.nonzero()[0]
    step = _PAIR_CELLS // x.shape[1]
    for lo in range(0, at.shape[0], step):
        part = at[lo : lo + step]
        corr[part], ok[part] = _exact(x, mask, a[part], b[part])
    return corr, ok


def _gathered(
    x: np.ndarray, xc: np.ndarray, xc2: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(corr or 0, counts) of any pairs of rows, gathered at most `_PAIR_CELLS` cells at once."""
    sums = np.empty((6, a.shape[0]))
    step = _PAIR_CELLS // x.shape[1]  # >= 186: width <= 2W+2 with W <= 175 (Settings)
    for lo in range(0, a.shape[0], step):
        sums[:, lo : lo + step] = _sums_by_gather(
            xc, xc2, mask, a[lo : lo + step], b[lo : lo + step]
        )
    return _finish(x, mask, sums, a, b)


def _bucket(
    x: np.ndarray, xc: np.ndarray, xc2: np.ndarray, mask: np.ndarray, first: np.ndarray, u: int
) -> tuple[np.ndarray, np.ndarray]:
    """(corr or 0, counts) of every pair of the bucket, symbol-major then triu order."""
    width = x.shape[1]
    ia, ib = _triu(u)
    a = (first[:, None] + ia).ravel()
    b = (first[:, None] + ib).ravel()
    if first.shape[0] * width < _VIEW_MIN_CELLS:
        return _gathered(x, xc, xc2, mask, a, b)
    rows = (first[:, None] + np.arange(u)).ravel()
    sums = _sums_by_view(xc, xc2, mask, rows, u).transpose(0, 2, 1).reshape(6, a.shape[0])
    return _finish(x, mask, sums, a, b)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: a bijection of uint64 in which every input bit
    moves about half the output bits (uint64 array products wrap silently)."""
    z ^= z >> _SHIFTS[0]
    z *= _MULTIPLIERS[0]
    z ^= z >> _SHIFTS[1]
    z *= _MULTIPLIERS[1]
    z ^= z >> _SHIFTS[2]
    return z


@lru_cache(maxsize=64)
def _salts(width: int) -> np.ndarray:
    """One mixed constant per column (splitmix64's own sequence), so that moving a value to
    another column changes the fingerprint. Arithmetic, not an RNG: the same everywhere."""
    return _mix(np.arange(1, width + 1, dtype=np.uint64) * _GAMMA)


def fingerprints(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint of each cube row: what decides that a cached pair still holds.

    Why the row and not the year's bars: a pair's figures are a function of its two rows
    (values and mask) alone, whatever produced them, so equal rows may share pairs across
    analyses, and W or alignment need no separate check (they change the rows).
    Each cell is its value's bit pattern plus its 0/1 mask bit (a bar whose r is 0.0
    differs from no bar; no finite float has the all-ones pattern that would wrap), xor a
    salt of its column, mixed; the row's fingerprint is the sum, modulo 2**64. Done in
    blocks of `_HASH_CELLS` cells so that the five passes run in cache.
    """
    width = x.shape[1]
    bits = x.view(np.uint64)
    salts = _salts(width)
    out = np.empty(x.shape[0], dtype=np.uint64)
    step = _HASH_CELLS // width
    for lo in range(0, x.shape[0], step):
        z = bits[lo : lo + step] + (mask[lo : lo + step] > 0)
        z ^= salts
        _mix(z).sum(axis=1, out=out[lo : lo + step])
    return out


@dataclass(frozen=True, slots=True)
class _Prior:
    """The chunk's prior caches back to back and, per current row, where it sits in them."""

    row: np.ndarray  # the row's index in its symbol's prior; -1: no prior, or it changed
    base: np.ndarray  # pair (i, j), i < j, of cached rows is at base[i] + row[j] in `corr`
    corr: np.ndarray
    counts: np.ndarray


def _match(
    priors: Sequence[PairCache | None], fp: np.ndarray, year: np.ndarray, n_rows: np.ndarray
) -> _Prior:
    """A row matches its symbol's prior row of the same year if their fingerprints agree.

    Both sides are sorted by (symbol, year), so one `searchsorted` finds every candidate;
    a sentinel key above every real one keeps it inside the array with no prior at all.
    The map from current to prior rows keeps their order (both ascend by year), so a
    pair of cached rows is the prior's pair (pi, pj), pi < pj, at triu position
    pi (2n - pi - 1) / 2 + pj - pi - 1 of a prior of n years: `base` holds all but pj.
    """
    held = [p for p in priors if p is not None]
    n_years = np.array([0 if p is None else p.years.shape[0] for p in priors], dtype=np.int64)
    sym = np.arange(n_rows.shape[0])
    key = (sym.repeat(n_rows) << _YEAR_BITS) + year
    p_key = np.append(sym.repeat(n_years), sym.shape[0]) << _YEAR_BITS
    p_key[:-1] += np.concatenate([_NO_YEARS, *(p.years for p in held)])
    p_fp = np.concatenate([*(p.fingerprints for p in held), _NO_FINGERPRINT])
    at = np.searchsorted(p_key, key)
    hit = (p_key[at] == key) & (p_fp[at] == fp)
    row = np.where(hit, at - (np.cumsum(n_years) - n_years).repeat(n_rows), -1)
    n_pairs = n_years * (n_years - 1) >> 1
    first_pair = (np.cumsum(n_pairs) - n_pairs).repeat(n_rows)
    n = n_years.repeat(n_rows)
    return _Prior(
        row=row,
        base=first_pair + ((row * (2 * n - row - 1)) >> 1) - row - 1,
        corr=np.concatenate([_NO_CORR, *(p.corr for p in held)]),
        counts=np.concatenate([_NO_COUNTS, *(p.counts for p in held)]),
    )


def _reuse(
    prior: _Prior, first: np.ndarray, u: int, out: tuple[np.ndarray, np.ndarray], at: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy into `out` (corr, counts) at `at` the cached pairs of symbols of u rows from
    `first`, symbol-major in triu order; returns the others as (position, a, b)."""
    ia, ib = _triu(u)
    a = (first[:, None] + ia).ravel()
    b = (first[:, None] + ib).ravel()
    pb = prior.row[b]
    cached = (prior.row[a] >= 0) & (pb >= 0)
    src = prior.base[a[cached]] + pb[cached]
    corr, ok = out
    corr[at[cached]] = prior.corr[src]
    ok[at[cached]] = prior.counts[src]
    return at[~cached], a[~cached], b[~cached]


def pattern_strength(
    x: np.ndarray,
    mask: np.ndarray,
    row_count: np.ndarray,
    row_start: np.ndarray,
    n_rows: np.ndarray,
    year: np.ndarray,
    priors: Sequence[PairCache | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per symbol: mean correlation over counting pairs, floored at 0; 0.0 with none.

    `x` / `mask` are the (rows, K) cube and its 0/1 float mask; rows of one symbol are
    contiguous: `n_rows` (at least 2) of them from `row_start`, one per `year` ascending.
    `row_count` is each row's bar count; `priors` the symbols' caches (or None).
    Also returns what the next call may reuse: each row's fingerprint, and every pair's
    (corr or 0, counts), symbol-major in triu order.

    Each pair lands at its fixed place, copied or computed, before one `bincount` adds
    them in that order, so the mean is bit-identical with or without a prior.
    """
    n_sym = row_start.shape[0]
    xc = x - (x.sum(axis=1) / row_count)[:, None]
    xc *= mask
    xc2 = xc * xc
    fp = fingerprints(x, mask)
    prior = _match(priors, fp, year, n_rows)
    n_pairs = n_rows * (n_rows - 1) >> 1
    first_pair = np.cumsum(n_pairs) - n_pairs
    corr = np.empty(int(n_pairs.sum()))
    ok = np.empty(corr.shape[0], dtype=bool)
    # Two cached rows make a cached pair; with fewer, the bucket kernels do all pairs.
    # (`add` counts bools in NumPy's default integer, not as a logical or.)
    reuses = np.add.reduceat(prior.row >= 0, row_start) >= 2
    todo = [(_NO_PAIRS,) * 3]  # pairs left for one gathered pass: (position, a, b)
    for u in np.unique(n_rows).tolist():
        in_u = n_rows == u
        span = np.arange(u * (u - 1) >> 1)
        sel = (in_u & ~reuses).nonzero()[0]
        at = (first_pair[sel, None] + span).ravel()
        corr[at], ok[at] = _bucket(x, xc, xc2, mask, row_start[sel], u)
        sel = (in_u & reuses).nonzero()[0]
        at = (first_pair[sel, None] + span).ravel()
        todo.append(_reuse(prior, row_start[sel], u, (corr, ok), at))
    at, a, b = (np.concatenate(part) for part in zip(*todo, strict=True))
    corr[at], ok[at] = _gathered(x, xc, xc2, mask, a, b)
    # Every symbol owns at least one pair (n_rows >= 2), so bincount needs no minlength.
    owner = np.arange(n_sym).repeat(n_pairs)
    total = np.bincount(owner, weights=corr)
    used = np.bincount(owner, weights=ok)
    mean = np.zeros(n_sym)
    np.divide(total, used, out=mean, where=used > 0)
    return np.maximum(mean, 0.0), fp, corr, ok
