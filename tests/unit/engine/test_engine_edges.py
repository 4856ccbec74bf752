"""Fixed cases for the edges mutation testing found unguarded (issue 14).

Each test pins one behaviour that a single-token change of the engine would break: the
fast correlation path of a large uniform batch, many qualifying years, V with exactly one
shared day offset, a side with no returns, the output dtypes; then the numerics (where
one-pass sums cancel, which figures must be redone exactly) and the batching (chunks,
input dtypes, symbols with no window). Figures come from the per-row reference
(`bench/baseline.py`), from the SPEC by hand, or from the engine along another path
(alone vs batched, exact vs fast), never from the same call's own output. `make mutation`
keeps them honest: see docs/mutation-survivors.md for the mutants nothing can catch.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

import service.engine.pattern as pattern_module
import service.engine.strength as strength_module
from bench.baseline import baseline_analyze
from service.calendar import date_to_day, day_to_date, spring_festival_date
from service.engine import EngineParams, Pattern, PatternResult, SymbolWindows, analyze_patterns
from service.engine.groups import flatten

Plan = dict[int, tuple[list[int], list[float]]]


def _symbol(plan: Plan, symbol: str = "E.SH") -> tuple[SymbolWindows, pd.DataFrame]:
    """Bars at festival-relative day offsets, plus a late bar that closes every window."""
    days: list[int] = []
    closes: list[float] = []
    for year in sorted(plan):
        sf = date_to_day(spring_festival_date(year))
        offsets, values = plan[year]
        days += [sf + o for o in offsets]
        closes += values
    latest = max(days) + 200  # outside every window (W <= 60 here): only moves latest
    frame = pd.DataFrame(
        {
            "date": [day_to_date(d) for d in [*days, latest]],
            "close": [*closes, 1.0],
        }
    )
    item = SymbolWindows(
        symbol, np.array(days, dtype=np.int32), np.array(closes, dtype=np.float64), latest
    )
    return item, frame


def _random_plan(rng: np.random.Generator, years: range, w: int, weekdays: bool = True) -> Plan:
    """A random walk with a common upward drift on (week)days of each window [SF-w, SF+w]."""
    plan: Plan = {}
    for year in years:
        sf = spring_festival_date(year)
        offsets = [
            o for o in range(-w, w + 1) if not weekdays or (sf + dt.timedelta(o)).weekday() < 5
        ]
        steps = rng.normal(0.01, 0.02, len(offsets))  # the drift makes years correlate
        closes = 30.0 * np.exp(np.cumsum(steps))
        plan[year] = (offsets, closes.tolist())
    return plan


def _assert_matches_reference(engine: PatternResult, frame: pd.DataFrame, params: EngineParams):
    reference = baseline_analyze(engine.symbol, frame, params)
    assert (engine.status, engine.years) == (reference.status, reference.years)
    assert engine.curve_k.tolist() == reference.curve_k.tolist()
    assert engine.curve_n.tolist() == reference.curve_n.tolist()
    np.testing.assert_allclose(engine.curve_mean, reference.curve_mean, rtol=1e-9, atol=1e-9)
    assert (engine.pattern is None) == (reference.pattern is None)
    if engine.pattern is None or reference.pattern is None:
        return
    for f in fields(Pattern):
        got, want = getattr(engine.pattern, f.name), getattr(reference.pattern, f.name)
        if want is None or isinstance(want, int):
            assert got == want, f.name
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), f.name


@pytest.fixture
def exact_pairs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the exact two-pass fallback: how many pairs it had to redo, per call."""
    calls: list[int] = []
    exact = strength_module._exact

    def spy(x, mask, a, b):
        calls.append(int(a.shape[0]))
        return exact(x, mask, a, b)

    monkeypatch.setattr(strength_module, "_exact", spy)
    return calls


W60 = EngineParams(window_days=60, min_years=2, min_bars_per_year=10)


