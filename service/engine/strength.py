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
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["pattern_strength"]

_PAIR_CELLS = 1 << 20
_VIEW_MIN_CELLS = 4096
_TOLERANCE = 1e-4
_MIN_COMMON = 5
#: Row-wise dot products of two (rows, K) arrays: each pair's sums over its common days.
_ROWDOT = "ij,ij->i"


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


def _bucket(
    x: np.ndarray, xc: np.ndarray, xc2: np.ndarray, mask: np.ndarray, first: np.ndarray, u: int
) -> tuple[np.ndarray, np.ndarray]:
    """(corr or 0, counts) of every pair of the bucket, symbol-major then triu order."""
    width = x.shape[1]
    ia, ib = _triu(u)
    a = (first[:, None] + ia).ravel()
    b = (first[:, None] + ib).ravel()
    if first.shape[0] * width >= _VIEW_MIN_CELLS:
        rows = (first[:, None] + np.arange(u)).ravel()
        sums = _sums_by_view(xc, xc2, mask, rows, u).transpose(0, 2, 1).reshape(6, a.shape[0])
    else:
        sums = np.empty((6, a.shape[0]))
        step = _PAIR_CELLS // width  # >= 2978: width <= 2W+2 with W <= 175 (Settings)
        for lo in range(0, a.shape[0], step):
            sums[:, lo : lo + step] = _sums_by_gather(
                xc, xc2, mask, a[lo : lo + step], b[lo : lo + step]
            )
    corr, ok, redo = _combine(sums)
    at = redo.nonzero()[0]
    step = _PAIR_CELLS // width
    for lo in range(0, at.shape[0], step):
        part = at[lo : lo + step]
        corr[part], ok[part] = _exact(x, mask, a[part], b[part])
    return corr, ok


def pattern_strength(
    x: np.ndarray,
    mask: np.ndarray,
    row_count: np.ndarray,
    row_start: np.ndarray,
    n_rows: np.ndarray,
) -> np.ndarray:
    """Per symbol: mean correlation over counting pairs, floored at 0; 0.0 with none.

    `x` / `mask` are the (rows, K) cube and its 0/1 float mask; rows of one symbol are
    contiguous: `n_rows` (at least 2) of them from `row_start`. `row_count` is each row's
    bar count.
    """
    n_sym = row_start.shape[0]
    xc = x - (x.sum(axis=1) / row_count)[:, None]
    xc *= mask
    xc2 = xc * xc
    total = np.zeros(n_sym)
    used = np.zeros(n_sym)
    for u in np.unique(n_rows).tolist():
        sel = (n_rows == u).nonzero()[0]
        corr, ok = _bucket(x, xc, xc2, mask, row_start[sel], u)
        # u >= 2: every symbol owns u(u-1)/2 >= 1 pairs, so bincount needs no minlength.
        owner = np.arange(sel.shape[0]).repeat(u * (u - 1) >> 1)
        total[sel] = np.bincount(owner, weights=corr)
        used[sel] = np.bincount(owner, weights=ok)
    mean = np.zeros(n_sym)
    np.divide(total, used, out=mean, where=used > 0)
    return np.maximum(mean, 0.0)
