"""File readers for replay/produce: JSONL (+gzip), CSV, Parquet, and their errors."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import service.files.csvrows as csvrows
import service.files.readers as sources
from service.batches import Batch, FileOrigin
from service.decode.batch import decode_batch
from service.errors import InputError
from service.files.readers import (
    FileFailure,
    iter_keyed_bars,
    keyed_messages,
    read_batches,
    total_size_hint,
)

BAR = b'{"symbol":"A","date":"2021-02-03","close":1.5}'


def _origin(batch: Batch) -> FileOrigin:
    assert isinstance(batch.origin, FileOrigin)
    return batch.origin


def _lines(batch: Batch) -> list[int]:
    return [_origin(batch).line_of(i) for i in range(batch.n_messages)]


def _file(batch: Batch) -> str:
    return _origin(batch).file


def _all(paths: list[str], batch_lines: int = 5000) -> tuple[list[bytes], list[int]]:
    values: list[bytes] = []
    lines: list[int] = []
    for fb in read_batches(paths, batch_lines):
        assert isinstance(fb, Batch) and len(fb.messages()) == len(_lines(fb)) > 0
        values += fb.messages()
        lines += _lines(fb)
    return values, lines


# --- JSONL ---


def test_jsonl_lines_blank_lines_and_crlf(tmp_path: Path) -> None:
    p = tmp_path / "bars.jsonl"
    p.write_bytes(b"\n" + BAR + b"\r\n  \n\t\r\n" + b"[" + BAR + b"]\n\n" + BAR)  # no final \n
    values, lines = _all([str(p)])
    assert values == [BAR, b"[" + BAR + b"]", BAR]
    assert lines == [2, 5, 7]


def test_jsonl_plain_file_and_batches(tmp_path: Path) -> None:
    p = tmp_path / "bars.ndjson"
    p.write_bytes(b"".join(BAR + b"\n" for _ in range(7)))
    batches = list(read_batches([str(p)], batch_lines=3))
    assert [len(b.messages()) for b in batches] == [3, 3, 1]
    assert [_lines(b) for b in batches] == [[1, 2, 3], [4, 5, 6], [7]]
    assert {_file(b) for b in batches} == {str(p)}


def test_jsonl_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 7)  # lines span many chunks
    rows = [BAR, b"", b"[1,2]", b"  ", b"x" * 20, BAR]
    p = tmp_path / "bars.json"
    p.write_bytes(b"\r\n".join(rows) + b"\r\n")
    values, lines = _all([str(p)])
    assert values == [BAR, b"[1,2]", b"x" * 20, BAR]
    assert lines == [1, 3, 5, 6]


def test_any_other_suffix_is_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "bars.txt"
    p.write_bytes(BAR + b"\n")
    assert _all([str(p)])[0] == [BAR]


def test_gzip_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "bars.jsonl.gz"
    p.write_bytes(gzip.compress(BAR + b"\n\n" + BAR + b"\n"))
    assert _all([str(p)]) == ([BAR, BAR], [1, 3])
    assert total_size_hint([str(p)]) == len(BAR) * 2 + 3


def test_batches_never_span_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(BAR + b"\n" + BAR + b"\n")
    b.write_bytes(BAR + b"\n")
    batches = list(read_batches([str(a), str(b)], batch_lines=5))
    assert [(_file(x), _lines(x)) for x in batches] == [(str(a), [1, 2]), (str(b), [1])]


# --- CSV ---


def test_csv_rows_become_json_objects(tmp_path: Path) -> None:
    p = tmp_path / "bars.csv"
    p.write_text(
        "\ufeffsymbol,date,close,open,volume,note\n"
        "000001.SZ,2021-02-03,1.5,,100,hello\n"
        "\n"
        "600519,2021-02-04,abc,2,1e3,\n"
        '"B","2021-02-05",3,"4.25",-0,"multi\nline"\n'
        "C,2021-02-06,inf,1,2\n",
        encoding="utf-8",
    )
    values, lines = _all([str(p)])
    rows = [orjson.loads(v) for v in values]
    assert rows[0] == {
        "symbol": "000001.SZ",
        "date": "2021-02-03",
        "close": 1.5,
        "open": None,
        "volume": 100,
        "note": "hello",
    }
    assert rows[1]["symbol"] == "600519" and rows[1]["close"] == "abc"  # stays a string
    assert rows[1]["volume"] == 1000.0 and rows[1]["note"] is None
    assert rows[2]["open"] == 4.25 and rows[2]["note"] == "multi\nline"
    assert rows[3]["close"] == "inf" and "note" not in rows[3]  # short row
    assert lines == [2, 4, 6, 7]
    decoded = decode_batch(values)
    assert decoded.symbols == ["000001.SZ", "B"]
    assert [r.reason for r in decoded.rejects] == ["invalid_field:close", "invalid_field:close"]


def test_csv_aliases_keep_strings(tmp_path: Path) -> None:
    p = tmp_path / "orig.csv"
    p.write_text("stock_code,trade_date,close_price\n000001,20210203,5\n", encoding="utf-8")
    (value,), _ = _all([str(p)])
    assert orjson.loads(value) == {
        "stock_code": "000001",
        "trade_date": "20210203",
        "close_price": 5,
    }


@pytest.mark.parametrize("text", ["", "A,2021-02-03,1.5\nB,2021-02-04,2\n", "\n\n"])
def test_csv_without_header(tmp_path: Path, text: str) -> None:
    p = tmp_path / "noheader.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"noheader\.csv.*header") as info:
        _all([str(p)])
    assert "\n" not in str(info.value)


def test_csv_not_utf8_costs_only_its_line(tmp_path: Path) -> None:
    p = tmp_path / "latin.csv"
    p.write_bytes(b"symbol,date,close\nA,2021-02-02,1\n\xe9,2021-02-03,1\nB,2021-02-04,2\n")
    values, lines = _all([str(p)])
    assert lines == [2, 3, 4]
    assert values[1] == b"\xe9,2021-02-03,1"  # the raw line, for the dead letter
    decoded = decode_batch(values)
    assert decoded.symbols == ["A", "B"]
    assert [(r.reason, r.index) for r in decoded.rejects] == [("invalid_json", 1)]


def test_csv_stray_quote_costs_only_its_line(tmp_path: Path) -> None:
    """An opening quote without its close used to swallow the rest of the file."""
    rows = [f"S{i},2021-02-{i + 1:02d},{i + 1}" for i in range(8)]
    text = [*rows[:2], 'X,"2021-02-09,1', *rows[2:5], '"Y,2021-02-10,1', *rows[5:]]
    p = tmp_path / "quote.csv"
    p.write_text("symbol,date,close\n" + "\n".join(text) + "\n", encoding="utf-8")
    values, lines = _all([str(p)])
    assert lines == list(range(2, 12))
    decoded = decode_batch(values)
    assert decoded.symbols == [f"S{i}" for i in range(8)]
    assert [(r.reason, lines[r.index]) for r in decoded.rejects] == [
        ("invalid_json", 4),
        ("invalid_json", 8),
    ]


def test_csv_quote_that_never_closes_costs_only_its_line(tmp_path: Path) -> None:
    """Short rows (no note) after it: the merged record is never the header's width."""
    p = tmp_path / "open.csv"
    body = "".join(f"S{i},2021-02-03,1\n" for i in range(200))
    p.write_text('symbol,date,close,note\nX,2021-02-03,1,"never closed\n' + body)
    values, lines = _all([str(p)])
    assert lines == list(range(2, 203))
    decoded = decode_batch(values)
    assert decoded.symbols == [f"S{i}" for i in range(200)]
    assert [(r.reason, r.index) for r in decoded.rejects] == [("invalid_json", 0)]