@pytest.mark.parametrize("extra_long", [False, True], ids=["uniform", "with-a-4-year-symbol"])
def test_large_uniform_chunk_takes_the_fast_path_and_matches_the_reference(
    monkeypatch: pytest.MonkeyPatch, extra_long: bool, exact_pairs: list[int]
) -> None:
    # 40 symbols x 3 years at W = 60: 40 * 122 cells >= the view threshold, so the pairs are
    # summed over (symbols, u, K) views -- of the whole cube, or of gathered rows when a
    # symbol with another number of years shares the chunk.
    rng = np.random.default_rng(14)
    plans = [_random_plan(rng, range(2011, 2014), 60) for _ in range(40)]
    if extra_long:
        plans.append(_random_plan(rng, range(2011, 2015), 60))
    pairs = [_symbol(plan, f"S{i}.SH") for i, plan in enumerate(plans)]
    assert strength_module._VIEW_MIN_CELLS <= 40 * (2 * 60 + 2)
    views: list[int] = []
    by_view = strength_module._sums_by_view

    def spy(xc, xc2, mask, rows, u):
        views.append(u)
        return by_view(xc, xc2, mask, rows, u)

    monkeypatch.setattr(strength_module, "_sums_by_view", spy)
    results = analyze_patterns([item for item, _ in pairs], W60)
    assert views == [3]  # the 3-year bucket went through the view; a lone 4-year one did not
    # Ordinary random walks: the fast one-pass sums answer every pair themselves (a broken
    # fast path would hand all of them to the exact fallback and still look right).
    assert exact_pairs == []
    for result, (_, frame) in zip(results, pairs, strict=True):
        assert result.status == "ok" and result.pattern is not None
        assert result.pattern.pattern_strength > 0.5  # the common drift: a real figure
        _assert_matches_reference(result, frame, W60)


def test_a_bucket_as_tall_as_the_cube_is_wide_next_to_another_bucket() -> None:
    # 61 two-year symbols: 122 rows, exactly the cube width at W = 60, in a cube that also
    # holds a three-year symbol. Only the two-year rows may be viewed as (61, 2, K).
    rng = np.random.default_rng(61)
    items = [_symbol(_random_plan(rng, range(2011, 2013), 60), f"T{i}")[0] for i in range(61)]
    items.append(_symbol(_random_plan(rng, range(2011, 2014), 60), "LONG")[0])
    together = analyze_patterns(items, W60)
    for item, result in zip(items, together, strict=True):
        [alone] = analyze_patterns([item], W60)
        assert result.pattern == alone.pattern


def test_fast_correlations_equal_the_exact_two_pass_ones(
    monkeypatch: pytest.MonkeyPatch, exact_pairs: list[int]
) -> None:
    """The fast path's own figures, compared with the precise fallback pair by pair."""
    rng = np.random.default_rng(5)
    items = [_symbol(_random_plan(rng, range(2001, 2005), 30), f"F{i}")[0] for i in range(6)]
    params = EngineParams(window_days=30, min_years=2, min_bars_per_year=10)
    gathered: list[int] = []
    by_gather = strength_module._sums_by_gather

    def spy(xc, xc2, mask, a, b):
        gathered.append(int(a.shape[0]))
        return by_gather(xc, xc2, mask, a, b)

    monkeypatch.setattr(strength_module, "_sums_by_gather", spy)
    fast = analyze_patterns(items, params)
    assert sum(gathered) == 6 * 6  # a small bucket: each pair's sums gathered once
    assert exact_pairs == []  # nothing went through the fallback
    monkeypatch.setattr(strength_module, "_TOLERANCE", 2.0)  # every pair through it
    precise = analyze_patterns(items, params)
    assert sum(exact_pairs) == 6 * 6  # 4 years: 6 pairs per symbol
    for a, b in zip(fast, precise, strict=True):
        assert a.pattern is not None and b.pattern is not None
        assert a.pattern.pattern_strength == pytest.approx(b.pattern.pattern_strength, rel=1e-12)
        assert a.pattern.pattern_strength > 0.0


def test_confidence_with_more_than_ten_years_matches_the_reference() -> None:
    # A bar on every day of 13 windows: density 1, every k has n = 13 >= 3, |Y| / 10 capped.
    rng = np.random.default_rng(12)
    params = EngineParams(window_days=20, min_years=3, min_bars_per_year=10)
    item, frame = _symbol(_random_plan(rng, range(2005, 2018), 20, weekdays=False))
    [result] = analyze_patterns([item], params)
    assert len(result.years) == 13 and result.pattern is not None
    assert result.pattern.confidence_level == pytest.approx(1.0, abs=1e-12)
    _assert_matches_reference(result, frame, params)


