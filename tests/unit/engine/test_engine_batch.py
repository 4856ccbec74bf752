"""Batching must never change a symbol's result (SPEC 1), bit for bit, in every code path."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import service.engine.pattern as pattern_module
import service.engine.strength as strength_module
from service.calendar import date_to_day
from service.engine import (
    EngineParams,
    PatternResult,
    SymbolWindows,
    analyze_patterns,
    window_year_of,
)


def random_symbol(
    rng: np.random.Generator, symbol: str, first_year: int, n_years: int, w: int, flat: bool
) -> SymbolWindows:
    start = date_to_day(dt.date(first_year, 1, 1))
    stop = date_to_day(dt.date(min(first_year + n_years, 2099), 12, 31))
    days = np.arange(start, stop + 1, dtype=np.int32)
    days = days[rng.random(days.shape[0]) < rng.uniform(0.05, 1.0)]
    closes = (
        np.full(days.shape[0], 7.25)
        if flat
        else 20.0 * np.exp(np.cumsum(rng.normal(0.0, rng.uniform(0.001, 0.05), days.shape[0])))
    )
    keep = window_year_of(days, w) != 0
    latest = int(days[-1]) if days.shape[0] else start
    return SymbolWindows(symbol, days[keep], closes[keep], latest)


def assert_identical(a: PatternResult, b: PatternResult) -> None:
    assert (a.symbol, a.status, a.years) == (b.symbol, b.status, b.years)
    assert a.pattern == b.pattern  # exact float equality, field by field
    for x, y in ((a.curve_k, b.curve_k), (a.curve_mean, b.curve_mean), (a.curve_n, b.curve_n)):
        assert x.dtype == y.dtype and np.array_equal(x, y)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[SymbolWindows], EngineParams]:
    w = draw(st.integers(1, 40))
    params = EngineParams(
        window_days=w,
        min_years=draw(st.integers(0, 4)),
        min_bars_per_year=draw(st.integers(1, 15)),
        alignment=draw(st.sampled_from(["trading", "calendar"])),
        years=draw(st.none() | st.frozensets(st.integers(1995, 2012), min_size=1)),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    items = [
        random_symbol(
            rng,
            f"S{i}",
            draw(st.integers(1995, 2008)),
            draw(st.integers(0, 6)),
            w,
            draw(st.integers(0, 5)) == 0,
        )
        for i in range(draw(st.integers(2, 7)))
    ]
    return items, params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=batches())
def test_batch_equals_one_at_a_time(case: tuple[list[SymbolWindows], EngineParams]) -> None:
    items, params = case
    together = analyze_patterns(items, params)
    assert [r.symbol for r in together] == [it.symbol for it in items]
    for item, result in zip(items, together, strict=True):
        assert_identical(result, analyze_patterns([item], params)[0])
    reversed_order = analyze_patterns(items[::-1], params)[::-1]
    for a, b in zip(together, reversed_order, strict=True):
        assert_identical(a, b)


def _mixed_batch() -> tuple[list[SymbolWindows], EngineParams]:
    rng = np.random.default_rng(7)
    params = EngineParams(window_days=30, min_years=2, min_bars_per_year=5)
    items = [random_symbol(rng, "LONG", 1901, 150, 30, False)]
    items += [
        random_symbol(rng, f"S{i}", 2000 + i % 5, 3 + i % 4, 30, i % 9 == 0) for i in range(40)
    ]
    return items, params


def test_long_history_next_to_short_ones() -> None:
    items, params = _mixed_batch()
    results = analyze_patterns(items, params)
    assert len(results[0].years) > 100 and results[0].status == "ok"
    for item, result in zip(items, results, strict=True):
        assert_identical(result, analyze_patterns([item], params)[0])


@pytest.mark.parametrize(
    ("module", "name", "value"),
    [
        (pattern_module, "_CUBE_CELLS", 512),  # a cube chunk per symbol or two
        (strength_module, "_PAIR_CELLS", 256),  # pairs gathered a few at a time
        (strength_module, "_VIEW_MIN_CELLS", 1 << 40),  # never the (symbols, u, K) view
        (strength_module, "_VIEW_MIN_CELLS", 0),  # always the view
        (strength_module, "_TOLERANCE", 1.0),  # every pair through the exact two-pass path
        (pattern_module, "_CANCEL", 1.0),  # every volatility through the two-pass path
    ],
)
def test_chunking_and_code_paths_do_not_change_results(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, value: float
) -> None:
    items, params = _mixed_batch()
    items = items[1:]  # keep it quick
    expected = analyze_patterns(items, params)
    monkeypatch.setattr(module, name, value)
    for a, b in zip(expected, analyze_patterns(items, params), strict=True):
        if name in ("_TOLERANCE", "_CANCEL"):  # two-pass rounds differently, by design
            assert (a.status, a.years) == (b.status, b.years)
            if a.pattern is not None and b.pattern is not None:
                for x, y in zip(
                    dataclasses.astuple(a.pattern), dataclasses.astuple(b.pattern), strict=True
                ):
                    assert x == pytest.approx(y, rel=1e-9, abs=1e-12)
        else:
            assert_identical(a, b)
