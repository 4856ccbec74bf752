"""The files a newcomer has at hand, through `sfa replay`, `sfa generate` and `sfa plot` as
typed at a terminal: the usual forms are read (a pretty-printed JSON array, TSV, a
`;`-separated export, a UTF-8 BOM, gzip without `.gz`), and a file from which no valid
bar could be read fails by name with its first reasons and replaces no output."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration


def _sfa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, "SFA_DECODE_PROCESSES": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    path = tmp_path_factory.mktemp("m") / "bars.jsonl"
    done = _sfa("generate", "--symbols", "6", "--start-year", "2014", "--end-year", "2020")
    assert done.returncode == 0, done.stderr
    path.write_text(done.stdout)
    return [json.loads(line) for line in done.stdout.splitlines()]


def _by_symbol(out: Path) -> dict[str, str]:
    """Each symbol's last result, without the fields naming where it was read."""
    last: dict[str, str] = {}
    for line in out.read_bytes().splitlines():
        result = orjson.loads(line)
        last[result["symbol"]] = result
    return {s: orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode() for s, r in last.items()}


def _delimited(bars: list[dict[str, object]], delimiter: str) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(bars[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(bars)
    return text.getvalue()


def test_the_usual_forms_are_read_as_the_same_bars(
    market: list[dict[str, object]], tmp_path: Path
) -> None:
    symbols = sorted({str(b["symbol"]) for b in market})
    own = {s: [b for b in market if b["symbol"] == s] for s in symbols}
    forms = {  # one symbol per form, so every form must be read right for the whole to match
        "pretty.json": json.dumps(own[symbols[0]], indent=2).encode(),
        "bars.tsv": _delimited(own[symbols[1]], "\t").encode(),
        "export.csv": _delimited(own[symbols[2]], ";").encode(),
        "bom.jsonl": b"\xef\xbb\xbf" + b"".join(orjson.dumps(b) + b"\n" for b in own[symbols[3]]),
        "zipped.jsonl": gzip.compress(b"".join(orjson.dumps(b) + b"\n" for b in own[symbols[4]])),
        "plain.jsonl": b"".join(orjson.dumps(b) + b"\n" for b in own[symbols[5]]),
    }
    for name, data in forms.items():
        (tmp_path / name).write_bytes(data)
    reference = tmp_path / "reference.jsonl"
    reference.write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in market))
    got, want = tmp_path / "got.jsonl", tmp_path / "want.jsonl"
    done = _sfa("replay", *(str(tmp_path / n) for n in forms), "--output", str(got))
    assert done.returncode == 0, done.stderr
    assert "0 dead letters" in done.stderr
    assert _sfa("replay", str(reference), "--emit", "final", "--output", str(want)).returncode == 0
    assert _by_symbol(got) == _by_symbol(want)


def test_files_without_a_valid_bar_fail_by_name_and_replace_no_output(tmp_path: Path) -> None:
    compact = tmp_path / "compact.csv"  # dates as the usual form of Chinese market data
    compact.write_text("symbol,date,close\n600000.SH,20180102,10.5\n600000.SH,20180103,10.7\n")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("code,day,price\n600000.SH,2018-01-02,10.5\n")
    not_gzip = tmp_path / "notes.jsonl.gz"
    not_gzip.write_text("these are my notes\n")
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    out.write_text("earlier results\n")
    errors.write_text("earlier errors\n")
    inputs = [str(compact), str(unknown), str(not_gzip)]
    done = _sfa("replay", *inputs, "--output", str(out), "--errors", str(errors))
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert (
        f"sfa: input file {compact} not read: no valid bar in 2 record(s); first: "
        'line 2: invalid_field:date ("20180102"; expected YYYY-MM-DD); '
        'line 3: invalid_field:date ("20180103"; expected YYYY-MM-DD)'
    ) in lines
    assert (
        f"sfa: input file {unknown} not read: no header row naming a bar field (expected "
        "column names such as symbol,date,close; the first row is 'code,day,price')"
    ) in lines
    assert (
        f"sfa: input file {not_gzip} not read: no valid bar in 1 record(s); first: "
        "line 1: invalid_json"
    ) in lines
    assert lines[-1] == (
        f"replay: INCOMPLETE: no valid bar in 3 input file(s); {out} and {errors} left as it was"
    )
    assert out.read_text() == "earlier results\n"
    assert errors.read_text() == "earlier errors\n"