def test_calendar_alignment_with_exactly_one_shared_day_offset() -> None:
    # 2016 at -5, -2, 3 and 2017 at -4, -2, 2: only k = -2 (the anchors, r = 0) has n = 2.
    plan: Plan = {2016: ([-5, -2, 3], [90.0, 100.0, 104.0]), 2017: ([-4, -2, 2], [80, 100, 95])}
    params = EngineParams(window_days=10, min_years=2, min_bars_per_year=1, alignment="calendar")
    item, frame = _symbol(plan)
    [result] = analyze_patterns([item], params)
    assert result.status == "ok" and result.pattern is not None
    assert result.curve_k.tolist() == [-5, -4, -2, 2, 3]
    assert result.curve_n.tolist() == [1, 1, 2, 1, 1]
    assert (result.pattern.peak_day, result.pattern.trough_day) == (-2, -2)
    # |Y| = 2 -> 0.08; density 6 / (2 * 100/7) -> 0.3 * 0.21; V = {-2} has no n >= 3
    assert result.pattern.confidence_level == pytest.approx(0.08 + 0.3 * 0.21)
    _assert_matches_reference(result, frame, params)


def test_no_pre_side_returns_give_positive_zero_and_a_small_after_side_gives_none() -> None:
    # Only the anchor before the festival: the pre side has no return at all. The post side's
    # returns are small (std about 0.46 < 1): the ratio is still infinite, SPEC 6 null.
    plan: Plan = {y: ([-1, 0, 1], [100.0, 100.5, 100.2]) for y in (2001, 2002)}
    item, frame = _symbol(plan)
    params = EngineParams(window_days=10, min_years=2, min_bars_per_year=1)
    [result] = analyze_patterns([item], params)
    p = result.pattern
    assert p is not None
    assert p.volatility_before == 0.0 and math.copysign(1.0, p.volatility_before) == 1.0
    assert 0.0 < p.volatility_after < 1.0
    assert p.volatility_ratio is None
    assert repr(p.volatility_before) == "0.0"  # what SPEC 6 output would print
    _assert_matches_reference(result, frame, params)


def test_one_pre_side_return_gives_positive_zero_too() -> None:
    plan: Plan = {2001: ([-2, -1, 0, 1], [90.0, 100.0, 100.5, 100.2])}
    plan[2002] = ([-1, 0, 1], [100.0, 100.5, 100.2])
    [result] = analyze_patterns([_symbol(plan)[0]], EngineParams(10, 2, 1))
    p = result.pattern
    assert p is not None and repr(p.volatility_before) == "0.0" and p.volatility_ratio is None


def test_curve_dtypes_are_int32_float64_int32() -> None:
    plan: Plan = {y: ([-2, -1, 0, 1], [95.0, 100.0, 104.0, 101.0]) for y in (2001, 2002)}
    item, _ = _symbol(plan)
    ok, short = analyze_patterns([item, _symbol({2001: plan[2001]})[0]], EngineParams(10, 2, 1))
    assert ok.status == "ok" and short.status == "insufficient_history"
    for result in (ok, short):
        assert result.curve_k.dtype == np.int32
        assert result.curve_mean.dtype == np.float64
        assert result.curve_n.dtype == np.int32
    assert ok.curve_k.tolist() == [-2, -1, 1, 2] and ok.curve_n.tolist() == [2, 2, 2, 2]


def test_shared_empty_curves_of_insufficient_results_are_read_only() -> None:
    # Every insufficient result shares one set of empty arrays: nobody may write to them.
    [short] = analyze_patterns([_symbol({2001: ([-1, 1], [1.0, 2.0])})[0]], EngineParams(10, 2, 1))
    assert short.status == "insufficient_history"
    for array in (short.curve_k, short.curve_mean, short.curve_n):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0


# --------------------------------------------------------------------------- numerics


def _steady_then_noisy(rng: np.random.Generator, growth: float, noise: float, steady_pre: bool):
    """8 bars (k = -4..-1 | 0..3): one side a steady trend (returns nearly equal), one noisy."""
    steady = growth * (1.0 + rng.normal(0.0, noise, 4))
    noisy = 1.0 + rng.normal(0.0, 0.03, 4)
    steps = np.concatenate([steady, noisy] if steady_pre else [noisy, steady])
    return list(range(-4, 4)), list(10.0 * np.cumprod(steps))