csv_lines = st.lists(
    st.one_of(
        st.tuples(st.just("good"), st.integers(1, 28)),
        st.tuples(st.sampled_from(["latin", "open", "lead", "tail", "blank"]), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rows=csv_lines, chunk=st.integers(5, 300))
def test_csv_every_good_row_survives_its_neighbours(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int]], chunk: int
) -> None:
    bad = {
        "latin": b"\xe9\xff,2021-02-03,1",
        "open": b'Q,"2021-02-03,1',
        "lead": b'"Q,2021-02-03,1',
        "tail": b'Q,2021-02-03,1"',
        "blank": b"",
    }
    lines = [b"symbol,date,close"]
    want: dict[int, dict] = {}
    for i, (kind, day) in enumerate(rows, 2):
        if kind == "good":
            lines.append(f"G{i},2021-02-{day:02d},{day}.5".encode())
            want[i] = {"symbol": f"G{i}", "date": f"2021-02-{day:02d}", "close": day + 0.5}
        else:
            lines.append(bad[kind])
    p = tmp_path_factory.mktemp("csv") / "bars.csv"
    p.write_bytes(b"\n".join(lines) + b"\n")
    old = csvrows._CHUNK_BYTES
    csvrows._CHUNK_BYTES = chunk
    try:
        values, got_lines = _all([str(p)])
    finally:
        csvrows._CHUNK_BYTES = old
    # Two stray quotes may pair into one (rejected) record, but never take a good row.
    assert set(want) <= set(got_lines) <= {i for i, (k, _) in enumerate(rows, 2) if k != "blank"}
    assert got_lines == sorted(got_lines)
    by_line = dict(zip(got_lines, values, strict=True))
    for i, record in want.items():
        assert orjson.loads(by_line[i]) == record


