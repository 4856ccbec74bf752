"""Issue 20: what the original system's users call, as they call it, through `service.compat`.

One section per point of the issue, each ending in a user's call of the public API (the
original's argument names and keywords, nothing from `service.engine`). Where a number
is asserted it is worked out by hand or from the user's own frame (`frame.mean()`), not
from the code under test. Real clusters are in tests/integration/test_compat_users_dask.py;
a whole original user's script is tests/unit/compat/test_compat_user_script.py.
"""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.compat import (
    AlignedDataPoint,
    AlignedTimeSeries,
    BatchProcessingResult,
    ChineseCalendar,
    DaskResourceManager,
    ParallelProcessingConfig,
    ParallelSpringFestivalEngine,
    SeasonalPattern,
    SpringFestivalAlignmentEngine,
    get_processing_recommendations,
)

SEQUENTIAL = ParallelProcessingConfig(execution="sequential")
ORIGINAL_POSITION_KEYS = {
    "symbol",
    "current_date",
    "spring_festival_date",
    "days_to_spring_festival",
    "position",
    "in_analysis_window",
    "relative_day",
}


def weekday_frame(code: str, start: str, end: str, seed: int = 0) -> pd.DataFrame:
    """Weekday bars with the original column names, as the original's tests built them."""
    dates = pd.date_range(start, end, freq="D")
    dates = dates[dates.day_of_week < 5]
    rng = np.random.default_rng(seed)
    prices = 100 + np.cumsum(rng.normal(0, 0.5, len(dates)))
    return pd.DataFrame(
        {
            "stock_code": [code] * len(dates),
            "trade_date": dates,
            "open_price": prices * 0.99,
            "high_price": prices * 1.02,
            "low_price": prices * 0.98,
            "close_price": prices,
            "volume": rng.integers(1000, 10000, len(dates)),
        }
    )


def user_pattern(**changes: Any) -> SeasonalPattern:
    """A pattern built the original's way: keywords, no engine-only fields."""
    values: dict[str, Any] = {
        "symbol": "000001.SZ",
        "pattern_strength": 0.8,
        "average_return_before": 3.5,
        "average_return_after": 1.2,
        "volatility_before": 1.0,
        "volatility_after": 1.5,
        "consistency_score": 0.75,
        "confidence_level": 0.85,
        "years_analyzed": [2020, 2021, 2022, 2023, 2024],
        "peak_day": -2,
        "trough_day": 8,
    }
    return SeasonalPattern(**{**values, **changes})


# ---------------------------------------------------------------- 1. baseline_price


def test_1_baseline_price_is_accepted_by_the_constructor_as_the_original_passed_it() -> None:
    points = [
        AlignedDataPoint(
            date(2024, 2, 5), -5, date(2024, 2, 10), 2024, 100.0, normalized_price=-2.0
        ),
        AlignedDataPoint(
            date(2024, 2, 15), 5, date(2024, 2, 10), 2024, 98.0, normalized_price=-4.0
        ),
    ]
    series = AlignedTimeSeries(
        symbol="000001.SZ", data_points=points, window_days=30, years=[2024], baseline_price=102.0
    )
    assert series.baseline_price == 102.0
    positional = AlignedTimeSeries("000001.SZ", list(points), 30, [2024], 102.0)
    assert positional.baseline_price == 102.0 and positional.alignment == "trading"


def test_1_align_sets_baseline_price_to_the_mean_close_next_to_the_anchors() -> None:
    frame = weekday_frame("000001.SZ", "2020-01-01", "2024-06-30")
    engine = SpringFestivalAlignmentEngine(window_days=60)
    aligned = engine.align_to_spring_festival(frame, [2021, 2022, 2023])
    # The original's definition: every close of the frame, in a window or not.
    assert aligned.baseline_price == pytest.approx(frame["close_price"].mean(), rel=1e-12)
    assert f"{aligned.baseline_price:.2f}"  # the single-engine demo's third step
    assert sorted(aligned.anchor_prices) == [2021, 2022, 2023]  # what the project uses today


# ---------------------------------------------------------------- 2. volatility_ratio


