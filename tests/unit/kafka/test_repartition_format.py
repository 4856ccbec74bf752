"""The repartition record format: every bar comes back exactly as it went in (symbol,
day, close bit for bit, timestamp, read position, read order), a record of the largest
batch fits the broker's default limit, and anything else is refused, never misread."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.calendar import FIRST_BAR_DAY, LAST_BAR_DAY
from service.kafka.repartition import (
    MAGIC,
    MAX_BARS_PER_RECORD,
    ForwardedBars,
    InvalidForward,
    decode_record,
    encode_record,
    is_columnar,
)

symbols = st.text("ABCXYZ019._-", min_size=1, max_size=32)


@st.composite
def bars(draw: st.DrawFn, max_bars: int = 50) -> ForwardedBars:
    uniques = draw(st.lists(symbols, min_size=1, max_size=8, unique=True))
    n = draw(st.integers(0, max_bars))
    ints = st.integers
    return ForwardedBars(
        topic=draw(st.text(min_size=1, max_size=40)),
        uniques=uniques,
        codes=np.array(draw(st.lists(ints(0, len(uniques) - 1), min_size=n, max_size=n)), np.int32),
        days=np.array(
            draw(st.lists(ints(FIRST_BAR_DAY, LAST_BAR_DAY), min_size=n, max_size=n)), np.int32
        ),
        closes=np.array(
            draw(
                st.lists(
                    st.floats(min_value=1e-300, max_value=1e300, allow_nan=False),
                    min_size=n,
                    max_size=n,
                )
            ),
            np.float64,
        ),
        stamps=np.array(draw(st.lists(ints(0, 2**62), min_size=n, max_size=n)), np.int64),
        partitions=np.array(draw(st.lists(ints(0, 2**31 - 1), min_size=n, max_size=n)), np.int32),
        offsets=np.array(draw(st.lists(ints(0, 2**62), min_size=n, max_size=n)), np.int64),
        ordinals=np.array(draw(st.lists(ints(0, 9999), min_size=n, max_size=n)), np.int32),
    )


def _same(a: ForwardedBars, b: ForwardedBars) -> None:
    assert (a.topic, a.uniques) == (b.topic, b.uniques)
    for name in ("codes", "days", "stamps", "partitions", "offsets", "ordinals"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name
    assert a.closes.tobytes() == b.closes.tobytes()  # bit for bit, not approximately


@settings(max_examples=200, deadline=None)
@given(bars())
def test_every_bar_comes_back_exactly(sent: ForwardedBars) -> None:
    record = encode_record(sent)
    assert is_columnar(record)
    _same(decode_record(record), sent)


@settings(max_examples=100, deadline=None)
@given(bars(max_bars=5), st.data())
def test_a_truncated_or_extended_record_is_refused(
    sent: ForwardedBars, data: st.DataObject
) -> None:
    record = encode_record(sent)
    cut = data.draw(st.integers(0, len(record) - 1))
    with pytest.raises(InvalidForward):
        decode_record(record[:cut])
    with pytest.raises(InvalidForward):
        decode_record(record + b"\x00" * data.draw(st.integers(1, 16)))


def _one_bar(**change: object) -> ForwardedBars:
    fields: dict[str, object] = {
        "topic": "bars",
        "uniques": ["A.SH"],
        "codes": np.array([0], np.int32),
        "days": np.array([18000], np.int32),
        "closes": np.array([1.5]),
        "stamps": np.array([1000], np.int64),
        "partitions": np.array([3], np.int32),
        "offsets": np.array([7], np.int64),
        "ordinals": np.array([0], np.int32),
    }
    fields.update(change)
    return ForwardedBars(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"codes": np.array([1], np.int32)},
        {"days": np.array([LAST_BAR_DAY + 1], np.int32)},
        {"closes": np.array([float("nan")])},
        {"closes": np.array([0.0])},
        {"offsets": np.array([-1], np.int64)},
        {"uniques": ["A SH"]},
    ],
    ids=["code", "day", "nan", "zero close", "offset", "symbol"],
)
def test_a_corrupted_record_is_refused_whole(change: dict[str, object]) -> None:
    with pytest.raises(InvalidForward):
        decode_record(encode_record(_one_bar(**change)))


def test_another_version_or_no_magic_is_refused() -> None:
    record = bytearray(encode_record(_one_bar()))
    record[4] = 2
    with pytest.raises(InvalidForward, match="version 2"):
        decode_record(bytes(record))
    with pytest.raises(InvalidForward):
        decode_record(b'{"symbol":"A.SH","date":"2020-01-02","close":1}')
    assert not is_columnar(b'{"symbol":"A.SH"}') and not is_columnar(b"\x00\x00\x00\x00\x01")
    assert MAGIC[0] == 0xFF


def test_the_largest_record_fits_the_brokers_default_message_size() -> None:
    """MAX_BARS_PER_RECORD bars, each of its own 32-character symbol, from a long topic."""
    n = MAX_BARS_PER_RECORD
    longest = ForwardedBars(
        topic="t" * 249,
        uniques=[f"{i:032d}" for i in range(n)],
        codes=np.arange(n, dtype=np.int32),
        days=np.full(n, 18000, np.int32),
        closes=np.ones(n),
        stamps=np.zeros(n, np.int64),
        partitions=np.zeros(n, np.int32),
        offsets=np.zeros(n, np.int64),
        ordinals=np.zeros(n, np.int32),
    )
    assert len(encode_record(longest)) < 1_000_000 // 2
