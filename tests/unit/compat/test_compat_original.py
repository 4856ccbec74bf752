"""The original system's public surface (issue 13), one test per name, no cluster.

Expectations come from outside the code under test wherever they can: festival dates
everyone knows, windows, relative days, normalised prices, weekday counts and SPEC 5
phases worked out by hand, and the engine's own functions (`analyze_patterns`,
`signal_of`) for the equalities the issue asks for. Real clusters and `sfa replay`
are in tests/integration/test_compat_original_dask.py.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import dask.config
import dask.utils
import numpy as np
import pandas as pd
import pytest

import service
import service.compat
from service import (
    AlignedDataPoint,
    AlignedTimeSeries,
    ChineseCalendar,
    DaskResourceManager,
    ParallelProcessingConfig,
    ParallelSpringFestivalEngine,
    SeasonalPattern,
    SpringFestivalAlignmentEngine,
    SpringFestivalWindow,
    create_dask_dataframe_from_stock_data,
    optimize_dask_config_for_spring_festival_analysis,
)
from service.compat import cluster as cluster_module
from service.compat.alignment import PHASES
from service.engine import phase_of, signal_of
from service.settings import load_settings
from tests.unit.compat.test_compat import make_frame

D = dt.date
SEQ = ParallelProcessingConfig(execution="sequential", chunk_size=2)
ORIGINAL_NAMES = [
    "SpringFestivalAlignmentEngine",
    "ParallelSpringFestivalEngine",
    "SpringFestivalWindow",
    "AlignedDataPoint",
    "AlignedTimeSeries",
    "SeasonalPattern",
    "ChineseCalendar",
    "ParallelProcessingConfig",
    "BatchProcessingResult",
    "DaskResourceManager",
    "create_dask_dataframe_from_stock_data",
    "optimize_dask_config_for_spring_festival_analysis",
    "get_processing_recommendations",
]


# ---------------------------------------------------------------- frames


def holiday_frame(seed: int, start: str = "2012-01-01", end: str = "2022-05-31") -> pd.DataFrame:
    """Like an exchange's bars: weekdays, closed from the festival's eve for a week, a
    festival-season drift, datetime64 `trade_date` (what the original's users had)."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range(start, end)
    closed = np.zeros(len(days), dtype=bool)
    for year in range(days[0].year, days[-1].year + 2):
        sf = pd.Timestamp(ChineseCalendar.get_spring_festival(year))
        closed |= (days >= sf - pd.Timedelta(days=1)) & (days <= sf + pd.Timedelta(days=6))
    days = days[~closed]
    season = np.array([ChineseCalendar.is_spring_festival_period(d, 30)[0] for d in days])
    steps = rng.normal(0.0, 0.012, len(days)) + np.where(season, 0.002, 0.0)
    close = 20.0 * np.exp(np.cumsum(steps))
    return pd.DataFrame(
        {
            "stock_code": f"H{seed}",
            "trade_date": days,
            "open_price": close * 0.995,
            "high_price": close * 1.01,
            "low_price": close * 0.99,
            "close_price": close,
            "volume": rng.integers(1_000, 90_000, len(days)).astype(float),
        }
    )


def messy_frame(seed: int) -> pd.DataFrame:
    """Corrections (a later row for a date wins) and rows the service rejects."""
    clean = make_frame(seed)
    wrong = clean.iloc[[40, 300, 900]].assign(close_price=999.0)
    junk = pd.DataFrame(
        {
            "stock_code": f"S{seed}",
            "trade_date": ["2016-02-01", "not a date", "2017-01-20", "2018-02-05", "1850-01-01"],
            "close_price": [-1.0, 10.0, np.nan, 10.0, 10.0],
            "low_price": [None, None, None, 20.0, None],
            "high_price": [None, None, None, 10.0, None],  # low > high: rejected
        }
    )
    return pd.concat([wrong, junk, clean], ignore_index=True)


def real_looking_frames() -> dict[str, pd.DataFrame]:
    frames = {f"H{i}": holiday_frame(i) for i in range(3)}
    frames["S11"] = messy_frame(11)
    frames["S12"] = make_frame(12)
    return frames


def hand_frame() -> pd.DataFrame:
    """SF 2024 = Sat 2024-02-10, W = 60: window 2023-12-12 .. 2024-04-10."""
    rows = [
        ("2023-12-11", 9.0, 100.0),  # a day before the window
        ("2023-12-12", 10.0, 110.0),  # the window's first day
        ("2024-02-09", 99.0, 1.0),  # corrected below
        ("2024-02-07", 11.0, np.nan),
        ("2024-02-08", 12.0, 130.0),
        ("2024-02-09", 8.0, 140.0),  # the anchor: last close before the festival
        ("2024-02-12", -1.0, 150.0),  # invalid close: dropped
        ("2024-02-19", 12.0, 160.0),
        ("2024-02-20", 6.0, 170.0),
        ("2024-04-10", 10.0, 180.0),  # the window's last day
        ("2024-04-11", 20.0, 190.0),
        ("2025-02-03", 5.0, 200.0),  # SF 2025 = 2025-01-29: a window with no pre bar
    ]
    dates, closes, volumes = zip(*rows, strict=True)
    return pd.DataFrame(
        {"stock_code": "HAND", "trade_date": dates, "close_price": closes, "volume": volumes}
    )


def pattern(**overrides: Any) -> SeasonalPattern:
    values: dict[str, Any] = {
        "symbol": "P",
        "years_analyzed": [2019, 2020, 2021],
        "pattern_strength": 0.8,
        "average_return_before": 3.0,
        "average_return_after": -1.0,
        "volatility_before": 1.0,
        "volatility_after": 1.0,
        "consistency_score": 0.7,
        "confidence_level": 0.9,
        "peak_day": 5,
        "trough_day": -3,
        "raw_volatility_ratio": 1.0,
    }
    return SeasonalPattern(**{**values, **overrides})


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ORIGINAL_NAMES)
def test_every_original_name_is_importable_from_service_and_compat(name: str) -> None:
    assert name in service.__all__ and name in service.compat.__all__
    assert getattr(service, name) is getattr(service.compat, name)