def test_2_a_pattern_built_by_user_code_has_the_ratio_of_its_volatilities() -> None:
    pattern = user_pattern(volatility_before=1.5, volatility_after=2.8)
    assert pattern.volatility_ratio == pytest.approx(2.8 / 1.5, rel=1e-12)
    read_back = SeasonalPattern(**json.loads(json.dumps({**vars(user_pattern()), "curve": []})))
    assert read_back.volatility_ratio == pytest.approx(1.5, rel=1e-12)
    assert user_pattern(volatility_before=0.0, volatility_after=0.0).volatility_ratio == 1.0
    assert user_pattern(volatility_before=0.0, volatility_after=0.3).volatility_ratio == math.inf


def test_2_no_volatility_warning_and_no_cut_for_a_calm_user_pattern() -> None:
    engine = SpringFestivalAlignmentEngine(window_days=30)
    position = {"position": "pre_festival", "in_analysis_window": True, "relative_day": -5}
    calm = engine.generate_trading_signals(user_pattern(), position)
    assert calm["volatility_warning"] is False
    assert calm["strength"] == pytest.approx(0.8 * 0.85, rel=1e-12)  # not cut by 0.8
    wild = engine.generate_trading_signals(user_pattern(volatility_after=2.5), position)
    assert wild["volatility_warning"] is True
    assert wild["strength"] == pytest.approx(0.8 * 0.85 * 0.8, rel=1e-12)
    assert "High volatility: 2.5x" in wild["reason"]


# ---------------------------------------------------------------- 3. min_years


def _short_frame() -> pd.DataFrame:
    """W=30: three windows hold bars (2021, 2022, 2023) but only two count: 2023's
    (SF 2023-01-22) is still open on the last bar."""
    return weekday_frame("SHORT", "2020-12-20", "2023-01-20", seed=3)


def test_3_min_years_set_by_the_user_takes_effect_in_align() -> None:
    single_year = weekday_frame("000001.SZ", "2024-01-01", "2024-03-31")
    engine = SpringFestivalAlignmentEngine(window_days=30)
    with (
        patch.object(engine, "min_years", 3),
        pytest.raises(ValueError, match="Insufficient years for analysis"),
    ):
        engine.align_to_spring_festival(single_year)
    engine.min_years = 1
    assert engine.align_to_spring_festival(single_year).years == [2024]


def test_3_min_years_set_by_the_user_takes_effect_in_identify() -> None:
    engine = SpringFestivalAlignmentEngine(window_days=30)
    aligned = engine.align_to_spring_festival(_short_frame())
    with pytest.raises(ValueError, match="need 3"):
        engine.identify_seasonal_patterns(aligned)
    engine.min_years = 2
    assert engine.identify_seasonal_patterns(aligned).years_analyzed == [2021, 2022]


def test_3_min_years_constructor_argument() -> None:
    engine = SpringFestivalAlignmentEngine(window_days=30, min_years=2)
    assert engine.min_years == 2
    pattern = engine.identify_seasonal_patterns(engine.align_to_spring_festival(_short_frame()))
    assert pattern.years_analyzed == [2021, 2022]
    strict = SpringFestivalAlignmentEngine(window_days=30, min_years=4)
    with pytest.raises(ValueError, match=r"Insufficient years for analysis\. Need at least 4"):
        strict.align_to_spring_festival(_short_frame())
    with pytest.raises(ValueError, match="min_years"):
        SpringFestivalAlignmentEngine(min_years=0)


def test_3_sfa_min_years_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFA_MIN_YEARS", "2")
    engine = SpringFestivalAlignmentEngine(window_days=30)
    assert engine.min_years == 2
    assert engine.identify_seasonal_patterns(
        engine.align_to_spring_festival(_short_frame())
    ).years_analyzed == [2021, 2022]
    batch = ParallelSpringFestivalEngine(window_days=30, config=SEQUENTIAL)
    assert batch.min_years == 2
    result = batch.analyze_multiple_stocks_parallel({"SHORT": _short_frame()})
    assert list(result.successful_analyses) == ["SHORT"]
    monkeypatch.setenv("SFA_MIN_YEARS", "3")
    result = ParallelSpringFestivalEngine(
        window_days=30, config=SEQUENTIAL
    ).analyze_multiple_stocks_parallel({"SHORT": _short_frame()})
    assert "need 3" in result.failed_analyses["SHORT"]


