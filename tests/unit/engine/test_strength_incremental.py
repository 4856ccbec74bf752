"""Incremental pattern strength (issue 12): a prior's cached pairs change no result, bit for bit,
and a newly closed or corrected year computes only its own pairs."""

from __future__ import annotations

import gc
import pickle
import struct
import tracemalloc
from dataclasses import astuple, dataclass, field, fields, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import service.engine.strength as strength_module
from service.calendar import FIRST_YEAR
from service.encode import encode_pattern_part
from service.engine import (
    EngineParams,
    PairCache,
    PatternResult,
    SymbolWindows,
    analyze_patterns,
)
from service.engine.strength import fingerprints
from service.engine.windows import sf_window_days
from service.state import StateStore
from service.state import store as store_module


def _window(year: int, w: int) -> np.ndarray:
    sf = int(sf_window_days()[year - FIRST_YEAR])
    return np.arange(sf - w, sf + w + 1, dtype=np.int32)


@dataclass
class _Symbol:
    """One symbol's bars by window year, and latest(s)."""

    name: str
    years: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    latest: int = 0

    def windows(self, prior: PairCache | None = None) -> SymbolWindows:
        held = [self.years[y] for y in sorted(self.years)]
        days = np.concatenate([np.zeros(0, dtype=np.int32), *(d for d, _ in held)])
        closes = np.concatenate([np.zeros(0), *(c for _, c in held)])
        return SymbolWindows(self.name, days, closes, self.latest, prior)


def _year_bars(
    rng: np.random.Generator, year: int, w: int, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """A window's bars: a random walk on random days, a constant, or a few bars only."""
    days = _window(year, w)
    density = {"walk": rng.uniform(0.3, 1.0), "flat": rng.uniform(0.3, 1.0), "short": 0.15}[kind]
    days = days[rng.random(days.shape[0]) < density]
    if kind == "flat":
        return days, np.full(days.shape[0], 7.25)
    return days, 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, days.shape[0])))