# ---------------------------------------------------------------- ChineseCalendar


@pytest.mark.parametrize(
    "iso", ["1901-02-19", "2000-02-05", "2020-01-25", "2023-01-22", "2024-02-10", "2025-01-29"]
)
def test_chinese_calendar_knows_the_festivals(iso: str) -> None:
    known = D.fromisoformat(iso)
    assert ChineseCalendar.get_spring_festival(known.year) == known
    assert ChineseCalendar.SPRING_FESTIVAL_DATES[known.year] == known


def test_chinese_calendar_covers_1901_to_2100_and_nothing_else() -> None:
    assert ChineseCalendar.get_available_years() == list(range(1901, 2101))
    assert ChineseCalendar.get_spring_festival(1900) is None
    assert ChineseCalendar.get_spring_festival(2101) is None
    assert ChineseCalendar.get_spring_festival(np.int64(2024)) == D(2024, 2, 10)
    assert len(ChineseCalendar.SPRING_FESTIVAL_DATES) == 200
    assert all(
        D(y, 1, 21) <= d <= D(y, 2, 20) for y, d in ChineseCalendar.SPRING_FESTIVAL_DATES.items()
    )


def test_is_spring_festival_period() -> None:
    period = ChineseCalendar.is_spring_festival_period
    assert period(D(2024, 2, 1)) == (True, D(2024, 2, 10))  # 9 days before
    assert period(D(2024, 1, 26)) == (True, D(2024, 2, 10))  # exactly 15 before
    assert period(D(2024, 1, 25)) == (False, D(2024, 2, 10))  # 16 before
    assert period(D(2024, 2, 25)) == (True, D(2024, 2, 10))  # exactly 15 after
    assert period(pd.Timestamp("2024-03-01")) == (False, D(2024, 2, 10))
    # December already lies in the next year's window (the original said False here).
    assert period(D(2024, 12, 20), window_days=60) == (True, D(2025, 1, 29))
    assert period(D(2100, 12, 31)) == (False, D(2100, 2, 9))
    assert period(D(1899, 6, 1)) == (False, None)
    with pytest.raises(ValueError):
        period(D(2024, 2, 1), window_days=-1)