@pytest.mark.parametrize("steady_pre", [True, False], ids=["steady-pre", "steady-post"])
@pytest.mark.parametrize(
    ("growth", "noise"), [(1.5, 1e-6), (1.0001, 1e-9)], ids=["returns-50", "returns-0.01"]
)
def test_volatility_of_a_steady_trend_on_one_side_keeps_its_digits(
    steady_pre: bool, growth: float, noise: float
) -> None:
    # The one-pass sums cancel on the steady side only (returns of 50% or of 0.01%, each
    # varying by a few parts in 1e6..1e7): that side alone must take the two-pass figure.
    rng = np.random.default_rng(8)
    plan: Plan = {y: _steady_then_noisy(rng, growth, noise, steady_pre) for y in (2011, 2012)}
    item, frame = _symbol(plan)
    params = EngineParams(window_days=10, min_years=2, min_bars_per_year=1)
    [result] = analyze_patterns([item], params)
    _assert_matches_reference(result, frame, params)


def _flat_common_part_far_from_row_mean(rng: np.random.Generator, follow: np.ndarray):
    """35 bars, k = -30..-1 | 1..5: r about -50 on k <= -6, then on the 10 bars k = -5..5
    r = 1e-4 * `follow` + noise: nearly constant, far from the row's own mean (about -36)."""
    far = 50.0 * (1.0 + rng.normal(0.0, 0.01, 25))
    near = 100.0 * (1.0 + 1e-6 * (follow + rng.normal(0.0, 0.3, 10)))
    near[4] = 100.0  # the anchor, k = -1
    return list(range(-30, 5)), [*far.tolist(), *near.tolist()]


@pytest.mark.parametrize("flat_first", [True, False], ids=["flat-side-a", "flat-side-b"])
def test_correlation_redone_exactly_where_the_one_pass_sums_cancel(flat_first: bool) -> None:
    # The long year's values on the common k vary by ~1e-4 around a point ~36 from its
    # mean: its variance there is ~1e-9 of its sum of squares, which the one-pass formula
    # cannot resolve; the pair must go through the exact two-pass path.
    rng = np.random.default_rng(21)
    short_r = rng.normal(0.0, 3.0, 10)
    short_r[4] = 0.0
    short = ([*range(-9, -4), *range(0, 5)], (100.0 * (1.0 + short_r / 100.0)).tolist())
    long = _flat_common_part_far_from_row_mean(rng, short_r)
    plan: Plan = {2011: long, 2012: short} if flat_first else {2011: short, 2012: long}
    item, frame = _symbol(plan)
    params = EngineParams(window_days=40, min_years=2, min_bars_per_year=1)
    [result] = analyze_patterns([item], params)
    assert result.pattern is not None and result.pattern.pattern_strength > 0.5
    _assert_matches_reference(result, frame, params)


@pytest.mark.parametrize("constant_year", [2011, 2014], ids=["side-a", "side-b"])
@pytest.mark.parametrize("tolerance", [None, 2.0], ids=["default", "every-pair-exact"])
def test_a_side_constant_on_the_common_days_is_skipped_even_off_zero(
    monkeypatch: pytest.MonkeyPatch, tolerance: float | None, constant_year: int
) -> None:
    # Calendar alignment: one year's ten post bars all close at 103.5 (r = 3.499999999999992,
    # whose mean over the row does not round back to it), and they are its only days in
    # common with the other years. SPEC: zero variance on a side -> the pair is skipped.
    rng = np.random.default_rng(4)
    shape = np.linspace(1.0, 6.0, 10)
    plan: Plan = {}
    for year in range(2011, 2015):
        if year == constant_year:
            plan[year] = ([-12, -8, *range(1, 11)], [95.0, 100.0, *[103.5] * 10])
        else:
            post = 100.0 * (1.0 + (shape + rng.normal(0.0, 0.5, 10)) / 100.0)
            plan[year] = ([-3, -2, *range(1, 11)], [98.0, 100.0, *post.tolist()])
    if tolerance is not None:  # every pair through the exact path, all in one call
        monkeypatch.setattr(strength_module, "_TOLERANCE", tolerance)
    item, frame = _symbol(plan)
    params = EngineParams(window_days=20, min_years=2, min_bars_per_year=1, alignment="calendar")
    [result] = analyze_patterns([item], params)
    assert result.pattern is not None and result.pattern.pattern_strength > 0.5
    _assert_matches_reference(result, frame, params)


# --------------------------------------------------------------------------- batches