def _assert_identical(got: PatternResult, want: PatternResult) -> None:
    assert (got.symbol, got.status, got.years) == (want.symbol, want.status, want.years)
    assert got.pattern == want.pattern  # exact float equality, field by field
    for a, b in ((got.curve_k, want.curve_k), (got.curve_mean, want.curve_mean)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert np.array_equal(got.curve_n, want.curve_n)
    assert (got.pairs is None) == (want.pairs is None)
    if got.pairs is not None and want.pairs is not None:
        for f in fields(PairCache):
            a, b = getattr(got.pairs, f.name), getattr(want.pairs, f.name)
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name


_OPS = st.sampled_from(["correct", "add", "add_open", "close", "remove", "rescale", "none"])


@st.composite
def markets(draw: st.DrawFn) -> tuple[list[_Symbol], EngineParams, np.random.Generator, list]:
    w = draw(st.integers(5, 30))
    params = EngineParams(
        window_days=w,
        min_years=draw(st.integers(0, 3)),
        min_bars_per_year=draw(st.integers(1, 10)),
        alignment=draw(st.sampled_from(["trading", "calendar"])),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    symbols = []
    for i in range(draw(st.integers(2, 5))):
        first = draw(st.integers(1990, 2030))
        s = _Symbol(f"S{i}")
        for y in range(first, first + draw(st.integers(2, 30))):
            if rng.random() < 0.9:  # gaps: some years hold no bar at all
                kind = str(rng.choice(["walk", "walk", "walk", "flat", "short"]))
                s.years[y] = _year_bars(rng, y, w, kind)
        s.latest = int(_window(first + 30, w)[-1])
        symbols.append(s)
    steps = draw(st.lists(st.tuples(st.integers(0, 4), _OPS), min_size=1, max_size=6))
    return symbols, params, rng, steps


def _step(s: _Symbol, op: str, rng: np.random.Generator, w: int) -> None:
    held = sorted(y for y in s.years if s.years[y][0].shape[0])
    last = max(s.years, default=2000)
    if op in ("add", "add_open"):
        s.years[last + 1] = _year_bars(rng, last + 1, w, "walk")
        end = int(_window(last + 1, w)[-1])
        s.latest = max(s.latest, end if op == "add_open" else end + 1)  # open: latest = last day
    elif op == "close":
        s.latest += 400
    elif held and op in ("correct", "remove", "rescale"):
        y = held[int(rng.integers(len(held)))]
        days, closes = s.years[y]
        if op == "remove":
            del s.years[y]
        elif op == "rescale":  # r = c / anchor - 1 hardly changes: the fingerprint decides
            s.years[y] = (days, closes * 3.0)
        else:  # one close corrected, perhaps the anchor (then every r of the year moves)
            closes = closes.copy()
            closes[int(rng.integers(closes.shape[0]))] *= float(rng.uniform(0.8, 1.2))
            s.years[y] = (days, closes)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=markets())
def test_a_chain_of_priors_equals_the_analysis_from_scratch(case: tuple) -> None:
    symbols, params, rng, steps = case
    prev = analyze_patterns([s.windows() for s in symbols], params)
    for who, op in steps:
        _step(symbols[who % len(symbols)], op, rng, params.window_days)
        # One symbol may come without its prior (a pattern dropped by a restore).
        drop = int(rng.integers(len(symbols) + 1))
        warm = [
            s.windows(None if i == drop else r.pairs)
            for i, (s, r) in enumerate(zip(symbols, prev, strict=True))
        ]
        got = analyze_patterns(warm, params)
        want = analyze_patterns([s.windows() for s in symbols], params)
        for g, x in zip(got, want, strict=True):
            _assert_identical(g, x)
        prev = got


def test_a_prior_from_another_window_size_is_ignored() -> None:
    rng = np.random.default_rng(3)
    s = _Symbol("W")
    for y in range(2001, 2011):
        s.years[y] = _year_bars(rng, y, 20, "walk")
    s.latest = int(_window(2012, 21)[-1])
    p20, p21 = EngineParams(window_days=20), EngineParams(window_days=21)
    [old] = analyze_patterns([s.windows()], p20)
    assert old.pairs is not None
    [got] = analyze_patterns([s.windows(old.pairs)], p21)
    [want] = analyze_patterns([s.windows()], p21)
    _assert_identical(got, want)


# --- only the missing pairs are computed ---


class _Counted(list[tuple[str, int]]):
    """(kernel, pairs) of every call that computed pairs' six sums."""

    def pairs(self) -> int:
        return sum(n for _, n in self)

    def kernels(self) -> set[str]:
        return {k for k, n in self if n}


def _count_pairs(monkeypatch: pytest.MonkeyPatch) -> _Counted:
    counted = _Counted()
    by_gather, by_view = strength_module._sums_by_gather, strength_module._sums_by_view

    def gather(xc, xc2, mask, a, b):
        counted.append(("gather", int(a.shape[0])))
        return by_gather(xc, xc2, mask, a, b)

    def view(xc, xc2, mask, rows, u):
        counted.append(("view", rows.shape[0] // u * (u * (u - 1) // 2)))
        return by_view(xc, xc2, mask, rows, u)

    monkeypatch.setattr(strength_module, "_sums_by_gather", gather)
    monkeypatch.setattr(strength_module, "_sums_by_view", view)
    return counted


def _market(n_symbols: int, years: range, w: int = 30) -> list[_Symbol]:
    rng = np.random.default_rng(12)
    out = []
    for i in range(n_symbols):
        s = _Symbol(f"P{i}")
        for y in years:
            s.years[y] = _year_bars(rng, y, w, "walk")
        s.latest = int(_window(years[-1], w)[-1]) + 1
        out.append(s)
    return out


@pytest.mark.parametrize("y_held", [2, 12])
@pytest.mark.parametrize("n_symbols", [1, 70])  # gather-size and view-size buckets
def test_a_new_year_costs_y_pairs_and_a_corrected_one_y_minus_1(
    monkeypatch: pytest.MonkeyPatch, n_symbols: int, y_held: int
) -> None:
    params = EngineParams(window_days=30, min_years=2)
    symbols = _market(n_symbols, range(2001, 2001 + y_held))
    counted = _count_pairs(monkeypatch)
    prev = analyze_patterns([s.windows() for s in symbols], params)
    assert counted.pairs() == n_symbols * y_held * (y_held - 1) // 2  # no prior: all of them
    assert counted.kernels() == {"view" if n_symbols == 70 else "gather"}
    assert all(len(r.years) == y_held for r in prev)

    rng = np.random.default_rng(1)
    for s in symbols:  # the next year closes for every symbol
        s.years[2001 + y_held] = _year_bars(rng, 2001 + y_held, 30, "walk")
        s.latest = int(_window(2001 + y_held, 30)[-1]) + 1
    counted.clear()
    got = analyze_patterns([s.windows(r.pairs) for s, r in zip(symbols, prev, strict=True)], params)
    assert counted.pairs() == n_symbols * y_held
    assert counted.kernels() == {"gather"}  # the missing pairs, in one gathered pass

    for s in symbols:  # one close of an old year corrected
        days, closes = s.years[2002]
        s.years[2002] = (days, closes * np.where(np.arange(closes.shape[0]) == 3, 1.01, 1.0))
    counted.clear()
    again = analyze_patterns(
        [s.windows(r.pairs) for s, r in zip(symbols, got, strict=True)], params
    )
    assert counted.pairs() == n_symbols * (y_held + 1 - 1)

    counted.clear()  # nothing changed: nothing computed
    same = analyze_patterns(
        [s.windows(r.pairs) for s, r in zip(symbols, again, strict=True)], params
    )
    assert counted.pairs() == 0
    want_all = analyze_patterns([s.windows() for s in symbols], params)
    for a, b, want in zip(again, same, want_all, strict=True):
        _assert_identical(a, want)
        _assert_identical(b, want)


def test_a_prior_with_fewer_than_two_unchanged_years_takes_the_bucket_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = EngineParams(window_days=30, min_years=2)
    symbols = _market(70, range(2001, 2004))
    prev = analyze_patterns([s.windows() for s in symbols], params)
    for s in symbols:  # two of the three years corrected: one cached row, no cached pair
        for y in (2001, 2003):
            days, closes = s.years[y]
            s.years[y] = (days, closes * np.where(np.arange(closes.shape[0]) == 2, 1.01, 1.0))
    counted = _count_pairs(monkeypatch)
    got = analyze_patterns([s.windows(r.pairs) for s, r in zip(symbols, prev, strict=True)], params)
    assert counted == [("view", 70 * 3)]
    for g, want in zip(got, analyze_patterns([s.windows() for s in symbols], params), strict=True):
        _assert_identical(g, want)


def test_a_year_that_no_longer_qualifies_drops_only_its_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = EngineParams(window_days=30)
    [s] = _market(1, range(2001, 2011))
    [prev] = analyze_patterns([s.windows()], params)
    del s.years[2004]
    counted = _count_pairs(monkeypatch)
    [got] = analyze_patterns([s.windows(prev.pairs)], params)
    assert counted.pairs() == 0  # the other nine years keep all their 36 pairs
    [want] = analyze_patterns([s.windows()], params)
    _assert_identical(got, want)


# --- the cache itself ---


def test_the_cache_survives_pickling_and_still_saves_the_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = EngineParams(window_days=30)
    [s] = _market(1, range(2001, 2011))
    [prev] = analyze_patterns([s.windows()], params)
    assert prev.pairs is not None
    back = pickle.loads(pickle.dumps(prev))
    assert back.pairs is not None
    for f in fields(PairCache):
        a, b = getattr(prev.pairs, f.name), getattr(back.pairs, f.name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    s.years[2011] = _year_bars(np.random.default_rng(2), 2011, 30, "walk")
    s.latest = int(_window(2011, 30)[-1]) + 1
    item = pickle.loads(pickle.dumps(s.windows(back.pairs)))  # the trip to a Dask worker
    counted = _count_pairs(monkeypatch)
    [got] = analyze_patterns([item], params)
    assert counted.pairs() == 10
    _assert_identical(got, analyze_patterns([s.windows()], params)[0])


def test_cache_layout_years_fingerprints_and_triu_pairs() -> None:
    params = EngineParams(window_days=30)
    [s] = _market(1, range(2001, 2006))
    [r] = analyze_patterns([s.windows()], params)
    assert r.pairs is not None
    assert r.pairs.years.dtype == np.int16 and r.pairs.years.tolist() == list(r.years)
    assert r.pairs.fingerprints.dtype == np.uint64 and r.pairs.fingerprints.shape == (5,)
    assert r.pairs.corr.shape == r.pairs.counts.shape == (10,)
    assert r.pairs.counts.dtype == bool and r.pairs.counts.all()
    assert r.pattern is not None
    assert r.pattern.pattern_strength == pytest.approx(max(r.pairs.corr.mean(), 0.0), abs=1e-15)


def test_too_few_years_carry_no_cache() -> None:
    [s] = _market(1, range(2001, 2004))
    [r] = analyze_patterns([s.windows()], EngineParams(window_days=30, min_years=4))
    assert r.status == "insufficient_history" and r.pairs is None


def test_fingerprints_see_every_change_and_not_the_block_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(9)
    mask = (rng.random((50, 62)) < 0.6).astype(np.float64)
    x = rng.normal(size=(50, 62)) * mask
    fp = fingerprints(x, mask)
    assert np.unique(fp).shape[0] == 50
    monkeypatch.setattr(strength_module, "_HASH_CELLS", 62 * 3)  # blocks of 3 rows
    assert np.array_equal(fingerprints(x, mask), fp)
    on = np.flatnonzero(mask[0])
    variants = []
    y, m = x.copy(), mask.copy()
    y[0, on[0]] = np.nextafter(y[0, on[0]], np.inf)  # one ulp
    variants.append((y, m))
    y = x.copy()
    y[0, on[:2]] = -y[0, on[:2]]  # two sign flips: a linear hash would cancel them
    variants.append((y, m))
    y = x.copy()
    y[0, on[[0, 1]]] = y[0, on[[1, 0]]]  # two values swap columns
    variants.append((y, m))
    y, m = x.copy(), mask.copy()
    off = np.flatnonzero(mask[0] == 0)[0]
    m[0, off] = 1.0  # a bar with r = 0.0 where there was none
    variants.append((y, m))
    for y, m in variants:
        changed = fingerprints(y, m)
        assert changed[0] != fp[0]
        assert np.array_equal(changed[1:], fp[1:])


_M64 = (1 << 64) - 1
#: splitmix64's first outputs from state 0, as published with the generator.
_SPLITMIX64_FROM_0 = (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F)


def _splitmix64_finaliser(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _fingerprint_by_hand(values: list[float], bars: list[float]) -> int:
    """`fingerprints` of one row in Python integers, from its docstring."""
    total = 0
    for column, (value, bar) in enumerate(zip(values, bars, strict=True)):
        salt = _splitmix64_finaliser(((column + 1) * 0x9E3779B97F4A7C15) & _M64)
        pattern = struct.unpack("<Q", struct.pack("<d", value))[0]
        total += _splitmix64_finaliser(((pattern + (bar > 0)) & _M64) ^ salt)
    return total & _M64


def test_the_hash_is_splitmix64() -> None:
    """Pinned to the published sequence, so that the cell mix cannot drift unnoticed: a
    weaker mix still tells most rows apart, which is all the other tests can see."""
    by_hand = [_splitmix64_finaliser((i * 0x9E3779B97F4A7C15) & _M64) for i in (1, 2, 3)]
    assert by_hand == list(_SPLITMIX64_FROM_0)
    assert strength_module._salts(3).tolist() == list(_SPLITMIX64_FROM_0)


def test_fingerprints_are_the_documented_hash_bit_for_bit() -> None:
    rng = np.random.default_rng(4)
    mask = (rng.random((6, 9)) < 0.7).astype(np.float64)
    x = rng.normal(scale=5.0, size=(6, 9)) * mask
    x[1, :3], mask[1, :3] = 0.0, 1.0  # bars whose r is 0.0
    x[2], mask[2] = [1e300, -1e-300, 5e-324, -0.0, 2.5, -2.5, 1.0, 0.5, 3.0], 1.0
    mask[3] = 0.0  # a row with no bar at all
    x[3] = 0.0
    got = fingerprints(x, mask)
    assert got.tolist() == [
        _fingerprint_by_hand(v, m) for v, m in zip(x.tolist(), mask.tolist(), strict=True)
    ]


def test_fingerprints_hash_every_row_once_in_blocks_of_at_most_hash_cells(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(6)
    mask = (rng.random((40, 7)) < 0.6).astype(np.float64)  # more rows than columns
    x = rng.normal(size=(40, 7)) * mask
    want = fingerprints(x, mask)
    blocks: list[int] = []
    mix = strength_module._mix

    def counted(z: np.ndarray) -> np.ndarray:
        if z.ndim == 2:  # a block of rows (the salts are one row of constants)
            blocks.append(z.shape[0])
        return mix(z)

    monkeypatch.setattr(strength_module, "_HASH_CELLS", 7 * 3)
    monkeypatch.setattr(strength_module, "_mix", counted)
    assert np.array_equal(fingerprints(x, mask), want)
    assert blocks == [3] * 13 + [1]


# --- matching a prior ---


def _cache(years: list[int], fps: list[int], tag: int) -> PairCache:
    """A prior whose pair (i, j) holds corr tag + 10 i + j, so a slot names its pair."""
    a, b = np.triu_indices(len(years), 1)
    return PairCache(
        np.array(years, dtype=np.int16),
        np.array(fps, dtype=np.uint64),
        (tag + 10 * a + b).astype(np.float64),
        (a + b) % 2 == 1,
    )


def test_match_finds_each_unchanged_row_and_the_slots_of_its_pairs() -> None:
    priors = [_cache([2001, 2002, 2003], [10, 20, 30], 0), None, _cache([2005, 2007], [5, 7], 100)]
    # Symbol 0: 2002 changed, 2004 is new. Symbol 1: no prior (symbol 0's fingerprints do
    # not count). Symbol 2: 2006 is new and carries 2007's old fingerprint.
    years = [2001, 2002, 2003, 2004, 2001, 2002, 2005, 2006, 2007]
    fps = [10, 99, 30, 40, 10, 20, 5, 7, 7]
    got = strength_module._match(
        priors, np.array(fps, dtype=np.uint64), np.array(years), np.array([4, 2, 3])
    )
    assert got.row.tolist() == [0, -1, 2, -1, -1, -1, 0, -1, 1]
    held = [p for p in priors if p is not None]
    assert np.array_equal(got.corr, np.concatenate([p.corr for p in held]))
    assert np.array_equal(got.counts, np.concatenate([p.counts for p in held]))
    for i, j, want in ((0, 2, 0 + 10 * 0 + 2), (6, 8, 100 + 10 * 0 + 1)):
        assert got.corr[got.base[i] + got.row[j]] == want


def test_a_symbol_whose_years_share_no_day_still_keeps_its_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calendar alignment: the years' bars sit on different k, so there is no V and the
    result is insufficient_history, yet its pairs were computed and must be reused."""
    w = 10
    params = EngineParams(window_days=w, min_years=2, min_bars_per_year=2, alignment="calendar")
    s = _Symbol("D")
    for y, ks in ((2001, (-3, 2)), (2002, (-2, 3)), (2003, (-4, 4))):
        s.years[y] = (_window(y, w)[[w + ks[0], w + ks[1]]], np.array([10.0, 11.0]))
    s.latest = int(_window(2003, w)[-1]) + 1
    held = {2003: s.years.pop(2003)}
    [prev] = analyze_patterns([s.windows()], params)
    assert prev.status == "insufficient_history" and prev.years == (2001, 2002)
    assert prev.pairs is not None
    assert prev.pairs.years.tolist() == [2001, 2002] and prev.pairs.counts.tolist() == [False]
    s.years.update(held)
    counted = _count_pairs(monkeypatch)
    [got] = analyze_patterns([s.windows(prev.pairs)], params)
    assert counted.pairs() == 2  # 2003 with each old year
    assert got.status == "insufficient_history" and got.years == (2001, 2002, 2003)
    _assert_identical(got, analyze_patterns([s.windows()], params)[0])


# --- the state hands the cache back and counts it ---


def _store_market(store: StateStore, n_symbols: int, years: range, w: int) -> None:
    rng = np.random.default_rng(5)
    for y in years:
        days = _window(y, w)
        days = days[(days + 3) % 7 < 5]  # weekdays
        store.apply(
            [f"M{i}" for i in range(n_symbols) for _ in days],
            np.tile(days, n_symbols),
            rng.uniform(10, 20, days.shape[0] * n_symbols),
        )
        latest = days[-1] + 1
    store.apply([f"M{i}" for i in range(n_symbols)], np.full(n_symbols, latest), np.ones(n_symbols))


def test_windows_carry_the_cached_pairs_and_nbytes_counts_them() -> None:
    params = EngineParams(window_days=60)
    store = StateStore(params)
    _store_market(store, 30, range(1999, 2024), 60)  # 25 years, one bar per weekday
    assert all(store.windows(s).prior is None for s in store.symbols())
    results = analyze_patterns([store.windows(s) for s in store.symbols()], params)
    before = store.nbytes
    for r in results:
        store.set_pattern(r.symbol, r, encode_pattern_part(r))
    pair_bytes = 0
    for r in results:
        assert r.pairs is not None and len(r.pairs.years) == 25
        assert store.windows(r.symbol).prior is r.pairs
        pair_bytes += sum(a.nbytes for a in astuple(r.pairs))
    without = [replace(r, pairs=None) for r in results]
    bare = StateStore(params)
    _store_market(bare, 30, range(1999, 2024), 60)
    for r in without:
        bare.set_pattern(r.symbol, r, encode_pattern_part(r))
    assert store.nbytes - bare.nbytes == pair_bytes + 30 * store_module._PAIRS_OVERHEAD
    assert store.nbytes > before
    per_bar = store.nbytes / store.n_bars
    print(f"\nstate with cached pairs: {per_bar:.2f} bytes per held bar (25 years, W = 60)")
    assert per_bar <= 32


def test_the_pair_cache_overhead_estimate_is_close_to_traced_memory() -> None:
    params = EngineParams(window_days=30)
    symbols = _market(1, range(2001, 2026))
    [r] = analyze_patterns([symbols[0].windows()], params)
    assert r.pairs is not None
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        pairs = r.pairs
        copies = [PairCache(*(a.copy() for a in astuple(pairs))) for _ in range(500)]
        used = (tracemalloc.get_traced_memory()[0] - base) / len(copies)
    finally:
        tracemalloc.stop()
    data = sum(a.nbytes for a in astuple(r.pairs))
    estimate = data + store_module._PAIRS_OVERHEAD
    assert abs(used - estimate) < 0.05 * estimate