# ---------------------------------------------------------------- 4. empty input


def test_4_empty_frame_raises_stock_data_is_empty() -> None:
    engine = SpringFestivalAlignmentEngine(window_days=30)
    with pytest.raises(ValueError, match="Stock data is empty"):
        engine.align_to_spring_festival(pd.DataFrame())
    no_rows = weekday_frame("X", "2024-01-01", "2024-03-31").iloc[:0]
    with pytest.raises(ValueError, match="Stock data is empty"):
        engine.align_to_spring_festival(no_rows)
    batch = ParallelSpringFestivalEngine(config=SEQUENTIAL)
    result = batch.analyze_multiple_stocks_parallel({"EMPTY": pd.DataFrame()})
    assert result.failed_analyses == {"EMPTY": "Stock data is empty"}


# ---------------------------------------------------------------- 5. unknown dates


@pytest.mark.parametrize("when", [date(1900, 1, 1), date(2100, 6, 1), date(2150, 1, 1)])
def test_5_a_date_the_calendar_cannot_place_is_unknown(when: date) -> None:
    engine = SpringFestivalAlignmentEngine(window_days=30)
    position = engine.get_current_position("000001.SZ", when)
    assert position["spring_festival_date"] is None
    assert position["days_to_spring_festival"] is None
    assert position["position"] == "unknown"
    assert position["in_analysis_window"] is False
    assert position["symbol"] == "000001.SZ" and position["current_date"] == when
    assert set(position) == ORIGINAL_POSITION_KEYS
    signals = engine.generate_trading_signals(user_pattern(), position)
    assert (signals["signal"], signals["strength"], signals["recommended_action"]) == (
        "neutral",
        0.0,
        "hold",
    )
    assert "Outside Spring Festival analysis window" in signals["reason"]


# ---------------------------------------------------------------- 6. signal reasons


def test_6_outside_the_window_the_reason_is_the_originals() -> None:
    engine = SpringFestivalAlignmentEngine(window_days=30)
    outside_position = {
        "symbol": "000001.SZ",
        "current_date": date(2024, 6, 1),
        "spring_festival_date": date(2024, 2, 10),
        "days_to_spring_festival": -111,
        "position": "normal_period",
        "in_analysis_window": False,
        "relative_day": 111,
    }
    signals = engine.generate_trading_signals(
        user_pattern(years_analyzed=[2023, 2024]), outside_position
    )
    assert signals["signal"] == "neutral"
    assert signals["strength"] == 0.0
    assert signals["recommended_action"] == "hold"
    assert "Outside Spring Festival analysis window" in signals["reason"]
    mid_year = engine.get_current_position("000001.SZ", date(2024, 6, 15))
    assert mid_year["in_analysis_window"] is False
    assert engine.generate_trading_signals(user_pattern(), mid_year)["reason"].startswith(
        "Outside Spring Festival analysis window"
    )


# ---------------------------------------------------------------- 7. the festival day


def test_7_a_point_on_the_festival_day_is_neither_before_nor_after() -> None:
    points = [
        AlignedDataPoint(
            date(2024, 2, 5), -5, date(2024, 2, 10), 2024, 100.0, normalized_price=-2.0
        ),
        AlignedDataPoint(
            date(2024, 2, 10), 0, date(2024, 2, 10), 2024, 102.0, normalized_price=0.0
        ),
        AlignedDataPoint(
            date(2024, 2, 15), 5, date(2024, 2, 10), 2024, 98.0, normalized_price=-4.0
        ),
        AlignedDataPoint(
            date(2023, 1, 17), -5, date(2023, 1, 22), 2023, 95.0, normalized_price=-7.0
        ),
        AlignedDataPoint(
            date(2023, 1, 22), 0, date(2023, 1, 22), 2023, 97.0, normalized_price=-5.0
        ),
        AlignedDataPoint(
            date(2023, 1, 27), 5, date(2023, 1, 22), 2023, 103.0, normalized_price=1.0
        ),
    ]
    festival_day = points[1]
    assert festival_day.is_before_spring_festival is False
    assert festival_day.is_after_spring_festival is False
    series = AlignedTimeSeries(
        symbol="000001.SZ",
        data_points=points,
        window_days=30,
        years=[2023, 2024],
        baseline_price=102.0,
    )
    assert len(series.get_relative_day_data(0)) == 2
    assert len(series.get_before_spring_festival()) == 2
    assert len(series.get_after_spring_festival()) == 2