# --- Parquet ---


def test_parquet_rows(tmp_path: Path) -> None:
    p = tmp_path / "bars.parquet"
    table = pa.table(
        {
            "symbol": ["A", "B", "C"],
            "date": pa.array([dt.date(2021, 2, 3), dt.date(2021, 2, 4), None], pa.date32()),
            "close": [1.5, None, float("nan")],
            "volume": pa.array([1, 2, 3], pa.int64()),
            "open": pa.array([decimal.Decimal("1.25")] * 3, pa.decimal128(10, 2)),
        }
    )
    pq.write_table(table, p)
    values, lines = _all([str(p)])
    assert lines == [1, 2, 3]
    assert orjson.loads(values[0]) == {
        "symbol": "A",
        "date": "2021-02-03",
        "close": 1.5,
        "volume": 1,
        "open": 1.25,
    }
    reasons = [r.reason for r in decode_batch(values).rejects]
    assert reasons == ["missing_field:close", "missing_field:date"]


def test_parquet_timestamp_dates(tmp_path: Path) -> None:
    p = tmp_path / "ts.parquet"
    stamps = pa.array([dt.datetime(2021, 2, 3, 15, 0)], pa.timestamp("ms"))
    pq.write_table(pa.table({"trade_date": stamps, "stock_code": ["A"], "close_price": [2.0]}), p)
    (value,), _ = _all([str(p)])
    assert orjson.loads(value)["trade_date"] == "2021-02-03"
    assert decode_batch([value]).symbols == ["A"]