def test_trading_days_to_spring_festival_count_weekdays() -> None:
    days_to = ChineseCalendar.get_trading_days_to_spring_festival
    # SF 2024 is a Saturday. Mon 5 Feb: Mon..Fri of that week are left.
    assert days_to(D(2024, 2, 5)) == 5
    assert days_to(D(2024, 2, 9)) == 1  # Friday: the last trading day (SPEC 3's k = -1)
    assert days_to(D(2024, 1, 29)) == 10
    assert days_to(D(2024, 2, 10)) == 0
    assert days_to(D(2024, 2, 11)) == 0  # Sunday after: no weekday since
    assert days_to(D(2024, 2, 13)) == -2  # Mon 12 and Tue 13
    assert days_to("2024-02-19") == -6
    assert days_to(D(2101, 1, 5)) is None


# ---------------------------------------------------------------- windows and alignment


def test_spring_festival_alignment_engine_is_the_parallel_engines_base() -> None:
    assert issubclass(ParallelSpringFestivalEngine, SpringFestivalAlignmentEngine)
    engine = SpringFestivalAlignmentEngine()
    assert (engine.window_days, engine.alignment, engine.min_years) == (60, "trading", 3)
    assert isinstance(engine.chinese_calendar, ChineseCalendar)
    parallel = ParallelSpringFestivalEngine(30, SEQ, alignment="calendar")
    assert (parallel.window_days, parallel.alignment) == (30, "calendar")
    for bad in (0, 176):
        with pytest.raises(ValueError, match="window_days"):
            SpringFestivalAlignmentEngine(bad)
    with pytest.raises(ValueError, match="alignment"):
        SpringFestivalAlignmentEngine(alignment="lunar")


def test_spring_festival_windows_hand_computed(caplog: pytest.LogCaptureFixture) -> None:
    windows = SpringFestivalAlignmentEngine().create_spring_festival_windows([2024, 1900, 2023])
    assert "1900" in caplog.text
    w2024, w2023 = windows
    assert w2024 == SpringFestivalWindow(2024, D(2024, 2, 10), D(2023, 12, 12), D(2024, 4, 10), 60)
    assert (w2023.year, w2023.start_date, w2023.end_date) == (2023, D(2022, 11, 23), D(2023, 3, 23))
    assert w2024.contains_date(D(2023, 12, 12)) and w2024.contains_date(D(2024, 4, 10))
    assert not w2024.contains_date(D(2023, 12, 11)) and not w2024.contains_date(D(2024, 4, 11))
    assert w2024.days_from_spring_festival(D(2024, 2, 7)) == -3
    assert w2024.relative_position(D(2024, 4, 10)) == 1.0


@pytest.mark.parametrize(
    ("alignment", "relative_days"),
    [("trading", [-4, -3, -2, -1, 1, 2, 3, 1]), ("calendar", [-60, -3, -2, -1, 9, 10, 60, 5])],
)
def test_align_hand_built_frame(alignment: Any, relative_days: list[int]) -> None:
    engine = SpringFestivalAlignmentEngine(alignment=alignment, min_years=2)
    aligned = engine.align_to_spring_festival(hand_frame())
    assert isinstance(aligned, AlignedTimeSeries)
    assert (aligned.symbol, aligned.window_days, aligned.alignment) == ("HAND", 60, alignment)
    assert aligned.years == [2024, 2025]
    assert aligned.latest_date == D(2025, 2, 3)
    assert aligned.anchor_prices == {2024: 8.0}  # 2025 has no bar before its festival
    # The original's baseline: the mean of every valid close (corrections applied, the
    # bars outside windows included): 9, 10, 11, 12, 8, 12, 6, 10, 20, 5.
    assert aligned.baseline_price == pytest.approx(10.3, rel=1e-12)
    points = aligned.data_points
    assert all(isinstance(p, AlignedDataPoint) for p in points)
    assert [p.original_date for p in points] == [
        *(D(2023, 12, 12), D(2024, 2, 7), D(2024, 2, 8), D(2024, 2, 9)),
        *(D(2024, 2, 19), D(2024, 2, 20), D(2024, 4, 10), D(2025, 2, 3)),
    ]
    assert [p.relative_day for p in points] == relative_days
    assert [p.price for p in points] == [10.0, 11.0, 12.0, 8.0, 12.0, 6.0, 10.0, 5.0]
    # r = 100 (close / 8 - 1) in 2024; no anchor in 2025: relative to its first close.
    assert [p.normalized_price for p in points] == [25.0, 37.5, 50.0, 0.0, 50.0, -25.0, 25.0, 0.0]
    assert [p.volume for p in points] == [110.0, None, 130.0, 140.0, 160.0, 170.0, 180.0, 200.0]
    assert [p.year for p in points] == [2024] * 7 + [2025]
    assert {p.spring_festival_date for p in points} == {D(2024, 2, 10), D(2025, 1, 29)}
    assert [p.is_before_spring_festival for p in points] == [True] * 4 + [False] * 4