def test_7_calendar_alignment_of_a_bar_on_the_festival_day() -> None:
    frame = pd.concat(
        [
            weekday_frame("X", "2021-01-01", "2024-06-30", seed=1),
            # A session on the festival day itself (2024-02-10 is a Saturday).
            pd.DataFrame(
                {
                    "stock_code": ["X"],
                    "trade_date": [pd.Timestamp("2024-02-10")],
                    "close_price": [101.0],
                }
            ),
        ],
        ignore_index=True,
    )
    engine = SpringFestivalAlignmentEngine(window_days=30, alignment="calendar")
    aligned = engine.align_to_spring_festival(frame)
    on_the_day = aligned.get_relative_day_data(0)
    # 2021-02-12 (a Friday), 2022-02-01 (a Tuesday) and the Saturday session of 2024.
    assert [p.original_date for p in on_the_day] == [
        date(2021, 2, 12),
        date(2022, 2, 1),
        date(2024, 2, 10),
    ]
    for point in on_the_day:
        assert not point.is_before_spring_festival and not point.is_after_spring_festival
    sides = len(aligned.get_before_spring_festival()) + len(aligned.get_after_spring_festival())
    assert sides + len(on_the_day) == len(aligned.data_points)


# ---------------------------------------------------------------- 8. normalized_price


def test_8_normalized_price_is_a_float_everywhere_and_np_mean_works() -> None:
    # 2024's window (SF 2024-02-10, W=30) starts 2024-01-11; the frame starts after the
    # festival, so 2024 has no bar before it.
    frame = weekday_frame("000001.SZ", "2024-02-19", "2025-06-30", seed=4)
    engine = SpringFestivalAlignmentEngine(window_days=30, min_years=1)
    aligned = engine.align_to_spring_festival(frame)
    assert aligned.years == [2024, 2025]
    assert all(isinstance(p.normalized_price, float) for p in aligned.data_points)
    assert np.isfinite(np.mean([p.normalized_price for p in aligned.data_points]))
    # No bar before the festival: relative to the window's first close.
    first, *rest = aligned.get_year_data(2024)
    assert first.normalized_price == 0.0
    for point in rest:
        assert point.normalized_price == pytest.approx(100 * (point.price / first.price - 1))
    assert 2024 not in aligned.anchor_prices


