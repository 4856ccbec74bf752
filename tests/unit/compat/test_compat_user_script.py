"""An original user's script, with only its import line changed (issue 20).

The part above the tests is written the way the original system's users wrote their
scripts: make (or load) a few stocks' daily bars with the original column names, then
per stock align them on the Spring Festival, find the seasonal pattern, place a few dates
in the festival cycle and ask for trading signals, printing as it goes. It uses the
`service.compat` names only. The tests run it and check what it got against the shapes
the original documented for each call; `python -m tests.unit.compat.test_compat_user_script`
runs it as a script.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest

from service.compat import (  # was: from stock_analysis_system.analysis.spring_festival_engine
    AlignedDataPoint,
    AlignedTimeSeries,
    ChineseCalendar,
    SeasonalPattern,
    SpringFestivalAlignmentEngine,
)

STOCKS = {"000001.SZ": 1, "600519.SH": 2, "000858.SZ": 3}
YEARS = [2020, 2021, 2022, 2023, 2024]
TEST_DATES = [
    (date(2024, 1, 15), "Pre-Spring Festival"),
    (date(2024, 2, 10), "Spring Festival Day"),
    (date(2024, 2, 25), "Post-Spring Festival"),
    (date(2024, 6, 15), "Mid-year (Normal Period)"),
    (date(1900, 1, 1), "Before the calendar"),
]


def create_sample_stock_data(symbol: str, seed: int) -> pd.DataFrame:
    """Six years of weekday bars, rising a little before each Spring Festival."""
    dates = pd.date_range(date(2019, 1, 1), date(2024, 12, 31), freq="D")
    trading_dates = dates[dates.day_of_week < 5]
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0002, 0.015, len(trading_dates))
    for i, trade_date in enumerate(trading_dates):
        sf_date = ChineseCalendar.get_spring_festival(trade_date.year)
        if sf_date:
            days_to_sf = (sf_date - trade_date.date()).days
            if 1 <= days_to_sf <= 30:
                returns[i] += 0.004
            elif -15 <= days_to_sf <= -1:
                returns[i] -= 0.002
    prices = 100 * np.cumprod(1 + returns)
    return pd.DataFrame(
        {
            "stock_code": [symbol] * len(trading_dates),
            "trade_date": trading_dates,
            "open_price": prices * 0.999,
            "high_price": prices * 1.015,
            "low_price": prices * 0.985,
            "close_price": prices,
            "volume": rng.integers(1_000_000, 10_000_000, len(trading_dates)),
        }
    )


def analyse_stock(
    engine: SpringFestivalAlignmentEngine, stock_data: pd.DataFrame
) -> dict[str, Any]:
    aligned_data = engine.align_to_spring_festival(stock_data, YEARS)
    print(f"   Aligned {len(aligned_data.data_points)} data points")
    print(f"   Years analyzed: {aligned_data.years}")
    print(f"   Baseline price: {aligned_data.baseline_price:.2f}")
    before = aligned_data.get_before_spring_festival()
    after = aligned_data.get_after_spring_festival()
    print(f"   Before Spring Festival: {len(before)} points, after: {len(after)} points")
    for year in aligned_data.years:
        year_data = aligned_data.get_year_data(year)
        if year_data:
            low = min(point.relative_day for point in year_data)
            high = max(point.relative_day for point in year_data)
            mean = np.mean([point.normalized_price for point in year_data])
            print(f"   {year}: {len(year_data)} points (days {low} to {high}), mean {mean:+.2f}%")

    pattern = engine.identify_seasonal_patterns(aligned_data)
    print(f"   Pattern Strength: {pattern.pattern_strength:.3f}")
    print(f"   Average Return Before SF: {pattern.average_return_before:+.2f}%")
    print(f"   Average Return After SF: {pattern.average_return_after:+.2f}%")
    print(f"   Volatility Ratio (After/Before): {pattern.volatility_ratio:.2f}x")
    print(f"   Peak Day: {pattern.peak_day:+d}, Trough Day: {pattern.trough_day:+d}")

    positions, signals = [], []
    for test_date, description in TEST_DATES:
        position = engine.get_current_position(pattern.symbol, test_date)
        positions.append(position)
        print(f"   {description} ({test_date}): {position['position']}")
        print(f"      Days to SF: {position['days_to_spring_festival']}")
        if position["in_analysis_window"]:
            signal = engine.generate_trading_signals(pattern, position)
            print(f"      Signal: {signal['signal'].upper()} ({signal['strength']:.2f})")
            print(f"      Recommended Action: {signal['recommended_action'].upper()}")
            print(f"      Reason: {signal['reason']}")
        else:
            signal = engine.generate_trading_signals(pattern, position)
            print("      Outside analysis window - Normal trading period")
        signals.append(signal)
    return {"aligned": aligned_data, "pattern": pattern, "positions": positions, "signals": signals}


def main() -> dict[str, dict[str, Any]]:
    print("Spring Festival Analysis")
    engine = SpringFestivalAlignmentEngine(window_days=60)
    print(f"   Analysis window: +/-{engine.window_days} days around Spring Festival")
    for year in ChineseCalendar.get_available_years()[-3:]:
        print(f"   {year}: {ChineseCalendar.get_spring_festival(year)}")
    report = {}
    for symbol, seed in STOCKS.items():
        print(f"\n{symbol}")
        report[symbol] = analyse_stock(engine, create_sample_stock_data(symbol, seed))
    print("\nDone.")
    return report


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------- the tests

PHASES = {
    "approaching",
    "pre_festival",
    "festival_day",
    "post_festival",
    "recovery",
    "normal_period",
    "unknown",
}
POSITION_KEYS = {
    "symbol",
    "current_date",
    "spring_festival_date",
    "days_to_spring_festival",
    "position",
    "in_analysis_window",
    "relative_day",
}
SIGNAL_KEYS = {
    "signal",
    "strength",
    "reason",
    "recommended_action",
    "pattern_strength",
    "confidence_level",
    "volatility_warning",
}


@pytest.fixture(scope="module")
def report() -> dict[str, dict[str, Any]]:
    return main()


def test_the_script_runs_to_the_end_and_prints_every_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main()
    out = capsys.readouterr().out
    assert out.rstrip().endswith("Done.")
    assert out.count("Baseline price: ") == len(STOCKS)
    assert out.count("Pattern Strength: ") == len(STOCKS)
    assert "2100: 2100-02-09" in out


def test_align_returns_the_originals_aligned_time_series(report: dict[str, dict[str, Any]]) -> None:
    for symbol, got in report.items():
        aligned = got["aligned"]
        assert isinstance(aligned, AlignedTimeSeries)
        assert aligned.symbol == symbol and aligned.window_days == 60
        assert aligned.years == YEARS
        assert isinstance(aligned.baseline_price, float) and aligned.baseline_price > 0
        assert aligned.data_points and all(
            isinstance(p, AlignedDataPoint) for p in aligned.data_points
        )
        for p in aligned.data_points:
            assert isinstance(p.original_date, date) and isinstance(p.spring_festival_date, date)
            assert isinstance(p.relative_day, int) and isinstance(p.year, int)
            assert p.year in YEARS and -60 <= p.relative_day <= 60
            assert isinstance(p.price, float) and p.price > 0
            assert isinstance(p.normalized_price, float)
            assert p.spring_festival_date == ChineseCalendar.get_spring_festival(p.year)
            assert p.is_before_spring_festival == (p.relative_day < 0)
            assert p.is_after_spring_festival == (p.relative_day > 0)
        assert {p.year for p in aligned.data_points} == set(YEARS)
        n_before = len(aligned.get_before_spring_festival())
        assert n_before + len(aligned.get_after_spring_festival()) == len(aligned.data_points)


def test_identify_returns_the_originals_seasonal_pattern(report: dict[str, dict[str, Any]]) -> None:
    for symbol, got in report.items():
        pattern = got["pattern"]
        assert isinstance(pattern, SeasonalPattern) and pattern.symbol == symbol
        assert pattern.years_analyzed == YEARS
        for name in ("pattern_strength", "consistency_score", "confidence_level"):
            assert 0.0 <= getattr(pattern, name) <= 1.0, name
        for name in ("average_return_before", "average_return_after"):
            assert isinstance(getattr(pattern, name), float), name
        assert pattern.volatility_before > 0 and pattern.volatility_after > 0
        assert pattern.volatility_ratio == pytest.approx(
            pattern.volatility_after / pattern.volatility_before, rel=1e-12
        )
        assert isinstance(pattern.peak_day, int) and isinstance(pattern.trough_day, int)
        assert isinstance(pattern.is_bullish_before, bool)
        assert pattern.is_bullish_before is (pattern.average_return_before > 0)


def test_positions_have_the_originals_keys_and_phases(report: dict[str, dict[str, Any]]) -> None:
    for symbol, got in report.items():
        positions = got["positions"]
        assert [p["position"] for p in positions] == [
            "approaching",
            "festival_day",
            "recovery",
            "normal_period",
            "unknown",
        ]
        for position, (when, _) in zip(positions, TEST_DATES, strict=True):
            assert set(position) == POSITION_KEYS and position["position"] in PHASES
            assert position["symbol"] == symbol and position["current_date"] == when
        in_window = positions[:3]
        assert [p["days_to_spring_festival"] for p in in_window] == [26, 0, -15]
        assert all(p["spring_festival_date"] == date(2024, 2, 10) for p in in_window)
        assert all(p["in_analysis_window"] is True for p in in_window)
        assert positions[3]["in_analysis_window"] is False
        unknown = positions[4]
        assert (
            unknown["spring_festival_date"] is None and unknown["days_to_spring_festival"] is None
        )


def test_signals_have_the_originals_keys_and_values(report: dict[str, dict[str, Any]]) -> None:
    for got in report.values():
        pattern = got["pattern"]
        for signal, position in zip(got["signals"], got["positions"], strict=True):
            assert set(signal) == SIGNAL_KEYS
            assert signal["signal"] in {"bullish", "bearish", "neutral"}
            assert signal["recommended_action"] in {"buy", "watch", "sell", "reduce", "hold"}
            assert isinstance(signal["strength"], float) and 0.0 <= signal["strength"] <= 1.0
            assert isinstance(signal["reason"], str) and signal["reason"]
            assert signal["pattern_strength"] == pattern.pattern_strength
            assert signal["confidence_level"] == pattern.confidence_level
            assert isinstance(signal["volatility_warning"], bool)
            if not position["in_analysis_window"]:
                assert (signal["signal"], signal["strength"]) == ("neutral", 0.0)
                assert signal["recommended_action"] == "hold"
                assert "Outside Spring Festival analysis window" in signal["reason"]
        festival_day = got["signals"][1]
        assert festival_day["signal"] == "neutral" and festival_day["recommended_action"] == "hold"