def test_aligned_series_accessors() -> None:
    engine = SpringFestivalAlignmentEngine(min_years=1)
    aligned = engine.align_to_spring_festival(hand_frame())
    assert [p.original_date for p in aligned.get_year_data(2025)] == [D(2025, 2, 3)]
    assert [p.original_date for p in aligned.get_relative_day_data(1)] == [
        D(2024, 2, 19),
        D(2025, 2, 3),
    ]
    assert len(aligned.get_before_spring_festival()) == 4
    assert [p.price for p in aligned.get_after_spring_festival()] == [12.0, 6.0, 10.0, 5.0]
    assert all(p.is_after_spring_festival for p in aligned.get_after_spring_festival())
    only = engine.align_to_spring_festival(hand_frame(), years=[2025])
    assert only.years == [2025] and len(only.data_points) == 1
    assert only.latest_date == D(2025, 2, 3)


def test_align_reads_the_symbol_and_refuses_what_it_cannot_align() -> None:
    engine = SpringFestivalAlignmentEngine(min_years=2)
    frame = hand_frame()
    assert engine.align_to_spring_festival(frame, symbol="X").symbol == "X"
    spec_names = frame.rename(columns={"stock_code": "symbol", "trade_date": "date"})
    assert engine.align_to_spring_festival(spec_names).symbol == "HAND"
    with pytest.raises(ValueError, match="stock_code"):
        engine.align_to_spring_festival(frame.drop(columns="stock_code"))
    with pytest.raises(ValueError, match="2 symbols"):
        engine.align_to_spring_festival(frame.assign(stock_code=["A", "B"] * 6))
    with pytest.raises(ValueError, match="no valid bars"):
        engine.align_to_spring_festival(frame.assign(close_price=0.0))
    with pytest.raises(
        ValueError, match=r"Insufficient years for analysis\. Need at least 2, got 0"
    ):
        engine.align_to_spring_festival(frame.iloc[[0]])  # valid, but in no window


def parallel_patterns(
    frames: dict[str, pd.DataFrame], alignment: Any = "trading", years: Any = None
) -> Any:
    engine = ParallelSpringFestivalEngine(config=SEQ, alignment=alignment)
    return engine.analyze_multiple_stocks_parallel(frames, years=years)


@pytest.mark.parametrize("alignment", ["trading", "calendar"])
def test_sequential_equals_parallel_for_real_looking_frames(alignment: Any) -> None:
    frames = real_looking_frames()
    batch = parallel_patterns(frames, alignment)
    assert batch.failed_analyses == {} and len(batch.successful_analyses) == len(frames)
    engine = SpringFestivalAlignmentEngine(alignment=alignment)
    for symbol, frame in frames.items():
        found = engine.identify_seasonal_patterns(engine.align_to_spring_festival(frame))
        assert found == batch.successful_analyses[symbol], symbol  # every field and the curve
    # The holiday frames really differ between the alignments (else the test proves little).
    other = parallel_patterns(frames, "calendar" if alignment == "trading" else "trading")
    assert other.successful_analyses["H0"].curve != batch.successful_analyses["H0"].curve


