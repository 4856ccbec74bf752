"""`sfa plot`: images written in the asked format, from results or from bars, and the
drawn yearly paths are the ones the engine's mean curve averages."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import orjson
import pytest

import service.__main__ as cli
from service.cli import plot
from service.market import symbol_names, write_jsonl
from service.settings import load_settings

SETTINGS = load_settings({})


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plot") / "bars.jsonl"
    with open(path, "wb") as fh:
        write_jsonl(fh, 3, 2012, 2020, 5)
    return path


@pytest.fixture(scope="module")
def symbol() -> str:
    return symbol_names(3)[1]


@pytest.fixture(scope="module")
def results(bars: Path, symbol: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results file as replay writes it: several symbols, the wanted one twice (last wins)."""
    path = tmp_path_factory.mktemp("results") / "results.jsonl"
    lines = []
    for name in symbol_names(3):
        result, _ = plot.from_bars([str(bars)], name, SETTINGS)
        lines.append(orjson.dumps(result))
    stale = orjson.loads(lines[1])
    stale["pattern"]["peak_day"] = 999  # an earlier result: must not be the one drawn
    path.write_bytes(b"\n".join([orjson.dumps(stale), *lines]) + b"\n")
    return path


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    plot.add_arguments(parser)
    return parser.parse_args(argv)


def _main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """Through the real `sfa` dispatcher, with `plot` registered as the lead will add it."""
    monkeypatch.setitem(cli._COMMANDS, "plot", ("service.cli.plot", "draw a symbol's curves"))
    return cli.main(["plot", *argv])


def test_png_from_bars(bars: Path, symbol: str, tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    assert plot.run(_args(symbol, "--bars", str(bars), "--output", str(out)), SETTINGS) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


def test_svg_from_results(results: Path, symbol: str, tmp_path: Path) -> None:
    out = tmp_path / "p.svg"
    assert plot.run(_args(symbol, "--results", str(results), "-o", str(out))) == 0
    text = out.read_text()
    assert "<svg" in text[:1000]
    assert "peak day" in text and symbol in text  # legend and title are text in SVG


def test_the_last_result_for_the_symbol_is_drawn(results: Path, symbol: str) -> None:
    result = plot.from_results(str(results), symbol)
    assert result["symbol"] == symbol and result["pattern"]["peak_day"] != 999


def test_yearly_paths_average_to_the_engine_curve(bars: Path, symbol: str) -> None:
    result, paths = plot.from_bars([str(bars)], symbol, SETTINGS)
    assert result["status"] == "ok"
    assert [p.year for p in paths] == result["years_analyzed"]
    for k, mean, n in result["curve"]:
        values = [p.r[p.k == k][0] for p in paths if (p.k == k).any()]
        assert len(values) == n
        assert np.mean(values) == pytest.approx(mean, rel=1e-12, abs=1e-12)


def test_unknown_symbol_is_one_line_and_exit_1(
    results: Path, bars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "none.png"
    for source in (["--results", str(results)], ["--bars", str(bars)]):
        assert _main(monkeypatch, "NOPE.SH", *source, "--output", str(out)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "NOPE.SH" in err and "Traceback" not in err
    assert not out.exists()


def test_unreadable_results_file_exits_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert _main(monkeypatch, "A.SH", "--results", "/nonexistent/results.jsonl") == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_other_output_formats_exit_2(results: Path, symbol: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.jpg"
    assert plot.run(_args(symbol, "--results", str(results), "--output", str(out))) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not out.exists()


def test_strongest_picks_the_highest_last_pattern_strength(results: Path, tmp_path: Path) -> None:
    last = {}
    for line in results.read_bytes().splitlines():
        obj = orjson.loads(line)
        last[obj["symbol"]] = obj
    ranked = {s: r["pattern"]["pattern_strength"] for s, r in last.items() if r["status"] == "ok"}
    assert len(set(ranked.values())) > 1  # the choice is not a tie
    assert plot.strongest(str(results)) == max(ranked, key=lambda s: ranked[s])
    out = tmp_path / "best.png"
    assert (
        plot.run(_args("--strongest", str(results), "--results", str(results), "-o", str(out))) == 0
    )
    assert out.stat().st_size > 0


def test_symbol_and_strongest_exclude_each_other(results: Path, symbol: str, capsys) -> None:
    assert plot.run(_args(symbol, "--strongest", str(results), "--results", str(results))) == 2
    assert plot.run(_args("--results", str(results))) == 2
    assert "either SYMBOL or --strongest" in capsys.readouterr().err
