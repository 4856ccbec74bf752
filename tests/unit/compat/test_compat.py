"""The original API (SPEC 8) in sequential mode: no cluster, so these run in seconds.

The oracle is the per-row baseline fed the *whole* frame, so the compat layer's own
conversion (aliases, invalid rows, corrections, window filtering, latest) is checked
against an independent path, not against itself.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.baseline import baseline_analyze
from service import (
    BatchProcessingResult,
    ParallelProcessingConfig,
    ParallelSpringFestivalEngine,
    SeasonalPattern,
    get_processing_recommendations,
)
from service.cli.recommend import add_arguments, run
from service.compat import frame_to_windows
from service.engine import EngineParams, Pattern, PatternResult, analyze_patterns

_SEQ = ParallelProcessingConfig(execution="sequential", chunk_size=2)
_PATTERN_FIELDS = [f.name for f in fields(Pattern) if f.name != "volatility_ratio"]


def make_frame(seed: int, start: str = "2014-01-01", end: str = "2021-06-30") -> pd.DataFrame:
    """Business-day bars with the original column names (a random walk; some festival drift)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, end)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.01, len(dates))))
    return pd.DataFrame(
        {
            "stock_code": f"S{seed}",
            "trade_date": dates.strftime("%Y-%m-%d"),
            "open_price": closes,
            "high_price": closes * 1.01,
            "low_price": closes * 0.99,
            "close_price": closes,
            "volume": 1000.0,
        }
    )


def _oracle(frame: pd.DataFrame, symbol: str, params: EngineParams) -> PatternResult:
    return baseline_analyze(
        symbol, pd.DataFrame({"date": frame["trade_date"], "close": frame["close_price"]}), params
    )


def _assert_same(pattern: SeasonalPattern, expected: PatternResult) -> None:
    assert expected.status == "ok" and expected.pattern is not None
    assert pattern.years_analyzed == list(expected.years)
    for name in _PATTERN_FIELDS:
        assert math.isclose(
            getattr(pattern, name), getattr(expected.pattern, name), rel_tol=1e-9, abs_tol=1e-12
        ), name
    want = expected.pattern.volatility_ratio
    assert pattern.volatility_ratio == (math.inf if want is None else pytest.approx(want, rel=1e-9))
    assert [k for k, _, _ in pattern.curve] == expected.curve_k.tolist()
    assert np.allclose([m for _, m, _ in pattern.curve], expected.curve_mean, rtol=1e-9)


def test_results_equal_the_engine_oracle_with_original_column_names() -> None:
    frames = {f"S{i}": make_frame(i) for i in range(5)}
    result = ParallelSpringFestivalEngine(config=_SEQ).analyze_multiple_stocks_parallel(frames)
    assert isinstance(result, BatchProcessingResult)
    assert result.execution_mode == "sequential" and result.fallback_reason is None
    assert result.executed_by == frozenset({"local"})
    assert result.total_stocks == 5 and result.success_rate == 1.0 and result.failure_rate == 0.0
    for symbol, frame in frames.items():
        _assert_same(result.successful_analyses[symbol], _oracle(frame, symbol, EngineParams()))
    # ... and exactly what service.engine computes from the converted windows.
    items = [frame_to_windows(s, f, 60) for s, f in frames.items()]
    for expected in analyze_patterns(items, EngineParams()):  # type: ignore[arg-type]
        assert result.successful_analyses[expected.symbol] == SeasonalPattern.from_result(expected)


def test_spec_column_names_and_a_date_index_give_the_same_patterns() -> None:
    frame = make_frame(7)
    spec = frame.rename(columns={"trade_date": "date", "close_price": "close"})[["date", "close"]]
    indexed = spec.set_index(pd.to_datetime(spec["date"]))[["close"]]
    engine = ParallelSpringFestivalEngine(config=_SEQ)
    result = engine.analyze_multiple_stocks_parallel({"A": frame, "B": spec, "C": indexed})
    assert result.failed_analyses == {}
    a, b, c = (result.successful_analyses[s] for s in "ABC")
    assert a.years_analyzed == b.years_analyzed == c.years_analyzed
    assert a.curve == b.curve == c.curve