def test_sequential_with_years_equals_parallel_with_years() -> None:
    frames = real_looking_frames()
    years = [2015, 2016, 2017, 2018]
    batch = parallel_patterns(frames, years=years)
    engine = SpringFestivalAlignmentEngine()
    for symbol, frame in frames.items():
        aligned = engine.align_to_spring_festival(frame, years)
        assert set(aligned.years) <= set(years)
        assert engine.identify_seasonal_patterns(aligned) == batch.successful_analyses[symbol]
        assert batch.successful_analyses[symbol].years_analyzed == years


def test_sequential_failures_carry_the_parallel_reasons() -> None:
    frames = {
        "SHORT": make_frame(1, start="2019-01-01", end="2020-12-31"),
        "OPEN": make_frame(2, start="2019-01-01", end="2021-02-20"),  # 2021 still open
        "LONG": make_frame(3),
    }
    batch = parallel_patterns(frames)
    engine = SpringFestivalAlignmentEngine()
    for symbol in ("SHORT", "OPEN"):
        with pytest.raises(ValueError) as caught:
            engine.identify_seasonal_patterns(engine.align_to_spring_festival(frames[symbol]))
        assert str(caught.value) == batch.failed_analyses[symbol]
        assert str(caught.value).startswith("insufficient_history: 2 qualifying year(s)")
    assert set(batch.failed_analyses) == {"SHORT", "OPEN"} and "LONG" in batch.successful_analyses


@pytest.mark.parametrize("alignment", ["trading", "calendar"])
def test_aligned_points_agree_with_the_engine_curve(alignment: Any) -> None:
    """The series' relative days and normalised prices are ours; the curve is the
    engine's. Averaged over the qualifying years they must be the same numbers."""
    engine = SpringFestivalAlignmentEngine(alignment=alignment)
    for frame in (holiday_frame(5), messy_frame(6)):
        aligned = engine.align_to_spring_festival(frame)
        found = engine.identify_seasonal_patterns(aligned)
        by_k: dict[int, list[float]] = {}
        for p in aligned.data_points:
            if p.year in found.years_analyzed:
                assert p.normalized_price is not None
                by_k.setdefault(p.relative_day, []).append(p.normalized_price)
        assert [k for k, _, _ in found.curve] == sorted(by_k)
        for k, mean, n in found.curve:
            assert n == len(by_k[k])
            assert math.isclose(mean, sum(by_k[k]) / n, rel_tol=1e-12, abs_tol=1e-12), k


def test_identify_reads_dates_and_prices_not_the_relative_days() -> None:
    engine = SpringFestivalAlignmentEngine()
    aligned = engine.align_to_spring_festival(holiday_frame(7))
    expected = engine.identify_seasonal_patterns(aligned)
    scrambled = AlignedTimeSeries(
        symbol=aligned.symbol,
        data_points=[
            AlignedDataPoint(p.original_date, 0, p.spring_festival_date, p.year, p.price)
            for p in reversed(aligned.data_points)
        ],
        window_days=60,
        years=aligned.years,
        latest_date=aligned.latest_date,
    )
    assert engine.identify_seasonal_patterns(scrambled) == expected
    # Without latest_date the last point closes nothing: its window stays open.
    open_end = AlignedTimeSeries(aligned.symbol, list(aligned.data_points), 60, aligned.years)
    assert (
        engine.identify_seasonal_patterns(open_end).years_analyzed == expected.years_analyzed[:-1]
    )
    with pytest.raises(ValueError, match="insufficient_history: 0"):
        engine.identify_seasonal_patterns(AlignedTimeSeries("E", [], 60, []))


# ---------------------------------------------------------------- SeasonalPattern


def test_seasonal_pattern_is_bullish_before_and_after() -> None:
    up_down = pattern(average_return_before=0.5, average_return_after=-0.1)
    assert up_down.is_bullish_before and not up_down.is_bullish_after
    flat = pattern(average_return_before=0.0, average_return_after=2.0)
    assert not flat.is_bullish_before and flat.is_bullish_after


# ---------------------------------------------------------------- position and signal


