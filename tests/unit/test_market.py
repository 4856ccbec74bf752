"""`sfa generate`: the synthetic market must be reproducible, look like a live feed,
pass SPEC 1 validation, and carry a festival effect the analysis can find."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import math
import re
from collections import defaultdict
from pathlib import Path

import orjson
import pandas as pd
import pytest

from bench.baseline import baseline_analyze
from service.calendar import spring_festival_date
from service.cli.generate import add_arguments, run
from service.engine.types import EngineParams
from service.market import (
    generate_bars,
    generate_blocks,
    symbol_names,
    trading_days,
    write_jsonl,
)

_SYMBOL = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


def _market(n: int = 6, start: int = 2015, end: int = 2017, seed: int = 1) -> bytes:
    out = io.BytesIO()
    write_jsonl(out, n, start, end, seed)
    return out.getvalue()


@pytest.fixture(scope="module")
def bars() -> list[dict]:
    return [orjson.loads(line) for line in _market().splitlines()]


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(list(argv)))


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = ["--symbols", "5", "--start-year", "2019", "--end-year", "2020", "--seed", "9"]
    assert _cli(*args, "--output", str(a)) == 0
    assert _cli(*args, "--output", str(b)) == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == _market(5, 2019, 2020, 9)


@pytest.mark.parametrize(
    ("args", "sha256"),
    [
        ((5, 2019, 2020, 9), "5d67d15b0e5e9c701184bf791ee588a94db99f6553cac21d2304880208d2b97e"),
        ((1000, 2020, 2020, 3), "d1ae74620c427135e6cadf8e005e9c499136431491500603242b919d0256e988"),
        ((7, 1995, 2001, 42), "c1d36d0a7af7a083712a2ff53dd6de605ebeb423768620456c77af7ef879190b"),
    ],
)
def test_a_seed_still_means_the_same_market(args: tuple[int, int, int, int], sha256: str) -> None:
    """Digests of the year-at-a-time generator's files: streaming day by day must not
    change a byte (demos, benchmarks and tests name markets by their seed)."""
    assert hashlib.sha256(_market(*args)).hexdigest() == sha256


def test_blocks_and_bars_are_the_same_market() -> None:
    blocks = list(generate_blocks(4, 2019, 2020, 2))
    assert [b.dates[0][:4] for b in blocks] == ["2019", "2020"]
    closes = [c / 100 for b in blocks for row in b.close.tolist() for c in row]
    assert closes == [b["close"] for b in generate_bars(4, 2019, 2020, 2)]


def test_seed_changes_prices_not_calendar() -> None:
    one = [orjson.loads(x) for x in _market(seed=1).splitlines()]
    two = [orjson.loads(x) for x in _market(seed=2).splitlines()]
    assert [(b["symbol"], b["date"]) for b in one] == [(b["symbol"], b["date"]) for b in two]
    assert [b["close"] for b in one] != [b["close"] for b in two]


def test_stdout_is_the_default_output(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert _cli("--symbols", "2", "--start-year", "2020", "--end-year", "2020") == 0
    captured = capsysbinary.readouterr()
    assert captured.out == _market(2, 2020, 2020, 0)
    assert captured.err == b""  # no progress bar when stderr is not a terminal


def test_bad_ranges_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("--symbols", "0", "--start-year", "2020", "--end-year", "2020") == 2
    assert _cli("--symbols", "1", "--start-year", "2021", "--end-year", "2020") == 2
    assert _cli("--symbols", "1", "--start-year", "1900", "--end-year", "1901") == 2
    assert "--start-year" in capsys.readouterr().err


def test_only_weekdays_outside_every_festival_week(bars: list[dict]) -> None:
    dates = {dt.date.fromisoformat(b["date"]) for b in bars}
    assert all(d.weekday() < 5 for d in dates)
    for y in range(2015, 2018):
        sf = spring_festival_date(y)
        week = {sf + dt.timedelta(days=i) for i in range(7)}
        assert not dates & week
    # and every other weekday is present: nothing else is a holiday
    every = pd.bdate_range("2015-01-01", "2017-12-31").date
    assert len(dates) == len(every) - sum(
        1
        for d in every
        if any(0 <= (d - spring_festival_date(y)).days < 7 for y in range(2015, 2018))
    )
    assert len(dates) == len(trading_days(2015, 2017))


def test_interleaved_by_date_every_symbol_every_day(bars: list[dict]) -> None:
    names = symbol_names(6)
    assert len(set(names)) == 6
    dates = [b["date"] for b in bars]
    assert dates == sorted(dates)
    for i in range(0, len(bars), 6):
        day = bars[i : i + 6]
        assert [b["symbol"] for b in day] == names
        assert len({b["date"] for b in day}) == 1


def test_every_bar_is_valid_per_spec_section_1(bars: list[dict]) -> None:
    for b in bars:
        assert set(b) == {"symbol", "date", "open", "high", "low", "close", "volume"}
        assert _SYMBOL.match(b["symbol"])
        assert dt.date(1901, 1, 1) <= dt.date.fromisoformat(b["date"]) <= dt.date(2099, 12, 31)
        for field in ("open", "high", "low", "close"):
            assert math.isfinite(b[field]) and b[field] > 0
        assert b["low"] <= min(b["open"], b["close"])
        assert max(b["open"], b["close"]) <= b["high"]
        assert b["volume"] >= 0


def test_symbol_style() -> None:
    names = symbol_names(4)
    assert names == ["600000.SH", "000001.SZ", "600001.SH", "000002.SZ"]


def test_festival_effect_gives_ok_patterns() -> None:
    closes: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for b in generate_bars(12, 2013, 2019, 4):
        closes[b["symbol"]].append((b["date"], b["close"]))
    strengths = []
    for symbol, rows in closes.items():
        result = baseline_analyze(
            symbol, pd.DataFrame(rows, columns=["date", "close"]), EngineParams()
        )
        assert result.status == "ok"
        assert result.years == tuple(range(2013, 2020))
        assert result.pattern is not None
        assert result.pattern.average_return_before > 0  # the built-in pre-festival drift
        strengths.append(result.pattern.pattern_strength)
    assert sum(s > 0 for s in strengths) >= 0.8 * len(strengths)