def test_flatten_normalises_dtypes_for_one_item_and_for_many() -> None:
    one = SymbolWindows(
        "A", np.array([100, 101], dtype=np.int64), np.array([1.5, 2.5], dtype=np.float32), 200
    )
    two = SymbolWindows("B", np.array([102], dtype=np.int64), np.array([3.0], np.float32), 300)
    for batch in (flatten([one]), flatten([one, two])):
        assert batch.days.dtype == np.int32 and batch.closes.dtype == np.float64
        assert batch.offsets.dtype == np.int64 and batch.latest.dtype == np.int64
    assert flatten([one, two]).offsets.tolist() == [0, 2, 3]


def test_other_input_dtypes_give_the_same_result() -> None:
    rng = np.random.default_rng(2)
    item, _ = _symbol(_random_plan(rng, range(2011, 2014), 20))
    item = SymbolWindows(item.symbol, item.days, item.closes.astype(np.float32), item.latest)
    same = SymbolWindows(
        item.symbol, item.days.astype(np.int64), item.closes.astype(np.float64), item.latest
    )
    params = EngineParams(window_days=20, min_years=2, min_bars_per_year=10)
    for alone in (True, False):
        batch = [item] if alone else [item, same]
        got = analyze_patterns(batch, params)[0]
        [want] = analyze_patterns([same], params)
        assert got.pattern == want.pattern and got.years == want.years
        assert got.curve_mean.tolist() == want.curve_mean.tolist()


def test_a_symbol_with_no_bar_in_any_window_has_no_years() -> None:
    # Not what SymbolWindows promises, but it must not break the batch (late 2099 and a
    # summer day lie in no window).
    stray = [date_to_day(dt.date(2099, 12, 30)), date_to_day(dt.date(2099, 12, 31))]
    summer = [date_to_day(dt.date(2010, 7, 1))]
    good, _ = _symbol({y: ([-2, -1, 1, 2], [1.0, 2.0, 3.0, 4.0]) for y in (2001, 2002)})
    items = [
        SymbolWindows("X", np.array(stray, np.int32), np.array([1.0, 2.0]), stray[-1]),
        SymbolWindows("Y", np.array(summer, np.int32), np.array([1.0]), summer[0] + 400),
        good,
    ]
    for result in analyze_patterns(items, EngineParams(10, 2, 1)):
        expected = "ok" if result.symbol == good.symbol else "insufficient_history"
        assert result.status == expected
        assert (result.years == ()) == (result.symbol != good.symbol)


@pytest.mark.parametrize("cells", [620, 680])
def test_chunks_are_full_never_exceed_the_bound_and_never_split_a_symbol(
    monkeypatch: pytest.MonkeyPatch, cells: int
) -> None:
    # W = 30: a cube row is 62 cells; 620..681 cells -> at most 10 rows (years) per chunk,
    # unless one symbol alone has more. The first symbol (12 years) is such a symbol;
    # 3 + 3 + 4 fills a chunk exactly.
    rng = np.random.default_rng(30)
    n_years = [12, 3, 3, 4, 5, 2, 2, 2, 6, 3, 3, 2]
    items = [
        _symbol(_random_plan(rng, range(2001, 2001 + n), 30), f"C{i}")[0]
        for i, n in enumerate(n_years)
    ]
    params = EngineParams(window_days=30, min_years=2, min_bars_per_year=10)
    whole = analyze_patterns(items, params)
    chunks: list[list[int]] = []
    chunk_stats = pattern_module._chunk_stats

    def spy(batch, g, p):
        chunks.append(np.unique(g.symbol).tolist())
        assert g.symbol.shape[0] == sum(n_years[s] for s in chunks[-1])  # whole symbols
        return chunk_stats(batch, g, p)

    monkeypatch.setattr(pattern_module, "_CUBE_CELLS", cells)
    monkeypatch.setattr(pattern_module, "_chunk_stats", spy)
    chunked = analyze_patterns(items, params)
    assert [s for chunk in chunks for s in chunk] == list(range(len(items)))  # once, in order
    rows = [sum(n_years[s] for s in chunk) for chunk in chunks]
    assert all(r <= 10 or len(c) == 1 for r, c in zip(rows, chunks, strict=True))
    for r, nxt in zip(rows, chunks[1:], strict=False):  # greedy: the next symbol did not fit
        assert r + n_years[nxt[0]] > 10
    assert rows == [12, 10, 9, 8, 8]
    for a, b in zip(whole, chunked, strict=True):
        assert a.pattern == b.pattern and a.curve_mean.tolist() == b.curve_mean.tolist()