@pytest.mark.parametrize(
    ("when", "festival", "days", "phase", "in_window"),
    [
        (D(2023, 12, 20), D(2024, 2, 10), 52, "approaching", True),
        (D(2024, 1, 25), D(2024, 2, 10), 16, "approaching", True),
        (D(2024, 1, 26), D(2024, 2, 10), 15, "pre_festival", True),
        (D(2024, 2, 5), D(2024, 2, 10), 5, "pre_festival", True),
        (D(2024, 2, 10), D(2024, 2, 10), 0, "festival_day", True),
        (D(2024, 2, 24), D(2024, 2, 10), -14, "post_festival", True),
        (D(2024, 2, 25), D(2024, 2, 10), -15, "recovery", True),
        (D(2024, 4, 10), D(2024, 2, 10), -60, "recovery", True),
        (D(2024, 4, 11), D(2025, 1, 29), 293, "normal_period", False),  # S* moved on
        (D(2024, 12, 20), D(2025, 1, 29), 40, "approaching", True),
    ],
)
def test_get_current_position_spec5(
    when: dt.date, festival: dt.date, days: int, phase: str, in_window: bool
) -> None:
    got = SpringFestivalAlignmentEngine().get_current_position("X", when)
    assert got == {
        "symbol": "X",
        "current_date": when,
        "spring_festival_date": festival,
        "days_to_spring_festival": days,
        "position": phase,
        "in_analysis_window": in_window,
        "relative_day": -days,
    }


def test_get_current_position_defaults_to_today_and_checks_the_range() -> None:
    engine = SpringFestivalAlignmentEngine()
    today = engine.get_current_position("X")
    assert today["current_date"] == dt.date.today()
    assert engine.get_current_position("X", "2024-02-05")["position"] == "pre_festival"
    stamp = dt.datetime(2024, 2, 5, 15, 30)
    assert engine.get_current_position("X", stamp)["current_date"] == D(2024, 2, 5)
    for bad in (D(1900, 12, 31), D(2100, 1, 1)):  # the calendar cannot place these
        unknown = engine.get_current_position("X", bad)
        assert unknown["position"] == "unknown" and unknown["in_analysis_window"] is False
    with pytest.raises(ValueError, match="not a date"):
        engine.get_current_position("X", "not a date")


@pytest.mark.parametrize(
    ("phase", "overrides", "signal", "strength", "action", "warning"),
    [
        ("pre_festival", {}, "bullish", 0.72, "buy", False),
        ("approaching", {"confidence_level": 0.5}, "bullish", 0.4, "watch", False),
        ("pre_festival", {"average_return_before": -3.0, "pattern_strength": 0.3,
                          "confidence_level": 0.5}, "bearish", 0.15, "reduce", False),
        ("approaching", {"average_return_before": -3.0, "pattern_strength": 0.9},
         "bearish", 0.81, "sell", False),
        # strength 0.6 is not > 0.6 (watch), then x 0.8 for the volatility warning.
        ("post_festival", {"average_return_after": 2.0, "pattern_strength": 0.6,
                           "confidence_level": 1.0, "raw_volatility_ratio": 3.0},
         "bullish", 0.48, "watch", True),
        ("recovery", {"pattern_strength": 0.9}, "neutral", 0.0, "hold", False),
        ("festival_day", {}, "neutral", 0.0, "hold", False),
        # Before 0 and after above 0: the ratio is infinite (SPEC 6's null), a warning.
        ("normal_period", {"raw_volatility_ratio": None, "volatility_before": 0.0},
         "neutral", 0.0, "hold", True),
    ],
)  # fmt: skip
def test_generate_trading_signals_spec5(
    phase: str, overrides: dict[str, Any], signal: str, strength: float, action: str, warning: bool
) -> None:
    p = pattern(**overrides)
    got = SpringFestivalAlignmentEngine().generate_trading_signals(p, {"position": phase})
    assert got["signal"] == signal and got["recommended_action"] == action
    assert got["strength"] == pytest.approx(strength, abs=1e-12)
    assert got["volatility_warning"] is warning
    assert got["pattern_strength"] == p.pattern_strength
    assert got["confidence_level"] == p.confidence_level
    assert isinstance(got["reason"], str) and got["reason"]
    assert ("volatility" in got["reason"]) is warning


