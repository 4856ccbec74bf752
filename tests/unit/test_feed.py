"""`sfa produce`'s shapes (service.feed): what each record holds and where it goes."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given
from hypothesis import strategies as st

from service.feed import SNAPSHOT_MAX_BARS, keyed_records, snapshot_records, stamps
from service.ownership import owner


def _msgs(*values: object) -> list[tuple[bytes, str, int]]:
    return [
        (v if isinstance(v, bytes) else orjson.dumps(v), "f.jsonl", i + 1)
        for i, v in enumerate(values)
    ]


def _bar(symbol: str, date: str, close: float = 1.0) -> dict[str, object]:
    return {"symbol": symbol, "date": date, "close": close}


def test_keyed_puts_each_symbol_on_its_owner_and_splits_mixed_arrays() -> None:
    mixed = [_bar("A.SH", "2024-01-02"), _bar("B.SZ", "2024-01-02"), _bar("A.SH", "2024-01-03")]
    records = list(keyed_records(_msgs(_bar("C.SH", "2024-01-02"), mixed, b"{oops"), 8, "murmur2"))
    assert [(r.key, r.partition, r.line) for r in records] == [
        (b"C.SH", owner("C.SH", 8), 1),
        (b"A.SH", owner("A.SH", 8), 2),
        (b"B.SZ", owner("B.SZ", 8), 2),
        (None, None, 3),
    ]
    assert orjson.loads(records[1].value) == [mixed[0], mixed[2]]  # order kept
    assert records[3].value == b"{oops"  # a bad record goes on exactly as read


def test_a_single_symbol_array_is_sent_as_read_and_a_bar_without_symbol_unkeyed() -> None:
    arr = orjson.dumps([_bar("A.SH", "2024-01-02"), _bar("A.SH", "2024-01-03")])
    no_symbol = {"date": "2024-01-02", "close": 1.0}
    records = list(keyed_records(_msgs(arr, no_symbol, [no_symbol]), 3, "crc32"))
    assert records[0].value == arr and records[0].partition == owner("A.SH", 3, "crc32")
    assert [(r.key, r.partition) for r in records[1:]] == [(None, None), (None, None)]


def test_unkeyed_sends_every_line_as_read() -> None:
    msgs = _msgs(_bar("A.SH", "2024-01-02"), [_bar("B", "2024-01-02")], b"x")
    records = list(keyed_records(msgs, 4, "murmur2", keyed=False))
    assert [(r.key, r.partition, r.value) for r in records] == [(None, None, m[0]) for m in msgs]


def test_snapshot_is_one_array_per_date_in_date_order_with_line_order_inside() -> None:
    msgs = _msgs(
        _bar("A", "2024-01-03"),
        [_bar("A", "2024-01-02", 1.0), _bar("B", "2024-01-02")],
        _bar("A", "2024-01-02", 2.0),  # a correction, later in the file
        b"not json",
        {"symbol": "A"},  # no date
    )
    arrays, leftovers = snapshot_records(msgs, None)
    assert [orjson.loads(r.value) for r in arrays] == [
        [_bar("A", "2024-01-02", 1.0), _bar("B", "2024-01-02"), _bar("A", "2024-01-02", 2.0)],
        [_bar("A", "2024-01-03")],
    ]
    assert all(r.key is None and r.partition is None for r in arrays)
    assert [(r.value, r.line) for r in leftovers] == [(b"not json", 4), (b'{"symbol":"A"}', 5)]


def test_snapshot_arrays_respect_the_bar_and_byte_limits() -> None:
    msgs = _msgs(*(_bar(f"S{i}", "2024-01-02") for i in range(SNAPSHOT_MAX_BARS + 5)))
    arrays, _ = snapshot_records(msgs, None)
    assert [len(orjson.loads(r.value)) for r in arrays] == [SNAPSHOT_MAX_BARS, 5]
    small, _ = snapshot_records(msgs[:400], 4096)
    assert all(len(r.value) <= 4096 - 1024 for r in small)
    assert sum(len(orjson.loads(r.value)) for r in small) == 400


@given(st.integers(0, 10_000), st.integers(10**12, 2 * 10**12))
def test_stamps_increase_strictly_and_never_reach_the_start(count: int, start: int) -> None:
    ts = list(stamps(count, start))
    assert len(ts) == count
    assert all(b > a for a, b in itertools.pairwise(ts))
    assert not ts or ts[-1] < start