@st.composite
def sparse_frames(draw: st.DrawFn) -> tuple[pd.DataFrame, int, str]:
    """Random days of 2019-2022 with random closes and a random gap: some festival
    seasons thin or one-sided, the cases where a year has no bar before its festival."""
    days = pd.date_range("2019-01-01", "2022-12-31", freq="D")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    keep = rng.random(len(days)) < draw(st.floats(0.0, 1.0))
    gap_start = draw(st.integers(0, len(days)))
    keep[gap_start : gap_start + draw(st.integers(0, 400))] = False
    chosen = days[keep]
    closes = rng.uniform(5.0, 50.0, len(chosen))
    frame = pd.DataFrame({"stock_code": "P", "trade_date": chosen, "close_price": closes})
    return frame, draw(st.integers(5, 60)), draw(st.sampled_from(["trading", "calendar"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_frames())
def test_8_every_normalized_price_is_relative_to_the_documented_reference(
    case: tuple[pd.DataFrame, int, str],
) -> None:
    """Recomputed from the frame and the calendar alone: the year's last close before
    its festival, else the window's first close; baseline_price the mean close."""
    frame, window_days, alignment = case
    engine = SpringFestivalAlignmentEngine(window_days, alignment=alignment, min_years=1)  # type: ignore[arg-type]
    if frame.empty:
        with pytest.raises(ValueError, match="Stock data is empty"):
            engine.align_to_spring_festival(frame)
        return
    try:
        aligned = engine.align_to_spring_festival(frame)
    except ValueError as error:
        assert "Insufficient years for analysis" in str(error)
        return
    assert aligned.baseline_price == pytest.approx(frame["close_price"].mean(), rel=1e-12)
    dates = frame["trade_date"].dt.date
    for year in aligned.years:
        sf = ChineseCalendar.get_spring_festival(year)
        assert sf is not None
        span = pd.Timedelta(days=window_days).to_pytimedelta()
        in_window = frame[(dates >= sf - span) & (dates <= sf + span)]
        before = in_window[in_window["trade_date"].dt.date < sf]
        reference = float(
            before["close_price"].iloc[-1] if len(before) else in_window["close_price"].iloc[0]
        )
        points = aligned.get_year_data(year)
        assert len(points) == len(in_window)
        for point in points:
            assert isinstance(point.normalized_price, float)
            assert point.normalized_price == pytest.approx(
                100 * (point.price / reference - 1), rel=1e-9, abs=1e-9
            )
            side = (point.is_before_spring_festival, point.is_after_spring_festival)
            assert side == (point.relative_day < 0, point.relative_day > 0)
            assert (point.relative_day < 0) == (point.original_date < sf)
    assert np.isfinite(np.mean([p.normalized_price for p in aligned.data_points]))


# ---------------------------------------------------------------- 9. empty batch


def test_9_an_empty_batch_result_has_the_originals_rates() -> None:
    result = BatchProcessingResult(
        successful_analyses={},
        failed_analyses={},
        processing_time=0.0,
        total_stocks=0,
        memory_usage={},
    )
    assert result.success_rate == 0.0
    assert result.failure_rate == 1.0
    some = BatchProcessingResult(
        successful_analyses={"AAPL": user_pattern(), "GOOGL": user_pattern()},
        failed_analyses={"MSFT": "Error message"},
        processing_time=10.5,
        total_stocks=3,
        memory_usage={},
    )
    assert abs(some.success_rate - 2 / 3) < 1e-10 and abs(some.failure_rate - 1 / 3) < 1e-10
    nothing = ParallelSpringFestivalEngine(config=SEQUENTIAL).analyze_multiple_stocks_parallel({})
    assert (nothing.total_stocks, nothing.success_rate, nothing.failure_rate) == (0, 0.0, 1.0)


# ---------------------------------------------------------------- 10. config from the environment


def test_10_no_config_reads_the_dask_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DASK_N_WORKERS": "3",
        "DASK_THREADS_PER_WORKER": "2",
        "DASK_MEMORY_LIMIT": "1GB",
        "DASK_CHUNK_SIZE": "7",
        "DASK_ENABLE_DISTRIBUTED": "false",
    }.items():
        monkeypatch.setenv(name, value)
    engine = ParallelSpringFestivalEngine()
    assert engine.config == ParallelProcessingConfig.from_settings()
    assert (engine.config.n_workers, engine.config.threads_per_worker) == (3, 2)
    assert (engine.config.memory_limit, engine.config.chunk_size) == ("1GB", 7)
    assert engine.config.enable_distributed is False
    assert engine.resource_manager.config is engine.config
    with patch.object(ParallelProcessingConfig, "from_settings", return_value=SEQUENTIAL) as made:
        assert ParallelSpringFestivalEngine().config is SEQUENTIAL
    made.assert_called_once()
    explicit = ParallelProcessingConfig()
    assert ParallelSpringFestivalEngine(window_days=60, config=explicit).config is explicit


# ---------------------------------------------------------------- 11. processes (without a cluster)


def test_11_enable_distributed_false_asks_for_worker_processes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What the manager asks of Dask; the real LocalCluster is in the integration test."""
    from service.compute import sync

    asked: list[dict[str, Any]] = []

    def no_cluster(**kwargs: Any) -> Any:
        asked.append(kwargs)
        raise OSError("no sockets here")

    monkeypatch.setattr(sync, "LocalCluster", no_cluster)
    config = ParallelProcessingConfig(n_workers=2, threads_per_worker=1, enable_distributed=False)
    with caplog.at_level("WARNING"), DaskResourceManager(config) as rm:
        assert rm.client is None and rm.mode == "sequential"
        info = rm.get_cluster_info()
    assert asked[0]["processes"] is True and asked[0]["n_workers"] == 2
    assert asked[0]["threads_per_worker"] == 1 and asked[0]["memory_limit"] == "2GB"
    assert asked[1]["processes"] is False  # then threads
    reason = rm.fallback_reason or ""
    assert "local_cluster unavailable: OSError" in reason and "threads unavailable" in reason
    assert info["fallback_reason"] == reason and info["status"] == "not_connected"
    assert "local_cluster unavailable" in caplog.text and "threads unavailable" in caplog.text


# ---------------------------------------------------------------- 12. memory_usage


def test_12_memory_usage_has_the_originals_keys_next_to_todays() -> None:
    frames = {"A": weekday_frame("A", "2019-01-01", "2024-06-30", seed=5)}
    result = ParallelSpringFestivalEngine(config=SEQUENTIAL).analyze_multiple_stocks_parallel(
        frames
    )
    usage = result.memory_usage
    assert {"rss_mb", "vms_mb", "percent"} <= set(usage)
    assert {"rss_start_mb", "rss_end_mb", "input_frames_mb"} <= set(usage)
    assert all(isinstance(v, float) for v in usage.values())
    assert 0 < usage["rss_mb"] <= usage["vms_mb"] and 0 < usage["percent"] <= 100


# ---------------------------------------------------------------- 13. minutes


def test_13_recommendations_carry_the_originals_minutes() -> None:
    engine = ParallelSpringFestivalEngine(config=SEQUENTIAL)
    recommendations = engine.get_processing_recommendations(
        total_stocks=1000, avg_data_points_per_stock=2000
    )
    for key in (
        "total_stocks",
        "estimated_memory_gb",
        "recommended_chunk_size",
        "recommended_workers",
        "estimated_sequential_time_minutes",
        "estimated_parallel_time_minutes",
        "speedup_factor",
        "use_distributed",
        "memory_optimization_needed",
    ):
        assert key in recommendations, key
    assert recommendations["total_stocks"] == 1000
    assert recommendations["estimated_sequential_time_minutes"] == pytest.approx(
        recommendations["estimated_sequential_seconds"] / 60
    )
    assert recommendations["estimated_parallel_time_minutes"] == pytest.approx(
        recommendations["estimated_parallel_seconds"] / 60
    )
    module_level = get_processing_recommendations(50_000, 4000)
    assert (
        module_level["estimated_parallel_time_minutes"]
        <= module_level["estimated_sequential_time_minutes"]
    )


# ---------------------------------------------------------------- the deliberate improvements


def test_improvements_each_with_the_line_a_user_changes() -> None:
    """docs/migrating.md, 'Kept on purpose': the 'after' line of each holds."""
    # A calendar for 1901-2100: 2050 is a date now; None only past 2100.
    assert ChineseCalendar.get_spring_festival(2050) == date(2050, 1, 23)
    assert ChineseCalendar.get_spring_festival(2101) is None
    # Positions relative to the next festival: in December, next year's festival...
    d = date(2024, 12, 20)
    december = SpringFestivalAlignmentEngine().get_current_position("X", d)
    assert december["spring_festival_date"] == date(2025, 1, 29)
    assert december["days_to_spring_festival"] == 40
    # ... and this year's festival, for code that wants it, from the calendar.
    assert ChineseCalendar.get_spring_festival(d.year) == date(2024, 2, 10)
    # Honest speed-up: a small batch is best run in-process on any machine.
    recommendations = get_processing_recommendations(10)
    assert recommendations["speedup_factor"] >= 1
    assert recommendations["recommended_workers"] == 1 and not recommendations["use_distributed"]
    # More in get_cluster_info: compare the status, not the whole dict.
    info = DaskResourceManager(SEQUENTIAL).get_cluster_info()
    assert info["status"] == "not_connected" and info != {"status": "not_connected"}