def test_generate_trading_signals_is_the_engines_signal_in_every_phase() -> None:
    assert {phase_of(d, 60) for d in range(-200, 201)} == set(PHASES)
    engine = SpringFestivalAlignmentEngine()
    found = engine.identify_seasonal_patterns(engine.align_to_spring_festival(holiday_frame(1)))
    for p in (found, pattern(), pattern(average_return_after=-4.0, raw_volatility_ratio=2.5)):
        for phase in PHASES:
            want = signal_of(p.to_result(), phase)
            assert want is not None
            got = engine.generate_trading_signals(p, {"position": phase})
            assert (got["signal"], got["strength"], got["recommended_action"]) == (
                want.signal,
                want.strength,
                want.action,
            )
            assert got["volatility_warning"] == want.volatility_warning
    today = engine.get_current_position(found.symbol)
    assert engine.generate_trading_signals(found) == engine.generate_trading_signals(found, today)
    assert (
        "Outside"
        in engine.generate_trading_signals(pattern(), {"position": "normal_period"})["reason"]
    )
    with pytest.raises(ValueError, match="unknown position"):
        engine.generate_trading_signals(found, {"position": "lunar_new_year"})


# ---------------------------------------------------------------- config and Dask helpers


def test_parallel_processing_config_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        {"DASK_N_WORKERS": "3", "DASK_CHUNK_SIZE": "7", "DASK_ENABLE_DISTRIBUTED": "false"}
    )
    config = ParallelProcessingConfig.from_settings(settings)
    assert (config.n_workers, config.chunk_size, config.enable_distributed) == (3, 7, False)
    assert config.to_settings().dask_chunk_size == 7
    monkeypatch.setenv("DASK_CHUNK_SIZE", "11")
    monkeypatch.setenv("DASK_MEMORY_LIMIT", "3GB")
    from_env = ParallelProcessingConfig.from_settings()
    assert (from_env.chunk_size, from_env.memory_limit) == (11, "3GB")
    assert from_env == ParallelProcessingConfig.from_env()


def test_dask_resource_manager_returns_itself_and_manages_one_session() -> None:
    rm = DaskResourceManager(ParallelProcessingConfig(execution="sequential"))
    assert rm.get_cluster_info()["status"] == "not_connected" and rm.compute is None
    with rm as entered:
        assert entered is rm
        assert rm.client is None and rm.mode == "sequential" and rm.fallback_reason is None
        session = rm.compute
        with rm:  # nested: the same session, still open afterwards
            assert rm.compute is session
        assert rm.compute is session and rm.start_cluster() is None
        info = rm.get_cluster_info()
        assert info["status"] == "not_connected" and info["workers"] == 0 and info["memory"] == 0
        assert info["mode"] == "sequential"
        assert set(rm.optimize_memory()) == {"local"}
        with pytest.raises(AttributeError):
            _ = rm.wait_for_workers  # no client to hand the name to
    assert rm.compute is None and rm.client is None
    rm.start_cluster()
    assert rm.compute is not None
    rm.shutdown_cluster()
    rm.shutdown_cluster()
    assert rm.compute is None


def test_parallel_engine_runs_on_its_open_resource_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[Any] = []
    real = cluster_module.open_sync

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(cluster_module, "open_sync", counting)
    engine = ParallelSpringFestivalEngine(config=SEQ)
    frames = {"A": make_frame(1), "B": make_frame(2)}
    with engine.resource_manager as rm:
        first = engine.analyze_multiple_stocks_parallel(frames)
        second = engine.analyze_large_dataset_streaming(frames, batch_size=1)
        assert rm.compute is not None
    assert len(opened) == 1 and first.successful_analyses == second.successful_analyses
    engine.analyze_multiple_stocks_parallel(frames)
    assert len(opened) == 2  # closed: the next call opens (and closes) its own


