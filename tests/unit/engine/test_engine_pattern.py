"""SPEC 3-4 on tiny hand-computed symbols: every number below can be redone on paper."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import statistics

import numpy as np
import pytest

from service.calendar import date_to_day, spring_festival_date
from service.engine import EngineParams, PatternResult, SymbolWindows, analyze_patterns

Plan = dict[int, tuple[list[int], list[float]]]


def windows(plan: Plan, latest: dt.date | None = None, symbol: str = "T.SH") -> SymbolWindows:
    """Bars at festival-relative calendar offsets; `latest` defaults to closing every window."""
    days: list[int] = []
    closes: list[float] = []
    for year in sorted(plan):
        sf = date_to_day(spring_festival_date(year))
        offsets, values = plan[year]
        days += [sf + o for o in offsets]
        closes += values
    latest_day = max(days) + 200 if latest is None else date_to_day(latest)
    return SymbolWindows(
        symbol, np.array(days, dtype=np.int32), np.array(closes, dtype=np.float64), latest_day
    )


def one(plan: Plan, params: EngineParams, latest: dt.date | None = None) -> PatternResult:
    [result] = analyze_patterns([windows(plan, latest)], params)
    return result


# Y1: r = -20 0 | 10 -10   Y2: r = 0 0 | 20 -20   Y3: r = 0 25 0 | 30 5   (A = 100, 50, 100)
HAND: Plan = {
    2016: ([-5, -2, 0, 3], [80, 100, 110, 90]),
    2017: ([-3, -1, 1, 2], [50, 50, 60, 40]),
    2018: ([-4, -2, -1, 4, 6], [100, 125, 100, 130, 105]),
}
W10 = EngineParams(window_days=10, min_years=3, min_bars_per_year=1)


def test_trading_alignment_curve_and_statistics() -> None:
    result = one(HAND, W10)
    assert result.status == "ok" and result.years == (2016, 2017, 2018)
    assert result.curve_k.tolist() == [-3, -2, -1, 1, 2]
    assert result.curve_n.tolist() == [1, 3, 3, 3, 3]
    assert result.curve_mean.tolist() == pytest.approx([0, 5 / 3, 0, 20, -25 / 3])
    p = result.pattern
    assert p is not None
    assert (p.peak_day, p.trough_day) == (1, 2)
    assert p.average_return_before == pytest.approx(25 / 3)  # pre_y = 25, 0, 0
    assert p.average_return_after == pytest.approx(-25 / 3)  # post_y = -10, -20, 5
    assert p.consistency_score == pytest.approx(3 / 6)  # pre: +00 vs +; post: --+ vs -
    pre_q = [25, 0, 25, -20]
    post_q = [10, 100 * (90 / 110 - 1), 20, 100 * (40 / 60 - 1), 30, 100 * (105 / 130 - 1)]
    assert p.volatility_before == pytest.approx(statistics.stdev(pre_q))
    assert p.volatility_after == pytest.approx(statistics.stdev(post_q))
    assert p.volatility_ratio == pytest.approx(p.volatility_after / p.volatility_before)
    assert p.pattern_strength == 0.0  # no pair shares 5 k
    # |Y|=3 -> 0.12; density 13 / (3 * 100/7) -> 0.3 * 91/300; all 4 k of V have n >= 3
    assert p.confidence_level == pytest.approx(0.12 + 0.3 * 91 / 300 + 0.3)


def test_calendar_alignment_uses_day_offsets() -> None:
    result = one(HAND, EngineParams(10, 3, 1, alignment="calendar"))
    assert result.curve_k.tolist() == [-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6]
    assert result.curve_n.tolist() == [1, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1]
    assert result.curve_mean.tolist() == pytest.approx(
        [-20, 0, 0, 12.5, 0, 10, 20, -20, -10, 30, 5]
    )
    p = result.pattern
    assert p is not None
    assert (p.peak_day, p.trough_day) == (-2, -1)  # V = {-2, -1}
    assert p.average_return_before == pytest.approx(25 / 3)  # alignment-free figures
    assert p.confidence_level == pytest.approx(0.12 + 0.3 * 91 / 300 + 0.0)  # no n_k >= 3


def _six(closes: list[float]) -> tuple[list[int], list[float]]:
    """Six bars: k = -3..-1 and 1..3 (trading), anchor the third close."""
    return [-3, -2, -1, 0, 1, 2], closes


UP = _six([90, 95, 100, 105, 110, 115])  # r = -10 -5 0 5 10 15
UP2 = _six([80, 90, 100, 110, 120, 130])  # r = 2 * UP: correlation 1
DOWN = _six([110, 105, 100, 95, 90, 85])  # correlation -1 with both
FLAT = _six([100.0] * 6)  # zero variance
SPIKY = _six([90, 100, 100, 100, 100, 110])  # r = -10 0 0 0 0 10
FOUR = ([-2, -1, 0, 1], [100.0, 100.0, 101.0, 99.0])  # 4 bars: at most 4 common k


@pytest.mark.parametrize(
    ("years", "expected"),
    [
        ([UP, UP2], 1.0),
        ([UP, UP2, DOWN], 0.0),  # mean (1 - 1 - 1) / 3 floored at 0
        ([UP, UP2, FLAT], 1.0),  # pairs with the flat year have zero variance: skipped
        ([FLAT, UP, UP2], 1.0),  # the flat year first: the first side of its pairs
        ([UP, FLAT, UP2], 1.0),  # in the middle: the second side of one pair, first of one
        ([FLAT, UP], 0.0),
        ([UP, FLAT], 0.0),
        ([UP, FOUR], 0.0),  # 4 common k: no pair counts
        ([UP, UP2, FOUR], 1.0),
        ([UP, SPIKY], 5 / math.sqrt(35)),  # 250 / sqrt(437.5 * 200)
        ([FLAT, FLAT], 0.0),
    ],
)
def test_pattern_strength_pair_rules(
    years: list[tuple[list[int], list[float]]], expected: float
) -> None:
    plan = {2001 + i: y for i, y in enumerate(years)}
    result = one(plan, EngineParams(10, 2, 1))
    assert result.pattern is not None
    assert result.pattern.pattern_strength == pytest.approx(expected, abs=1e-12)


def test_flat_prices_give_ratio_one_and_ties_to_smallest_k() -> None:
    result = one({2001: FLAT, 2002: FLAT, 2003: FLAT}, EngineParams(10, 2, 1))
    p = result.pattern
    assert p is not None
    assert (p.volatility_before, p.volatility_after, p.volatility_ratio) == (0.0, 0.0, 1.0)
    assert p.peak_day == p.trough_day == -3
    assert p.consistency_score == 1.0  # every sign is 0, as are the averages


def test_ties_between_non_extreme_k() -> None:
    # r: -5 0 | 10 10 in both years: peak ties k=1 and k=2 -> 1; trough is -2
    plan = {y: ([-2, -1, 0, 1], [95.0, 100.0, 110.0, 110.0]) for y in (2001, 2002)}
    p = one(plan, EngineParams(10, 2, 1)).pattern
    assert p is not None and (p.peak_day, p.trough_day) == (1, -2)


def test_volatility_with_fewer_than_two_values_and_infinite_ratio() -> None:
    # Only the anchor before the festival: no pre-side return at all -> 0.0, ratio None.
    plan = {y: ([-1, 0, 1], [100.0, 110.0, 99.0]) for y in (2001, 2002)}
    p = one(plan, EngineParams(10, 2, 1)).pattern
    assert p is not None
    assert p.volatility_before == 0.0 and p.volatility_after > 0 and p.volatility_ratio is None
    # Exactly one pre-side return in the pool: still 0.0.
    plan[2001] = ([-2, -1, 0, 1], [90.0, 100.0, 110.0, 99.0])
    p = one(plan, EngineParams(10, 2, 1)).pattern
    assert p is not None and p.volatility_before == 0.0 and p.volatility_ratio is None


def test_open_windows_are_excluded() -> None:
    sf_2018 = spring_festival_date(2018)
    edge = sf_2018 + dt.timedelta(days=10)
    result = one(HAND, EngineParams(10, 2, 1), latest=edge)  # latest == SF + W: still open
    assert (result.status, result.years) == ("ok", (2016, 2017))
    after = one(HAND, EngineParams(10, 2, 1), latest=edge + dt.timedelta(days=1))
    assert after.years == (2016, 2017, 2018)


def test_min_bars_per_year_and_pre_post_requirements() -> None:
    assert one(HAND, EngineParams(10, 1, 4)).years == (2016, 2017, 2018)
    assert one(HAND, EngineParams(10, 1, 5)).years == (2018,)
    no_post = {**HAND, 2019: ([-3, -2, -1], [1.0, 2.0, 3.0])}
    no_pre = {**HAND, 2019: ([0, 1, 2], [1.0, 2.0, 3.0])}
    assert one(no_post, EngineParams(10, 1, 1)).years == (2016, 2017, 2018)
    assert one(no_pre, EngineParams(10, 1, 1)).years == (2016, 2017, 2018)


def test_years_filter_and_min_years() -> None:
    filtered = one(HAND, EngineParams(10, 2, 1, years=frozenset({2016, 2018, 2030})))
    assert (filtered.status, filtered.years) == ("ok", (2016, 2018))
    short = one(HAND, EngineParams(10, 4, 1))
    assert (short.status, short.years, short.pattern) == ("insufficient_history", HAND_YEARS, None)
    assert len(short.curve_k) == len(short.curve_mean) == len(short.curve_n) == 0


HAND_YEARS = (2016, 2017, 2018)


def test_empty_v_is_insufficient_but_keeps_years() -> None:
    disjoint = {2016: ([-5, 3], [1.0, 2.0]), 2017: ([-4, 2], [1.0, 2.0])}
    result = one(disjoint, EngineParams(10, 2, 1, alignment="calendar"))
    assert (result.status, result.years, result.pattern) == (
        "insufficient_history",
        (2016, 2017),
        None,
    )
    lone = one(HAND, EngineParams(10, 1, 1, years=frozenset({2017})))
    assert (lone.status, lone.years) == ("insufficient_history", (2017,))


def test_first_and_last_window_years() -> None:
    early = {1901: UP, 1902: UP2}
    assert one(early, EngineParams(10, 2, 1)).years == (1901, 1902)
    late = {2098: UP, 2099: UP2}
    result = one(late, EngineParams(10, 2, 1), latest=dt.date(2099, 12, 31))
    assert (result.status, result.years) == ("ok", (2098, 2099))


def test_bars_outside_every_window_are_ignored() -> None:
    item = windows({2098: UP, 2099: UP2}, latest=dt.date(2099, 12, 31))
    stray = [date_to_day(dt.date(2099, 12, 30)), date_to_day(dt.date(2099, 12, 31))]
    noisy = SymbolWindows(
        item.symbol,
        np.append(item.days, stray).astype(np.int32),
        np.append(item.closes, [1.0, 2.0]),
        item.latest,
    )
    params = EngineParams(60, 2, 1)
    [a, b] = analyze_patterns([item, noisy], params)
    assert a.years == b.years == (2098, 2099)
    assert a.pattern == b.pattern


def test_empty_inputs() -> None:
    assert analyze_patterns([], W10) == []
    empty = SymbolWindows(
        "E.SH", np.zeros(0, np.int32), np.zeros(0), date_to_day(dt.date(2020, 1, 1))
    )
    [result] = analyze_patterns([empty], W10)
    assert (result.symbol, result.status, result.years) == ("E.SH", "insufficient_history", ())


def test_volatility_of_a_steady_trend_keeps_its_digits() -> None:
    # q ~ 50 +- 1e-4: the one-pass sums cancel, so the two-pass fallback must kick in.
    rng = np.random.default_rng(3)
    plan: Plan = {}
    pre_q: list[float] = []
    post_q: list[float] = []
    for year in (2011, 2012, 2013):
        growth = 1.5 + rng.normal(0.0, 1e-6, 8)
        closes = list(10.0 * np.cumprod(growth))
        plan[year] = (list(range(-4, 4)), closes)
        q = [100 * (b / a - 1) for a, b in itertools.pairwise(closes)]
        pre_q += q[:3]
        post_q += q[3:]
    p = one(plan, EngineParams(10, 2, 1)).pattern
    assert p is not None
    assert p.volatility_before == pytest.approx(statistics.stdev(pre_q), rel=1e-9)
    assert p.volatility_after == pytest.approx(statistics.stdev(post_q), rel=1e-9)
