"""The per-row baseline is the oracle for the vectorised engine, so first it is checked by
hand on tiny inputs (every number below can be redone on paper), then the engine must
agree with it on random small symbols (SPEC 3-5)."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.baseline import baseline_analyze, baseline_position_and_signal
from service.calendar import date_to_day, spring_festival_date
from service.engine import analyze_patterns, position_and_signal
from service.engine.types import EngineParams, Pattern, PatternResult, SymbolWindows

_D = dt.timedelta


# --------------------------------------------------------------------------- by hand


def _hand_frame() -> pd.DataFrame:
    """Three festival years with 5 window bars each, plus one late bar closing them."""
    rows: list[tuple[dt.date, float]] = []
    plan = {
        2018: ([-3, -2, -1, 7, 8], [100, 110, 100, 105, 120]),
        2019: ([-3, -2, -1, 7, 8], [50, 40, 50, 55, 60]),
        2020: ([-2, -1, 7, 8, 9], [80, 100, 100, 90, 120]),
    }
    for year, (offsets, closes) in plan.items():
        sf = spring_festival_date(year)
        rows += [(sf + _D(days=o), float(c)) for o, c in zip(offsets, closes, strict=True)]
    rows.append((dt.date(2020, 12, 31), 1.0))  # outside every window: only moves latest
    return pd.DataFrame(rows, columns=["date", "close"])


_HAND = EngineParams(window_days=10, min_years=3, min_bars_per_year=5)


def test_hand_example_trading_alignment() -> None:
    result = baseline_analyze("X.SH", _hand_frame(), _HAND)
    assert result.status == "ok"
    assert result.years == (2018, 2019, 2020)
    # r per year, trading k:
    #   2018: -3:0  -2:10  -1:0  1:5   2:20
    #   2019: -3:0  -2:-20 -1:0  1:10  2:20
    #   2020:       -2:-20 -1:0  1:0   2:-10  3:20
    assert result.curve_k.tolist() == [-3, -2, -1, 1, 2, 3]
    assert result.curve_n.tolist() == [2, 3, 3, 3, 3, 1]
    assert result.curve_mean.tolist() == pytest.approx([0, -10, 0, 5, 10, 20])
    p = result.pattern
    assert p is not None
    assert p.peak_day == 2 and p.trough_day == -2  # k=3 has n=1: not in V
    assert p.average_return_before == pytest.approx((0 + 0 + 25) / 3)
    assert p.average_return_after == pytest.approx(20)
    # signs: pre 0,0,+ vs +  -> 1 agree; post +,+,+ vs + -> 3 agree
    assert p.consistency_score == pytest.approx(4 / 6)
    pre_q = [10, 100 * (100 / 110 - 1), -20, 25, 25]
    post_q = [5, 100 * (120 / 105 - 1), 10, 100 * (60 / 55 - 1), 0, -10, 100 * (120 / 90 - 1)]
    assert p.volatility_before == pytest.approx(statistics.stdev(pre_q))
    assert p.volatility_after == pytest.approx(statistics.stdev(post_q))
    assert p.volatility_ratio == pytest.approx(p.volatility_after / p.volatility_before)
    # only 2018/2019 share >= 5 k: x=[0,10,0,5,20], y=[0,-20,0,10,20]
    assert p.pattern_strength == pytest.approx(180 / math.sqrt(280 * 880))
    # density 15 / (3 * 100/7) = 0.35; significance 4 of 5 k in V have n >= 3
    assert p.confidence_level == pytest.approx(0.4 * 0.3 + 0.3 * 0.35 + 0.3 * 0.8)


def test_hand_example_calendar_alignment() -> None:
    params = EngineParams(window_days=10, min_bars_per_year=5, alignment="calendar")
    result = baseline_analyze("X.SH", _hand_frame(), params)
    assert result.curve_k.tolist() == [-3, -2, -1, 7, 8, 9]
    assert result.curve_n.tolist() == [2, 3, 3, 3, 3, 1]
    assert result.curve_mean.tolist() == pytest.approx([0, -10, 0, 5, 10, 20])


def test_open_window_filters_and_thresholds() -> None:
    frame = _hand_frame()
    sf_2020 = spring_festival_date(2020)
    # latest == SF + W: the 2020 window is still open
    at_edge = frame[frame.date != dt.date(2020, 12, 31)]
    at_edge = pd.concat([at_edge, pd.DataFrame({"date": [sf_2020 + _D(days=10)], "close": [9.0]})])
    result = baseline_analyze("X.SH", at_edge, _HAND)
    assert (result.status, result.years) == ("insufficient_history", (2018, 2019))
    assert result.pattern is None and len(result.curve_k) == 0
    assert baseline_analyze("X.SH", at_edge, EngineParams(10, 2, 5)).years == (2018, 2019)

    filtered = EngineParams(10, 2, 5, years=frozenset({2018, 2020}))
    assert baseline_analyze("X.SH", frame, filtered).years == (2018, 2020)
    too_few_bars = EngineParams(10, 1, 6)
    assert baseline_analyze("X.SH", frame, too_few_bars).years == ()
    # a lone year: every k has n=1, V is empty
    lone = baseline_analyze("X.SH", frame, EngineParams(10, 1, 5, years=frozenset({2019})))
    assert (lone.status, lone.years) == ("insufficient_history", (2019,))


def test_later_row_for_a_date_is_a_correction_and_order_does_not_matter() -> None:
    frame = _hand_frame()
    sf = spring_festival_date(2018)
    fixed = pd.concat([frame, pd.DataFrame({"date": [sf + _D(days=8)], "close": [130.0]})])
    result = baseline_analyze("X.SH", fixed.iloc[::-1], _HAND)
    # reversed: the original 120 now comes last and wins again
    assert result.curve_mean.tolist() == pytest.approx([0, -10, 0, 5, 10, 20])
    result = baseline_analyze("X.SH", fixed, _HAND)
    assert result.curve_mean[4] == pytest.approx((30 + 20 - 10) / 3)


def test_flat_prices_degenerate_statistics() -> None:
    rows = []
    for year in (2016, 2017, 2018):
        sf = spring_festival_date(year)
        rows += [(sf + _D(days=o), 7.0) for o in range(-9, 10)]
    rows.append((dt.date(2019, 1, 1), 7.0))
    result = baseline_analyze("F.SZ", pd.DataFrame(rows, columns=["date", "close"]), _HAND)
    p = result.pattern
    assert p is not None
    assert (p.volatility_before, p.volatility_after, p.volatility_ratio) == (0.0, 0.0, 1.0)
    assert p.pattern_strength == 0.0  # every pair has zero variance
    assert p.consistency_score == 1.0  # sign 0 everywhere
    assert p.peak_day == p.trough_day == int(result.curve_k[0])  # all tie: smallest k


def _pattern(**kw: Any) -> PatternResult:
    base: dict[str, Any] = dict(
        pattern_strength=0.9,
        average_return_before=3.0,
        average_return_after=-5.0,
        volatility_before=1.0,
        volatility_after=1.0,
        volatility_ratio=1.0,
        consistency_score=1.0,
        confidence_level=0.8,
        peak_day=-1,
        trough_day=1,
    )
    base.update(kw)
    empty = np.zeros(0)
    return PatternResult("P.SH", "ok", (2019, 2020, 2021), Pattern(**base), empty, empty, empty)


_SF21 = spring_festival_date(2021)  # 2021-02-12


@pytest.mark.parametrize(
    ("as_of", "kw", "expected"),
    [
        (_SF21 - _D(days=40), {}, ("approaching", 40, "bullish", 0.72, "buy", False)),
        (
            _SF21 - _D(days=3),
            {"pattern_strength": 0.5},
            ("pre_festival", 3, "neutral", 0, "hold", False),
        ),
        (_SF21, {}, ("festival_day", 0, "neutral", 0, "hold", False)),
        (_SF21 + _D(days=14), {}, ("post_festival", -14, "bearish", 0.72, "sell", False)),
        (
            _SF21 + _D(days=15),
            {"confidence_level": 0.5},
            ("recovery", -15, "bearish", 0.45, "reduce", False),
        ),
        (
            _SF21 + _D(days=20),
            {"volatility_ratio": None},
            ("recovery", -20, "bearish", 0.576, "sell", True),
        ),
        (_SF21 - _D(days=61), {}, ("normal_period", 61, "neutral", 0, "hold", False)),
        (
            _SF21 - _D(days=61),
            {"volatility_ratio": 2.5},
            ("normal_period", 61, "neutral", 0, "hold", True),
        ),
        (
            _SF21 - _D(days=20),
            {"average_return_before": -2.0},
            ("approaching", 20, "neutral", 0, "hold", False),
        ),
        (
            _SF21 - _D(days=20),
            {"confidence_level": 0.6},
            ("approaching", 20, "bullish", 0.54, "watch", False),
        ),
    ],
)
def test_position_and_signal_by_hand(as_of: dt.date, kw: dict, expected: tuple) -> None:
    pos, sig = baseline_position_and_signal(date_to_day(as_of), _pattern(**kw), EngineParams())
    assert sig is not None
    phase, days, kind, strength, action, warning = expected
    assert (pos.phase, pos.days_to_spring_festival, pos.relative_day) == (phase, days, -days)
    assert pos.in_window == (phase != "normal_period")
    assert (sig.signal, sig.action, sig.volatility_warning) == (kind, action, warning)
    assert sig.strength == pytest.approx(strength)


def test_position_rolls_to_next_festival_after_the_window() -> None:
    pos, _ = baseline_position_and_signal(
        date_to_day(dt.date(2020, 12, 31)), _pattern(), EngineParams()
    )
    assert pos.spring_festival_day == date_to_day(_SF21)
    assert (pos.days_to_spring_festival, pos.phase) == (43, "approaching")
    empty = np.zeros(0)
    insufficient = PatternResult("P.SH", "insufficient_history", (), None, empty, empty, empty)
    assert baseline_position_and_signal(0, insufficient, EngineParams())[1] is None


# --------------------------------------------------------------------------- vs engine


def _in_some_window(d: dt.date, w: int) -> bool:
    return any(
        1901 <= y <= 2099 and abs((d - spring_festival_date(y)).days) <= w
        for y in (d.year, d.year + 1)
    )


@st.composite
def _symbols(draw: st.DrawFn) -> tuple[pd.DataFrame, SymbolWindows, EngineParams]:
    start = draw(st.integers(2000, 2030) | st.sampled_from([1901, 1902, 2095, 2097]))
    n_years = min(draw(st.integers(1, 5)), 2099 - start)  # bars stay within SPEC 1 dates
    w = draw(st.integers(1, 45) | st.integers(46, 175))
    params = EngineParams(
        window_days=w,
        min_years=draw(st.integers(1, 4)),
        min_bars_per_year=draw(st.integers(1, 12)),
        alignment=draw(st.sampled_from(["trading", "calendar"])),
        years=draw(st.none() | st.frozensets(st.integers(start, start + n_years), min_size=1)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    first = dt.date(start, 1, 1)
    span = (dt.date(start + n_years, 12, 31) - first).days - draw(st.integers(0, 300))
    dates = [first + _D(days=i) for i in range(span + 1)]
    if draw(st.booleans()):
        dates = [d for d in dates if d.weekday() < 5]
    density = draw(st.floats(0.03, 1.0))
    dates = [d for d, keep in zip(dates, rng.random(len(dates)) < density, strict=True) if keep]
    if draw(st.booleans()):
        closes = np.full(len(dates), 12.5)  # flat: zero variances everywhere
    else:
        sigma = draw(st.floats(0.001, 0.1))
        closes = 20.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, len(dates))))
    frame = pd.DataFrame({"date": dates, "close": closes}).sample(frac=1.0, random_state=1)
    inside = [i for i, d in enumerate(dates) if _in_some_window(d, w)]
    item = SymbolWindows(
        symbol="R.SH",
        days=np.array([date_to_day(dates[i]) for i in inside], dtype=np.int32),
        closes=np.array([closes[i] for i in inside], dtype=np.float64),
        latest=date_to_day(dates[-1]) if dates else date_to_day(first),
    )
    return frame, item, params


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _assert_same(engine: PatternResult, base: PatternResult) -> None:
    assert (engine.status, tuple(engine.years)) == (base.status, base.years)
    assert np.asarray(engine.curve_k).tolist() == base.curve_k.tolist()
    assert np.asarray(engine.curve_n).tolist() == base.curve_n.tolist()
    np.testing.assert_allclose(engine.curve_mean, base.curve_mean, rtol=1e-9, atol=1e-9)
    if base.pattern is None or engine.pattern is None:
        assert engine.pattern is base.pattern is None
        return
    for f in fields(Pattern):
        e, b = getattr(engine.pattern, f.name), getattr(base.pattern, f.name)
        if f.name in ("peak_day", "trough_day"):
            assert int(e) == b, f.name
        else:
            assert _close(e, b), (f.name, e, b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_symbols(), as_of_offsets=st.lists(st.integers(-200, 400), max_size=4))
def test_engine_agrees_with_baseline(
    case: tuple[pd.DataFrame, SymbolWindows, EngineParams], as_of_offsets: list[int]
) -> None:
    frame, item, params = case
    base = baseline_analyze(item.symbol, frame, params)
    [engine] = analyze_patterns([item], params)
    _assert_same(engine, base)
    lo, hi = date_to_day(dt.date(1901, 1, 1)), date_to_day(dt.date(2099, 12, 31))
    for latest in [item.latest, *(min(hi, max(lo, item.latest + o)) for o in as_of_offsets)]:
        e_pos, e_sig = position_and_signal(latest, engine, params, item.days)
        b_pos, b_sig = baseline_position_and_signal(latest, base, params, frame.date)
        assert e_pos == b_pos
        if e_sig is None or b_sig is None:
            assert e_sig is b_sig is None
        else:
            assert (e_sig.signal, e_sig.action, e_sig.volatility_warning) == (
                b_sig.signal,
                b_sig.action,
                b_sig.volatility_warning,
            )
            assert _close(e_sig.strength, b_sig.strength)


def test_engine_agrees_on_many_symbols_at_once() -> None:
    """Batching must not leak between symbols: the hand example next to a flat one."""
    frame = _hand_frame()
    items, frames = [], []
    for symbol, scale in (("A.SH", 1.0), ("B.SZ", 0.0), ("C.SH", 3.0)):
        f = frame.assign(close=frame.close * scale + (5.0 if scale == 0 else 0.0))
        inside = f[[_in_some_window(d, 10) for d in f.date]].sort_values("date")
        items.append(
            SymbolWindows(
                symbol,
                np.array([date_to_day(d) for d in inside.date], dtype=np.int32),
                inside.close.to_numpy(dtype=np.float64),
                date_to_day(max(f.date)),
            )
        )
        frames.append(f)
    params = EngineParams(10, 2, 5)
    for engine, item, f in zip(analyze_patterns(items, params), items, frames, strict=True):
        assert engine.symbol == item.symbol
        _assert_same(engine, baseline_analyze(item.symbol, f, params))