def test_optimize_dask_config_applies_the_dask_settings() -> None:
    keys = [
        "distributed.worker.memory.target",
        "distributed.worker.memory.spill",
        "distributed.worker.memory.pause",
        "distributed.worker.memory.terminate",
        "distributed.comm.timeouts.connect",
        "distributed.comm.timeouts.tcp",
    ]
    before = {k: dask.config.get(k) for k in keys}
    settings = load_settings(
        {
            "DASK_MEMORY_TARGET_FRACTION": "0.55",
            "DASK_MEMORY_SPILL_FRACTION": "0.65",
            "DASK_MEMORY_PAUSE_FRACTION": "0.75",
            "DASK_MEMORY_TERMINATE_FRACTION": "0.9",
            "DASK_CONNECT_TIMEOUT": "7s",
            "DASK_TCP_TIMEOUT": "45",
        }
    )
    try:
        applied = optimize_dask_config_for_spring_festival_analysis(settings)
        assert set(applied) == set(keys)
        assert [dask.config.get(k) for k in keys[:4]] == [0.55, 0.65, 0.75, 0.9]
        seconds = [dask.utils.parse_timedelta(dask.config.get(k)) for k in keys[4:]]
        assert seconds == [7, 45]
    finally:
        dask.config.set(before)
    assert {k: dask.config.get(k) for k in keys} == before


def test_create_dask_dataframe_from_stock_data_holds_every_row() -> None:
    frames = {"A": hand_frame().drop(columns="stock_code"), "B": make_frame(3).iloc[:50]}
    dated = make_frame(4).iloc[:20].drop(columns="stock_code")
    frames["C"] = dated.set_index(pd.DatetimeIndex(dated.pop("trade_date"), name=None))
    ddf = create_dask_dataframe_from_stock_data(frames)
    assert ddf.npartitions == 1
    got = ddf.compute()
    assert len(got) == 12 + 50 + 20
    assert got["stock_code"].value_counts().to_dict() == {"A": 12, "S3": 50, "C": 20}
    assert got.loc[got["stock_code"] == "C", "trade_date"].notna().all()
    assert got["close_price"].sum() == pytest.approx(
        sum(float(f["close_price"].sum()) for f in frames.values())
    )
    assert "stock_code" not in frames["A"].columns  # the caller's frames are left alone
    assert create_dask_dataframe_from_stock_data(frames, npartitions=3).npartitions == 3


# ---------------------------------------------------------------- optimize_for_memory_usage


def test_optimize_for_memory_usage_keeps_the_callers_column_names() -> None:
    engine = ParallelSpringFestivalEngine(config=SEQ)
    frames = {"H": holiday_frame(2), "M": messy_frame(3)}
    slim = engine.optimize_for_memory_usage(frames)
    for symbol in frames:
        assert list(slim[symbol].columns) == ["stock_code", "trade_date", "close_price", "volume"]
        assert slim[symbol]["trade_date"].is_monotonic_increasing
    assert (
        engine.analyze_multiple_stocks_parallel(slim).successful_analyses
        == engine.analyze_multiple_stocks_parallel(frames).successful_analyses
    )
    # The sequential door reads the slim frames too (it needs the stock code).
    aligned = engine.align_to_spring_festival(slim["H"])
    assert aligned.symbol == "H2" and aligned.latest_date == D(2022, 5, 31)
    spec = make_frame(5).rename(columns={"trade_date": "date", "close_price": "close"})
    by_index = spec.set_index(pd.DatetimeIndex(spec["date"], name="date"))[["close"]]
    out = engine.optimize_for_memory_usage({"X": spec, "Y": by_index})
    assert list(out["X"].columns) == ["stock_code", "date", "close", "volume"]
    assert list(out["Y"].columns) == ["close"] and out["Y"].index.name == "date"
    assert isinstance(out["Y"].index, pd.DatetimeIndex)


def test_every_public_name_of_the_original_api_says_what_it_does() -> None:
    """Users read these in `help()`: every class, function, method and property has a
    docstring of its own (not one inherited from `object` or a dataclass default)."""
    import inspect

    import service.compat as compat

    missing: list[str] = []
    for name in compat.__all__:
        obj = getattr(compat, name)
        if not (obj.__doc__ or "").strip() or obj.__doc__.startswith(f"{name}("):
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            target = getattr(target, "__func__", target)
            if callable(target) and not (target.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    assert missing == []
