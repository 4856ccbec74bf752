"""SPEC 4's peak and trough rule by hand: only days that at least half of the years share
(`n_k >= max(2, ceil(|Y| / 2))`) may be the peak or the trough; with no such day, all of V.
The engine and the per-row baseline (bench/baseline.py) must both give the hand answer."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from bench.baseline import baseline_analyze
from service.calendar import date_to_day, spring_festival_date
from service.engine import analyze_patterns
from service.engine.types import EngineParams, SymbolWindows

PARAMS = EngineParams(window_days=10, min_years=1, min_bars_per_year=2, alignment="calendar")


def _frame(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    """(year, calendar day k from the festival, close) -> a bar frame."""
    dates = [spring_festival_date(y) + dt.timedelta(days=k) for y, k, _ in rows]
    return pd.DataFrame({"date": dates, "close": [c for _, _, c in rows]})


_LATEST = dt.date(2030, 12, 1)  # outside every window; every window before it closed


def _both(frame: pd.DataFrame) -> tuple[tuple[int, int], tuple[int, int]]:
    ordered = frame.sort_values("date")
    item = SymbolWindows(
        "H.SH",
        np.array([date_to_day(d) for d in ordered.date], dtype=np.int32),
        ordered.close.to_numpy(dtype=np.float64),
        date_to_day(_LATEST),
    )
    [engine] = analyze_patterns([item], PARAMS)
    latest_bar = pd.DataFrame({"date": [_LATEST], "close": [1.0]})
    base = baseline_analyze("H.SH", pd.concat([frame, latest_bar]), PARAMS)
    assert engine.pattern is not None and base.pattern is not None
    return (
        (engine.pattern.peak_day, engine.pattern.trough_day),
        (base.pattern.peak_day, base.pattern.trough_day),
    )


def _shared_days(year: int) -> list[tuple[int, int, float]]:
    return [(year, -2, 95.0), (year, -1, 100.0), (year, 1, 104.0), (year, 2, 110.0)]


@pytest.mark.parametrize("few", [1, 2])
def test_a_day_few_years_reach_is_neither_peak_nor_trough(few: int) -> None:
    years = range(2015, 2020)  # five years: a day needs three of them
    rows = [row for y in years for row in _shared_days(y)]
    rows += [(y, -9, 50.0) for y in list(years)[:few]]  # -50%: the old trough
    rows += [(y, 9, 200.0) for y in list(years)[-few:]]  # +100%: the old peak
    engine, base = _both(_frame(rows))
    assert engine == base == (2, -2)


def test_with_half_the_years_a_day_counts() -> None:
    years = range(2015, 2019)  # four years: two of them are half
    rows = [row for y in years for row in _shared_days(y)]
    rows += [(y, -9, 50.0) for y in list(years)[:2]]
    engine, base = _both(_frame(rows))
    assert engine == base == (2, -9)


def test_when_no_day_is_shared_by_half_all_of_v_counts() -> None:
    # Five years in pairs that share their own days; no day reaches three years, so
    # every day of V (n_k == 2) is a candidate, as before the rule.
    days = {2015: (-2, -1, 1), 2016: (-2, -1, 1), 2017: (-3, 3), 2018: (-3, 3), 2019: (-5, 4)}
    closes = {-2: 95.0, -1: 100.0, 1: 101.0, -3: 90.0, 3: 130.0, -5: 100.0, 4: 99.0}
    rows = [(y, k, closes[k]) for y, ks in days.items() for k in ks]
    engine, base = _both(_frame(rows))
    assert engine == base == (3, -2)  # V = {-3, -2, -1, 1, 3}: r(-2) = -5%, r(3) = +44%


def test_the_compat_api_follows_the_rule() -> None:
    """SPEC 8's engine reports the engine's peak and trough: the same hand answer."""
    from service import ParallelProcessingConfig, ParallelSpringFestivalEngine

    years = range(2015, 2020)
    shared = {k: 100.0 for k in (*range(-6, 0), *range(1, 7))} | {-2: 95.0, 2: 110.0}
    rows = [(y, k, c) for y in years for k, c in shared.items()]
    rows += [(y, -9, 50.0) for y in (2015, 2016)] + [(y, 9, 200.0) for y in (2018, 2019)]
    frame = pd.concat([_frame(rows), pd.DataFrame({"date": [_LATEST], "close": [1.0]})])
    engine = ParallelSpringFestivalEngine(
        window_days=10,
        config=ParallelProcessingConfig(enable_distributed=False),
        alignment="calendar",
    )
    done = engine.analyze_multiple_stocks_parallel({"H.SH": frame})
    pattern = done.successful_analyses["H.SH"]
    assert (pattern.peak_day, pattern.trough_day) == (2, -2)
    base = baseline_analyze("H.SH", frame, EngineParams(window_days=10, alignment="calendar"))
    assert base.pattern is not None
    assert (base.pattern.peak_day, base.pattern.trough_day) == (2, -2)
