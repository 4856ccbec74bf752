"""SPEC 3-4 over a whole batch of symbols at once: the engine's heavy, vectorised half.

Why this shape: the service analyses hundreds of symbols per batch, and a Python loop of
small numpy calls per symbol spends its time in call overhead. Here every step is one
numpy call over all bars (or all windows) of the batch: bars of the qualifying windows are
gathered into flat arrays, per-window and per-symbol figures come from `reduceat` over
contiguous segments, and the aligned paths go into a dense (window, k + W) cube.

Why results never depend on the batch: every reduction runs over one symbol's own
contiguous segment, in bar order, and the cube's width is fixed by W, so a symbol's figures
are bit-identical whether it is analysed alone or next to others (SPEC 1 asks that the
result depend only on the set of bars).

Memory: the cube has one row per qualifying window; symbols are processed in chunks of at
most `_CUBE_CELLS` cells (a single symbol is never split), so one symbol with 150 years of
history or a batch of thousands stays within tens of megabytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from service.calendar import FIRST_YEAR
from service.engine.groups import Batch, Groups, find_groups, flatten
from service.engine.strength import pattern_strength
from service.engine.types import (
    EngineParams,
    PairCache,
    Pattern,
    PatternResult,
    SymbolWindows,
)
from service.engine.windows import sf_window_days

__all__ = ["analyze_patterns"]

_CUBE_CELLS = 1 << 21
_CANCEL = 1e-4


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


_NO_K = _frozen(np.zeros(0, dtype=np.int32))
_NO_MEAN = _frozen(np.zeros(0, dtype=np.float64))


@dataclass(frozen=True, slots=True)
class _Stats:
    """SPEC 4 figures for the symbols that have at least two qualifying years, in order."""

    strength: np.ndarray
    avg_before: np.ndarray
    avg_after: np.ndarray
    vol_before: np.ndarray
    vol_after: np.ndarray
    consistency: np.ndarray
    confidence: np.ndarray
    peak: np.ndarray
    trough: np.ndarray
    v_count: np.ndarray
    curve_len: np.ndarray
    curve_k: np.ndarray
    curve_mean: np.ndarray
    curve_n: np.ndarray
    fingerprints: np.ndarray  # per year row
    pair_corr: np.ndarray  # per pair, symbol-major in triu order
    pair_counts: np.ndarray


def _repeat(a: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return a.repeat(counts)


def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.column_stack((a, b)).ravel()


def _div0(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den (same shapes), 0.0 where den <= 0, without a divide-by-zero warning.

    A den below 0 is a count minus one of no values (a side with no returns): its 0.0
    must not become -0.0 (0 / -1), which SPEC 6 output would print as such.
    """
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal values in a non-empty sorted array."""
    start = np.concatenate(([True], keys[1:] != keys[:-1])).nonzero()[0]
    length = np.empty_like(start)
    length[:-1] = start[1:] - start[:-1]
    length[-1] = keys.shape[0] - start[-1]
    return start, length


def _sum_rows(a: np.ndarray, row_start: np.ndarray, n_rows: np.ndarray) -> np.ndarray:
    """Per symbol, the sum of its rows added in year order (so never batch-dependent)."""
    u = int(n_rows[0])
    if (n_rows == u).all():  # rows are (symbols, u, K): add strided views, no gathers
        view = a.reshape(row_start.shape[0], u, a.shape[1])
        out = view[:, 0].copy()
        for j in range(1, u):
            out += view[:, j]
        return out
    out = a[row_start]
    for j in range(1, int(n_rows.max())):
        has = n_rows > j
        if has.all():
            out += a[row_start + j]
        else:
            out[has] += a[row_start[has] + j]
    return out


def _returns(c: np.ndarray, first: np.ndarray) -> np.ndarray:
    """q_i = 100 (c_i / c_(i-1) - 1), 0.0 on each window's first bar (it has no return)."""
    q = np.zeros(c.shape[0])
    np.divide(c[1:], c[:-1], out=q[1:])
    q[1:] -= 1.0
    q *= 100.0
    q[first] = 0.0
    return q