def test_generate_writes_the_format_its_output_names(tmp_path: Path) -> None:
    args = ["--symbols", "2", "--start-year", "2019", "--end-year", "2019"]
    as_jsonl = _sfa("generate", *args)
    assert _sfa("generate", *args, "--output", str(tmp_path / "m.csv.gz")).returncode == 0
    text = gzip.decompress((tmp_path / "m.csv.gz").read_bytes()).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    bars = [json.loads(line) for line in as_jsonl.stdout.splitlines()]
    assert [{k: str(v) for k, v in b.items()} for b in bars] == rows
    refused = _sfa("generate", *args, "--output", str(tmp_path / "m.parquet"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"sfa: --output {tmp_path / 'm.parquet'}: generate writes JSONL (.jsonl) or CSV "
        "(.csv), either optionally .gz"
    ]
    assert not (tmp_path / "m.parquet").exists()


def test_plot_of_a_bars_file_given_as_results_says_so_in_one_line(tmp_path: Path) -> None:
    bars = tmp_path / "bars.jsonl"
    bars.write_text('{"symbol":"A.SH","date":"2020-01-02","close":1}\n')
    done = _sfa("plot", "A.SH", "--results", str(bars), "--output", str(tmp_path / "a.png"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sfa: {bars} holds bars, not results (sfa replay's --output); "
        f"to draw from bars: sfa plot A.SH --bars {bars}"
    ]


def test_plot_marks_today_on_the_curves_axis_in_its_unit(tmp_path: Path) -> None:
    done = _sfa("generate", "--symbols", "1", "--start-year", "2012", "--end-year", "2020")
    bars = tmp_path / "bars.jsonl"
    symbol = json.loads(done.stdout.splitlines()[0])["symbol"]
    # SF 2021 is Friday 2021-02-12: the bar of Tuesday 02-16 is the first post bar, day +1.
    today = {"symbol": symbol, "date": "2021-02-16", "close": 10.0}
    bars.write_text(done.stdout + json.dumps(today) + "\n")
    out = tmp_path / "p.svg"
    drawn = _sfa("plot", symbol, "--bars", str(bars), "--output", str(out))
    assert drawn.returncode == 0, drawn.stderr
    svg = out.read_text()  # matplotlib keeps each text as a comment beside its glyphs
    assert "today (2021-02-16): day +1" in svg
    assert "trading days from the Spring Festival" in svg
    assert "mean curve (faint: fewer than 5 of 9 years)" in svg


def test_plot_takes_the_symbol_after_bars_and_strongest_alone(tmp_path: Path) -> None:
    done = _sfa("generate", "--symbols", "3", "--start-year", "2012", "--end-year", "2020")
    bars = tmp_path / "bars.jsonl"
    bars.write_text(done.stdout)
    symbol = json.loads(done.stdout.splitlines()[0])["symbol"]
    after = _sfa("plot", "--bars", str(bars), symbol, "--output", str(tmp_path / "a.png"))
    assert after.returncode == 0, after.stderr
    assert after.stderr.strip() == f"plot: {symbol} -> {tmp_path / 'a.png'}"
    results = tmp_path / "results.jsonl"
    assert _sfa("replay", str(bars), "--output", str(results)).returncode == 0
    alone = _sfa("plot", "--strongest", str(results), "--output", str(tmp_path / "s.png"))
    assert alone.returncode == 0, alone.stderr
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