def test_invalid_rows_are_dropped_and_later_duplicates_win() -> None:
    clean = make_frame(3)
    bad = clean.copy()
    junk = pd.DataFrame(
        {
            "trade_date": ["2019-02-01", "not a date", "2019-02-04", "2019-02-05", "1850-01-01"],
            "close_price": [-1.0, 10.0, np.nan, 10.0, 10.0],
            "low_price": [None, None, None, 20.0, None],
            "high_price": [None, None, None, 10.0, None],  # low > high
        }
    )
    # A wrong close for an existing date, later corrected by the original row.
    first = clean.iloc[[100]].assign(close_price=999.0)
    bad = pd.concat([first, junk, bad], ignore_index=True)
    params = EngineParams()
    result = ParallelSpringFestivalEngine(config=_SEQ).analyze_multiple_stocks_parallel({"X": bad})
    _assert_same(result.successful_analyses["X"], _oracle(clean, "X", params))
    assert (frame_to_windows("X", bad, 60)).latest == (frame_to_windows("X", clean, 60)).latest  # type: ignore[union-attr]


def test_latest_counts_bars_outside_every_window() -> None:
    frame = make_frame(5, end="2021-02-01")  # 2021's window (SF 2021-02-12) is still open
    windows = frame_to_windows("S5", frame, 60)
    assert not isinstance(windows, str)
    assert windows.latest == int(windows.days[-1])  # the last bar lies in 2021's window
    late = pd.concat([frame, pd.DataFrame({"trade_date": ["2021-09-01"], "close_price": [1.0]})])
    closed = frame_to_windows("S5", late, 60)
    assert not isinstance(closed, str)
    assert closed.latest > int(closed.days[-1])  # the September bar only moves latest
    assert np.array_equal(closed.days, windows.days)


def test_failures_carry_readable_reasons() -> None:
    frames: dict[str, object] = {
        "SHORT": make_frame(1, start="2019-01-01", end="2020-12-31"),  # two closed windows
        "NOCLOSE": make_frame(2)[["trade_date"]],
        "EMPTY": make_frame(2).assign(close_price=-1.0),
        "LIST": [1, 2, 3],
        "OK": make_frame(2),
    }
    result = ParallelSpringFestivalEngine(config=_SEQ).analyze_multiple_stocks_parallel(frames)
    failed = result.failed_analyses
    assert set(failed) == {"SHORT", "NOCLOSE", "EMPTY", "LIST"}
    assert failed["SHORT"].startswith("insufficient_history: 2 qualifying year(s) [2019, 2020]")
    assert "close" in failed["NOCLOSE"] and "no valid bars" in failed["EMPTY"]
    assert "DataFrame" in failed["LIST"]
    assert result.total_stocks == 5
    assert result.success_rate == pytest.approx(0.2) and result.failure_rate == pytest.approx(0.8)


def test_years_filter_limits_the_years_analyzed() -> None:
    engine = ParallelSpringFestivalEngine(config=_SEQ)
    result = engine.analyze_multiple_stocks_parallel({"A": make_frame(4)}, years=[2016, 2017, 2018])
    assert result.successful_analyses["A"].years_analyzed == [2016, 2017, 2018]
    narrow = engine.analyze_multiple_stocks_parallel({"A": make_frame(4)}, years=[2016])
    assert "insufficient_history" in narrow.failed_analyses["A"]


def test_streaming_accepts_every_source_shape_and_matches_the_batch_call() -> None:
    frames = {f"S{i}": make_frame(i) for i in range(5)}
    engine = ParallelSpringFestivalEngine(config=_SEQ)
    batch = engine.analyze_multiple_stocks_parallel(frames)
    sources = [
        iter(frames.items()),
        [{"S0": frames["S0"], "S1": frames["S1"]}, {k: frames[k] for k in ("S2", "S3", "S4")}],
        lambda: (pair for pair in frames.items()),
    ]
    for source in sources:
        streamed = engine.analyze_large_dataset_streaming(source, batch_size=2)
        assert streamed.successful_analyses == batch.successful_analyses
        assert streamed.total_stocks == 5


