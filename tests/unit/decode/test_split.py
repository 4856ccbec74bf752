"""A big batch decoded in slices (helpers plus the caller) is the batch decoded whole."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decode import pool
from service.decode.batch import decode_batch
from service.decode.pool import Decoder, split_points
from service.decode.types import DecodedBatch, concat
from service.decode.wire import decode_wire_batch
from tests.unit.decode.test_decode_wire import ARRAY, SCHEMAS, as_avro, wire

SYMBOLS = ["AAA.SH", "BBB.SZ", "CCC.SH", "DDD.SZ"]


def _bar(symbol: str, day: int, close: float) -> dict[str, Any]:
    return {"symbol": symbol, "date": f"2021-02-{day:02d}", "close": close}


bars = st.builds(
    _bar, st.sampled_from(SYMBOLS), st.integers(1, 28), st.floats(0.5, 99.0, allow_nan=False)
)
bad = st.sampled_from(
    [b"{not json", b"[]", b'{"symbol": "AAA.SH"}', b'{"symbol": "", "date": "2021-02-01"}', b""]
)
message = st.one_of(
    bars.map(orjson.dumps),
    st.lists(st.one_of(bars, st.just({"symbol": 5})), min_size=1, max_size=6).map(orjson.dumps),
    bad,
)


def as_tuple(d: DecodedBatch) -> tuple[Any, ...]:
    return (
        d.symbols,
        d.uniques,
        d.days.tolist(),
        d.closes.tolist(),
        d.message_index.tolist(),
        [(r.index, r.array_index, r.reason, r.raw) for r in d.rejects],
    )


@given(st.lists(message, max_size=40), st.data())
@settings(max_examples=150, deadline=None)
def test_slices_decoded_apart_and_concatenated_equal_the_whole(
    values: list[bytes], data: st.DataObject
) -> None:
    cuts = data.draw(st.sets(st.integers(1, max(len(values) - 1, 1)), max_size=4))
    starts = sorted({0, *(c for c in cuts if c < len(values))})
    ends = [*starts[1:], len(values)]
    parts = [(a, decode_batch(values[a:b])) for a, b in zip(starts, ends, strict=True)]
    whole = concat(parts)
    assert as_tuple(whole) == as_tuple(decode_batch(values))
    assert whole.codes.dtype == np.int32 and whole.message_index.dtype == np.int32


def test_concat_keeps_per_bar_stamps_only_when_every_part_has_them() -> None:
    one = decode_batch([orjson.dumps(_bar("AAA.SH", 1, 1.0))])
    two = decode_batch([orjson.dumps(_bar("BBB.SZ", 2, 2.0))])
    assert concat([(0, one), (1, two)]).stamps is None
    one.stamps, two.stamps = np.array([5], np.int64), np.array([7], np.int64)
    assert concat([(0, one), (1, two)]).stamps.tolist() == [5, 7]  # type: ignore[union-attr]


@given(st.lists(st.integers(0, 500), max_size=60), st.integers(1, 5), st.integers(0, 4000))
def test_split_points_cover_the_batch_in_at_most_n_ordered_slices(
    sizes: list[int], n: int, min_bytes: int
) -> None:
    values = [b"x" * s for s in sizes]
    starts = split_points(values, n, min_bytes)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert len(starts) <= max(n, 1)
    assert all(0 <= s < max(len(values), 1) for s in starts)
    if sum(sizes) < min_bytes or n < 2:
        assert starts == [0]


def test_split_points_balance_bytes() -> None:
    values = [b"x" * 100] * 1000
    assert split_points(values, 2, 1) == [0, 500]
    assert split_points(values, 4, 1) == [0, 250, 500, 750]
    assert split_points(values, 2, 100_001) == [0]


def test_a_big_batch_is_decoded_by_the_helper_and_the_caller_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real helper process; the threshold lowered so that a small batch splits."""
    values = [orjson.dumps([_bar(s, 1 + i % 28, 1.0 + i) for s in SYMBOLS]) for i in range(400)] + [
        b"{broken"
    ]
    monkeypatch.setattr(pool, "SPLIT_BYTES", 1024)
    assert len(split_points(values, 2, pool.SPLIT_BYTES)) == 2
    decoder = Decoder(1_048_576, processes=1)
    try:
        got = asyncio.run(decoder.decode(values))
    finally:
        decoder.close()
    assert as_tuple(got) == as_tuple(decode_batch(values))
    assert got.rejects[-1].index == 400


class _Known:
    """The registry's answer, fixed: the lookup the service makes before a helper runs."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas

    async def resolve(self, ids: Any) -> dict[int, Any]:
        return {i: self.schemas.get(i) for i in ids}


def test_a_big_wire_format_batch_is_split_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Avro arrays, a JSON bar and a message naming an unknown schema, in a real helper
    and this process: the result is the batch decoded whole."""
    values = [
        wire(7, ARRAY, [as_avro(_bar(s, 1 + i % 28, 1.0 + i)) for s in SYMBOLS]) for i in range(300)
    ]
    values[150] = orjson.dumps(_bar("AAA.SH", 3, 9.0))
    values[200] = b"\x00\x00\x00\x03\xe7" + b"\x02"  # schema id 999: unknown to the registry
    monkeypatch.setattr(pool, "SPLIT_BYTES", 1024)
    assert len(split_points(values, 2, pool.SPLIT_BYTES)) == 2
    here: list[int] = []  # slices decoded in this process, beside the helper
    to_thread = asyncio.to_thread

    def recording(fn: Any, values: Any, *args: Any) -> Any:
        here.append(len(values))
        return to_thread(fn, values, *args)

    monkeypatch.setattr(asyncio, "to_thread", recording)
    decoder = Decoder(1_048_576, processes=1, input_format="auto", schemas=_Known(SCHEMAS))
    try:
        got = asyncio.run(decoder.decode(values))
    finally:
        decoder.close()
    want = decode_wire_batch(values, {7: SCHEMAS[7], 999: None}, "auto")
    assert as_tuple(got) == as_tuple(want)
    assert [r.index for r in got.rejects] == [200] and len(got.days) == 300 * 4 - 8 + 1
    assert len(here) == 1 and 0 < here[0] < len(values)