def _pooled_volatility(
    c: np.ndarray,
    first: np.ndarray,
    seg_idx: np.ndarray,
    seg_len: np.ndarray,
    sym_start: np.ndarray,
    n_years: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample std (ddof 1) of each symbol's pre-side and post-side returns; 0.0 below 2.

    One pass (sums of q and q**2 per segment), because a second pass needs a per-bar copy
    of the means and daily returns have |mean| << std, so no digits are lost. A symbol
    whose sums do cancel (variance under `_CANCEL` of the sum of squares: a steady trend)
    takes the two-pass figure instead; the choice depends on that symbol alone.
    """
    n_seg = seg_len.copy()
    n_seg[0::2] -= 1  # the first pre bar of a window carries no return
    q = _returns(c, first)
    s1 = np.add.reduceat(q, seg_idx)
    q *= q
    s2 = np.add.reduceat(q, seg_idx)
    n = [np.add.reduceat(n_seg[side::2], sym_start) for side in (0, 1)]
    t1 = [np.add.reduceat(s1[side::2], sym_start) for side in (0, 1)]
    t2 = [np.add.reduceat(s2[side::2], sym_start) for side in (0, 1)]
    ss = [t2[i] - t1[i] * _div0(t1[i], n[i]) for i in (0, 1)]
    redo = [(t2[i] > 0) & (ss[i] <= _CANCEL * t2[i]) for i in (0, 1)]
    if redo[0].any() or redo[1].any():
        q = _returns(c, first)
        means = [_div0(t1[i], n[i]).repeat(n_years) for i in (0, 1)]
        q -= _interleave(means[0], means[1]).repeat(seg_len)
        q[first] = 0.0
        q *= q
        exact = np.add.reduceat(q, seg_idx)
        for i in (0, 1):
            ss[i] = np.where(redo[i], np.add.reduceat(exact[i::2], sym_start), ss[i])
    vol = [np.sqrt(_div0(np.maximum(ss[i], 0.0), n[i] - 1)) for i in (0, 1)]
    return vol[0], vol[1]


@dataclass(frozen=True, slots=True)
class _Input:
    """What every chunk reads: the batch's bars and each symbol's prior pair cache.

    One argument, so that `_chunk_stats` keeps its (input, groups, params) shape, which
    the chunking tests wrap.
    """

    bars: Batch
    priors: Sequence[PairCache | None]


def _chunk_stats(src: _Input, g: Groups, params: EngineParams) -> _Stats:
    """All SPEC 4 figures for the symbols of `g` (each with >= 2 qualifying years)."""
    w = params.window_days
    trading = params.alignment == "trading"
    width = 2 * w + 2 if trading else 2 * w + 1  # k + W in [0, 2W+1] (trading) / [0, 2W]
    closes = src.bars.closes
    n_groups = g.start.shape[0]
    sym_start, n_years = runs(g.symbol)
    n_pre = g.pivot - g.start
    n_post = g.end - g.pivot

    # -- per window: sizes, anchors, pre_y / post_y (SPEC 3-4)
    n_bars = g.end - g.start
    anchor = closes[g.pivot - 1]
    pre_y = (anchor / closes[g.start] - 1.0) * 100.0
    post_y = (closes[g.end - 1] / anchor - 1.0) * 100.0

    # -- gather the bars of qualifying windows into flat arrays; t = position in them
    first = np.cumsum(n_bars) - n_bars
    total = int(first[-1] + n_bars[-1])
    idx = np.arange(total, dtype=np.int32)  # int32 halves the memory of the gathers
    idx += _repeat((g.start - first).astype(np.int32), n_bars)
    c = closes[idx]
    seg_idx = _interleave(first, first + n_pre)  # pre segment, post segment of each window
    seg_len = _interleave(n_pre, n_post)

    vol_before, vol_after = _pooled_volatility(c, first, seg_idx, seg_len, sym_start, n_years)

    # -- normalised paths r into the cube at column k + W; bars fill it in row-major order
    c /= _repeat(anchor, n_bars)
    c -= 1.0
    c *= 100.0
    if trading:  # pre bars take k = -n_pre..-1, post bars 1..n_post: a block around W
        cols = np.arange(width)
        filled = cols >= (w - n_pre)[:, None]
        filled &= cols <= (w + n_post)[:, None]
        filled[:, w] = False
    else:
        flat = src.bars.days[idx] + _repeat(
            np.arange(n_groups) * width + w - sf_window_days()[g.year_index],
            n_bars,
        )
        filled = np.zeros((n_groups, width), dtype=bool)
        filled.ravel()[flat] = True
    cube = np.zeros((n_groups, width))
    cube[filled] = c
    mask = filled.astype(np.float64)

    # -- averages and consistency
    avg_before = np.add.reduceat(pre_y, sym_start) / n_years
    avg_after = np.add.reduceat(post_y, sym_start) / n_years
    agree = np.add(
        np.sign(pre_y) == _repeat(np.sign(avg_before), n_years),
        np.sign(post_y) == _repeat(np.sign(avg_after), n_years),
        dtype=np.int64,  # a count of 0, 1 or 2 per year, not a logical or
    )
    consistency = np.add.reduceat(agree, sym_start) / (2 * n_years)

    # -- curve, V, peak / trough, significance
    k_sum = _sum_rows(cube, sym_start, n_years)
    k_n = _sum_rows(mask, sym_start, n_years)
    k_mean = _div0(k_sum, k_n)
    in_v = k_n >= 2
    v_count = in_v.sum(axis=1)
    # Peak and trough only among days at least half the years share (SPEC 4): the ends
    # of a trading-day window are reached by few years, and a mean of those few was the
    # seasonal extreme of half the demo's symbols. No such day: all of V.
    shared = k_n >= np.maximum(2, (n_years + 1) // 2)[:, None]
    among = np.where(shared.any(axis=1)[:, None], shared, in_v)
    peak = np.where(among, k_mean, -np.inf).argmax(axis=1) - w  # first: the smallest k
    trough = np.where(among, k_mean, np.inf).argmin(axis=1) - w
    significance = _div0((k_n >= 3).sum(axis=1), v_count)
    present = k_n > 0
    at = present.ravel().nonzero()[0]

    density = np.minimum(1.0, np.add.reduceat(n_bars, sym_start) / (n_years * (2 * w * 5 / 7)))
    confidence = 0.4 * np.minimum(1.0, n_years / 10) + 0.3 * density + 0.3 * significance

    strength, fingerprints, pair_corr, pair_counts = pattern_strength(
        cube,
        mask,
        n_bars,
        sym_start,
        n_years,
        g.year_index + FIRST_YEAR,
        [src.priors[s] for s in g.symbol[sym_start].tolist()],
    )
    return _Stats(
        strength=strength,
        avg_before=avg_before,
        avg_after=avg_after,
        vol_before=vol_before,
        vol_after=vol_after,
        consistency=consistency,
        confidence=confidence,
        peak=peak,
        trough=trough,
        v_count=v_count,
        curve_len=present.sum(axis=1),
        curve_k=(at % width - w).astype(np.int32),
        curve_mean=k_mean.ravel()[at],
        curve_n=k_n.ravel()[at].astype(np.int32),
        fingerprints=fingerprints,
        pair_corr=pair_corr,
        pair_counts=pair_counts,
    )


def _select(g: Groups, keep: np.ndarray | slice) -> Groups:
    return Groups(g.symbol[keep], g.year_index[keep], g.start[keep], g.pivot[keep], g.end[keep])


def _heavy_stats(src: _Input, g: Groups, params: EngineParams) -> _Stats | None:
    """Chunk symbols so that no cube exceeds `_CUBE_CELLS` (one symbol is never split)."""
    n = g.start.shape[0]
    if n == 0:
        return None
    width = 2 * params.window_days + 2
    rows = _CUBE_CELLS // width  # >= 5957 rows: W <= 175 (Settings)
    if n <= rows:
        return _chunk_stats(src, g, params)
    sym_start = [*runs(g.symbol)[0].tolist(), n]
    parts: list[_Stats] = []
    lo = 0
    for i in range(1, len(sym_start)):
        hi, nxt = sym_start[i - 1], sym_start[i]
        if nxt - lo > rows and hi > lo:
            parts.append(_chunk_stats(src, _select(g, slice(lo, hi)), params))
            lo = hi
    parts.append(_chunk_stats(src, _select(g, slice(lo, n)), params))
    return _Stats(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Stats)))


def analyze_patterns(items: Sequence[SymbolWindows], params: EngineParams) -> list[PatternResult]:
    """SPEC 3-4 for every symbol of `items`, in order; what Dask workers run per chunk.

    A symbol's `prior` (its last result's `pairs`) lets unchanged year pairs be copied
    instead of recomputed; the result is bit-identical either way (see `strength`).
    """
    n_sym = len(items)
    if n_sym == 0:
        return []
    batch = flatten(items)
    groups = find_groups(batch, params)
    n_years = np.bincount(groups.symbol, minlength=n_sym)
    heavy = n_years >= max(params.min_years, 2)  # V needs two years sharing a k
    src = _Input(batch, [it.prior for it in items])
    stats = _heavy_stats(src, _select(groups, heavy[groups.symbol]), params)

    year_array = (groups.year_index + FIRST_YEAR).astype(np.int16)  # 1901..2099
    years = year_array.tolist()
    year_end = np.cumsum(n_years).tolist()
    heavy_list = heavy.tolist()
    if stats is not None:
        columns = zip(
            stats.strength.tolist(),
            stats.avg_before.tolist(),
            stats.avg_after.tolist(),
            stats.vol_before.tolist(),
            stats.vol_after.tolist(),
            stats.consistency.tolist(),
            stats.confidence.tolist(),
            stats.peak.tolist(),
            stats.trough.tolist(),
            stats.v_count.tolist(),
            np.cumsum(stats.curve_len).tolist(),
            strict=True,
        )
    out: list[PatternResult] = []
    curve_lo = y_hi = row_lo = pair_lo = 0
    for s, item in enumerate(items):
        y_lo, y_hi = y_hi, year_end[s]
        sym_years = tuple(years[y_lo:y_hi])
        pairs = None
        if heavy_list[s]:
            assert stats is not None
            strength, ab, aa, vb, va, cons, conf, peak, trough, v_count, curve_hi = next(columns)
            lo, curve_lo = curve_lo, curve_hi
            # Rows and pairs of `stats` are those of the heavy symbols, back to back.
            n = y_hi - y_lo
            row_hi, pair_hi = row_lo + n, pair_lo + (n * (n - 1) >> 1)
            pairs = PairCache(
                year_array[y_lo:y_hi].copy(),
                stats.fingerprints[row_lo:row_hi].copy(),
                stats.pair_corr[pair_lo:pair_hi].copy(),
                stats.pair_counts[pair_lo:pair_hi].copy(),
            )
            row_lo, pair_lo = row_hi, pair_hi
            if v_count > 0:
                ratio = va / vb if vb != 0.0 else (None if va > 0.0 else 1.0)
                pattern = Pattern(strength, ab, aa, vb, va, ratio, cons, conf, peak, trough)
                out.append(
                    PatternResult(
                        item.symbol,
                        "ok",
                        sym_years,
                        pattern,
                        stats.curve_k[lo:curve_hi].copy(),
                        stats.curve_mean[lo:curve_hi].copy(),
                        stats.curve_n[lo:curve_hi].copy(),
                        pairs,
                    )
                )
                continue
        out.append(
            PatternResult(
                item.symbol, "insufficient_history", sym_years, None, _NO_K, _NO_MEAN, _NO_K, pairs
            )
        )
    return out