def test_optimize_for_memory_usage_keeps_results_and_inputs() -> None:
    frames = {"A": make_frame(8), "B": make_frame(9).iloc[:0]}
    before = frames["A"].copy()
    engine = ParallelSpringFestivalEngine(config=_SEQ)
    slim = engine.optimize_for_memory_usage(frames)
    assert list(slim["A"].columns) == ["stock_code", "trade_date", "close_price", "volume"]
    assert slim["A"].memory_usage(deep=True).sum() < before.memory_usage(deep=True).sum() / 4
    pd.testing.assert_frame_equal(frames["A"], before)
    assert (
        engine.analyze_multiple_stocks_parallel(slim).successful_analyses["A"]
        == engine.analyze_multiple_stocks_parallel(frames).successful_analyses["A"]
    )


def test_volatility_ratio_is_inf_where_the_spec_writes_null() -> None:
    base: dict[str, Any] = {
        f.name: 0.0 for f in fields(SeasonalPattern) if f.name not in ("symbol", "curve")
    }
    # SPEC 6 writes null (infinite) when the volatility before is 0 and the one after is not.
    base.update(years_analyzed=[2019, 2020, 2021], peak_day=1, trough_day=-1, volatility_after=0.5)
    assert (
        SeasonalPattern(symbol="X", **{**base, "raw_volatility_ratio": None}).volatility_ratio
        == math.inf
    )
    assert (
        SeasonalPattern(symbol="X", **{**base, "raw_volatility_ratio": 1.5}).volatility_ratio == 1.5
    )


def test_config_from_env_reads_the_dask_variables() -> None:
    config = ParallelProcessingConfig.from_env(
        {
            "DASK_N_WORKERS": "3",
            "DASK_THREADS_PER_WORKER": "2",
            "DASK_MEMORY_LIMIT": "1GB",
            "DASK_CHUNK_SIZE": "50",
            "DASK_ENABLE_DISTRIBUTED": "false",
            "DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786",
            "DASK_MEMORY_TARGET_FRACTION": "0.5",
            "DASK_CONNECT_TIMEOUT": "5s",
        }
    )
    assert (config.n_workers, config.threads_per_worker, config.memory_limit) == (3, 2, "1GB")
    assert (config.chunk_size, config.enable_distributed) == (50, False)
    assert config.scheduler_address == "tcp://10.0.0.1:8786"
    settings = config.to_settings()
    assert settings.dask_memory_target_fraction == 0.5 and settings.dask_connect_timeout == 5.0
    defaults = ParallelProcessingConfig()
    assert (defaults.n_workers, defaults.threads_per_worker, defaults.memory_limit) == (4, 2, "2GB")
    assert (defaults.chunk_size, defaults.enable_distributed, defaults.scheduler_address) == (
        100,
        False,
        None,
    )
    with pytest.raises(ValueError, match="chunk_size"):
        ParallelProcessingConfig(chunk_size=0)


_KEYS = {
    "recommended_chunk_size",
    "recommended_workers",
    "speedup_factor",
    "estimated_memory_gb",
    "use_distributed",
    "memory_optimization_needed",
}


def test_recommendations_have_the_keys_and_grow_with_the_work() -> None:
    sizes = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000]
    recs = [get_processing_recommendations(n) for n in sizes]
    for rec in recs:
        assert rec.keys() >= _KEYS
        assert rec["recommended_chunk_size"] >= 1 and rec["speedup_factor"] >= 1.0
    workers = [r["recommended_workers"] for r in recs]
    memory = [r["estimated_memory_gb"] for r in recs]
    assert workers == sorted(workers) and memory == sorted(memory) and memory[0] < memory[-1]
    assert recs[0]["use_distributed"] is False and recs[0]["recommended_workers"] == 1
    more_points = get_processing_recommendations(1000, 8000)
    assert more_points["estimated_memory_gb"] > recs[3]["estimated_memory_gb"]
    engine = ParallelSpringFestivalEngine(config=_SEQ)
    assert engine.get_processing_recommendations(1000).keys() == recs[3].keys()


def test_recommend_cli_prints_readable_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--stocks", "5000", "--points", "2500"])) == 0
    text = capsys.readouterr().out
    assert "5000 symbols x 2500 bars" in text and "chunk size" in text
    assert run(parser.parse_args(["--stocks", "5000", "--json"])) == 0
    assert json.loads(capsys.readouterr().out).keys() >= _KEYS