def test_parquet_unknown_columns_of_any_type_are_ignored(tmp_path: Path) -> None:
    p = tmp_path / "extra.parquet"
    table = pa.table(
        {
            "symbol": ["A", "B"],
            "date": ["2021-02-03", "2021-02-04"],
            "close": [1.5, 2.5],
            "blob": pa.array([b"\x00\xff", b"x"], pa.binary()),
            "held": pa.array([dt.timedelta(seconds=5)] * 2, pa.duration("s")),
            "tags": pa.array([[1, 2], []], pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, p)
    values, lines = _all([str(p)])
    assert lines == [1, 2]
    assert orjson.loads(values[0]) == {"symbol": "A", "date": "2021-02-03", "close": 1.5}
    assert decode_batch(values).symbols == ["A", "B"]


def test_parquet_bar_column_of_an_odd_type_is_an_invalid_field(tmp_path: Path) -> None:
    p = tmp_path / "odd.parquet"
    table = pa.table(
        {
            "symbol": pa.array([b"A", b"B"], pa.binary()),
            "date": ["2021-02-03", "2021-02-04"],
            "close": pa.array([dt.timedelta(seconds=5)] * 2, pa.duration("s")),
        }
    )
    pq.write_table(table, p)
    values, _ = _all([str(p)])
    assert orjson.loads(values[0]) == {"symbol": "A", "date": "2021-02-03", "close": "0:00:05"}
    assert {r.reason for r in decode_batch(values).rejects} == {"invalid_field:close"}


def test_corrupt_parquet(tmp_path: Path) -> None:
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"bad\.parquet"):
        _all([str(p)])


# --- unreadable files ---


def test_missing_file_fails_before_any_batch(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(BAR + b"\n")
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file") as info:
        read_batches([str(good), str(tmp_path / "nope.jsonl")])
    assert "\n" not in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a readable file"):
        read_batches([str(tmp_path)])


def test_corrupt_gzip(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl.gz"
    p.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match=r"bad\.jsonl\.gz"):
        _all([str(p)])


def test_truncated_gzip_keeps_its_readable_part(tmp_path: Path) -> None:
    rows = [b'{"symbol":"A","date":"2021-02-03","close":%d}' % i for i in range(1, 20001)]
    full = gzip.compress(b"\n".join(rows) + b"\n")
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(full[: len(full) // 2])
    other = tmp_path / "next.jsonl"
    other.write_bytes(BAR + b"\n")
    failures: list[FileFailure] = []
    batches = list(read_batches([str(p), str(other)], batch_lines=1000, failures=failures))
    kept = [v for b in batches if _file(b) == str(p) for v in b.messages()]
    assert [(b.messages(), _lines(b)) for b in batches if _file(b) == str(other)] == [([BAR], [1])]
    assert len(kept) > 1000  # the readable half of the broken file
    assert kept == rows[: len(kept)]
    assert [(f.file, f.line) for f in failures] == [(str(p), len(kept) + 1)]
    assert "ends early" in failures[0].message() and str(p) in failures[0].message()
    with pytest.raises(InputError, match=rf"cut\.jsonl\.gz broken at line {len(kept) + 1}"):
        list(read_batches([str(p)]))


def test_truncated_gzip_csv_keeps_its_readable_part(tmp_path: Path) -> None:
    rows = [b"A,2021-02-03,%d" % i for i in range(1, 20001)]
    full = gzip.compress(b"symbol,date,close\n" + b"\n".join(rows) + b"\n")
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(full[: len(full) // 2])
    failures: list[FileFailure] = []
    values, lines = [], []
    for b in read_batches([str(p)], failures=failures):
        values += b.messages()
        lines += _lines(b)
    assert len(values) > 1000 and lines == list(range(2, len(values) + 2))
    assert [orjson.loads(v)["close"] for v in values] == list(range(1, len(values) + 1))
    assert [(f.file, f.line) for f in failures] == [(str(p), len(values) + 2)]


def test_unreadable_files_are_failures_and_the_rest_is_read(tmp_path: Path) -> None:
    bad_gz = tmp_path / "bad.jsonl.gz"
    bad_gz.write_bytes(b"not gzip at all\n")
    bad_pq = tmp_path / "bad.parquet"
    bad_pq.write_bytes(b"not parquet at all")
    no_header = tmp_path / "bad.csv"
    no_header.write_text("1,2,3\n")
    good = tmp_path / "good.jsonl"
    good.write_bytes(BAR + b"\n")
    failures: list[FileFailure] = []
    paths = [str(bad_gz), str(bad_pq), str(no_header), str(good)]
    batches = list(read_batches(paths, failures=failures))
    # The bytes decide, not the name: plain text named .gz is read as text (and its
    # line is a dead letter where it is decoded; replay then fails the file, no bar).
    assert [b.messages() for b in batches] == [[b"not gzip at all"], [BAR]]
    assert [(f.file, f.line <= 1) for f in failures] == [(p, True) for p in paths[1:3]]
    assert all("\n" not in f.message() and " not read: " in f.message() for f in failures)


def test_gzip_is_recognised_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    zipped = tmp_path / "bars.jsonl"  # gzip data without .gz, as `gzip -c > x.jsonl` makes
    zipped.write_bytes(gzip.compress(BAR + b"\n" + BAR + b"\n"))
    as_csv = tmp_path / "bars.csv"
    as_csv.write_bytes(gzip.compress(b"symbol,date,close\nA,2021-02-03,1.5\n"))
    batches = list(read_batches([str(zipped), str(as_csv)]))
    assert [b.messages() for b in batches] == [[BAR, BAR], [BAR]]


def test_bad_batch_lines() -> None:
    with pytest.raises(ValueError):
        read_batches([], batch_lines=0)


# --- produce ---


def test_iter_keyed_bars(tmp_path: Path) -> None:
    p = tmp_path / "mixed.jsonl"
    rows = [
        BAR,
        b'[{"stock_code":"S1","date":"2021-02-03","close":1},{"symbol":"S2"}]',
        b"[]",
        b"not json",
        b'{"symbol":5}',
        b'{"symbol":null,"stock_code":"S3"}',
        b"[5]",
    ]
    p.write_bytes(b"\n".join(rows) + b"\n")
    assert list(iter_keyed_bars([str(p)])) == [
        (b"A", rows[0]),
        (b"S1", rows[1]),
        (None, rows[2]),
        (None, rows[3]),
        (None, rows[4]),
        (b"S3", rows[5]),
        (None, rows[6]),
    ]


def test_keyed_messages_know_their_line(tmp_path: Path) -> None:
    p = tmp_path / "bars.csv"
    p.write_text("symbol,date,close\nA,2021-02-03,1\n\nB,2021-02-04,2\n")
    got = [(m.key, m.file, m.line) for m in keyed_messages([str(p)])]
    assert got == [(b"A", str(p), 2), (b"B", str(p), 4)]


def test_total_size_hint(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"x" * 10)
    assert total_size_hint([str(a), str(tmp_path / "missing")]) == 10


# --- the JSONL cutter: blobs where the lines are clean, lists elsewhere ---

jsonl_lines = st.lists(
    st.sampled_from([BAR, b'{"a":1}', b"", b"  ", b" " + BAR, BAR + b"\r", b"[1]", b"x"]),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    lines=jsonl_lines,
    chunk=st.integers(1, 200),
    batch_lines=st.integers(1, 12),
    final_newline=st.booleans(),
)
def test_jsonl_batches_match_a_line_by_line_reading(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    chunk: int,
    batch_lines: int,
    final_newline: bool,
) -> None:
    p = tmp_path_factory.mktemp("cut") / "bars.jsonl"
    p.write_bytes(b"\n".join(lines) + (b"\n" if final_newline and lines else b""))
    want = [
        (line.removesuffix(b"\r"), i)
        for i, line in enumerate(p.read_bytes().split(b"\n"), 1)
        if line.strip(b" \t\r")
    ]
    old = sources._CHUNK_BYTES
    sources._CHUNK_BYTES = chunk
    try:
        batches = list(read_batches([str(p)], batch_lines))
    finally:
        sources._CHUNK_BYTES = old
    got = [pair for fb in batches for pair in zip(fb.messages(), _lines(fb), strict=True)]
    assert got == want
    assert all(0 < fb.n_messages <= batch_lines for fb in batches)
    for fb in batches:  # a blob exactly when every line of the batch is a clean object
        if isinstance(fb.payload, bytes):
            assert all(v.startswith(b"{") and not v.endswith(b"\r") for v in fb.messages())


def test_clean_jsonl_travels_as_blobs(tmp_path: Path) -> None:
    p = tmp_path / "bars.jsonl"
    p.write_bytes(b"".join(BAR + b"\n" for _ in range(10)))
    batches = list(read_batches([str(p)], batch_lines=4))
    assert [isinstance(fb.payload, bytes) for fb in batches] == [True, True, True]
    assert [(_lines(fb)[0], fb.n_messages) for fb in batches] == [(1, 4), (5, 4), (9, 2)]
    assert batches[0].payload == b"\n".join([BAR] * 4)
