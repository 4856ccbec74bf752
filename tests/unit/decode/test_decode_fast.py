"""The columnar fast path (service.decode.fast) against the independent reference.

The fast path may only accept what the exact path accepts, with the same values, and
must hand everything else back message by message. These tests feed it blocks where
every message is an object (so it really runs), with the broken messages it has to
recover from placed anywhere in the block.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import service.decode.batch as decode_batch_module
from service.decode.batch import decode_batch, decode_lines
from service.decode.fast import decode_block
from tests.unit.decode.test_decode import _as_reference, _reference, bars, good_bars, msg

GOOD = b'{"symbol":"A","date":"2021-02-03","close":1.5}'

# Objects that start with "{" but break something only the exact path may decide.
tricky_objects = st.sampled_from(
    [
        b'{"symbol":"A","date":"2021-02-03","close":1',  # truncated
        b'{"symbol":"A","date":"2021-02-03","close":1}}',  # trailing garbage
        b'{"symbol":"A","date":"2021-02-03","close":1} {"x":1}',  # two objects
        b'{"symbol":"A","date":"2021-02-03","close":1},{"symbol":"B"}',  # two, comma
        b'{"symbol":"\xff","date":"2021-02-03","close":1}',  # not UTF-8
        b'{"symbol":"\\ud800","date":"2021-02-03","close":1}',  # lone surrogate
        b'{"symbol":"A","date":"2021-02-03","close":true}',  # bool
        b'{"symbol":"A","date":"2021-02-03","close":1e400}',  # beyond a double
        b'{"symbol":"A","date":"2021-02-03","close":1e-400}',  # underflows to 0
        b'{"symbol":"A","date":"2021-02-03","close":-0.0}',
        b'{"symbol":"A","date":"2021-02-03","close":NaN}',
        b'{"symbol":"A","date":"2021-02-03","close":123456789012345678901234567890}',
        b'{"symbol":"A","date":"2021-02-03","close":9007199254740993}',  # 2**53 + 1
        b'{"symbol":"A","date":"2021-02-03","close":2,"close":"x"}',  # duplicate key
        b'{"symbol":"A","date":"2021-02-03","close":"x","close":2}',
        b'{"symbol":"A","date":"2021-02-03","close":1,"open":null,"volume":null}',
        b'{"symbol":"A","date":"2021-02-03","close":1,"low":2,"high":1}',
        b'{"symbol":"A","date":"2021-02-03","close":1,"open_price":0}',  # alias unused
        b'{"symbol":"A","date":"2021-02-03","close":1,"open":null,"open_price":0}',
        b'{"stock_code":"A","trade_date":"2021-02-03","close_price":1}',
        b'{"symbol":"A\\u002eB","date":"2021-02-03","close":1}',  # escaped "."
        b'{"symbol":"A","date":"2021-02-03","close":1,"volume":-1}',
        b'{"symbol":"A","date":"2021-02-30","close":1}',
        b'{"symbol":"A","date":"2100-01-01","close":1}',
        b'{"symbol":"A","date":20210203,"close":1}',
        b'{"symbol":"bad sym","date":"2021-02-03","close":1}',
        b'{"symbol":"A","date":"2021-02-03","close":1,"extra":{"nested":{"x":null}}}',
        b'{"symbol":"A","date":"2021-02-03","close":1,"note":"a\\nb"}',
        b'{"s":"}',
        b'{"symbol":"A","date":"2021-02-03","close":1,"x":',  # completed by the next line?
        b'{"close":2}}',
        b"{}",
        b"{",
    ]
)
object_messages = st.one_of(good_bars.map(msg), good_bars.map(msg), bars.map(msg), tricky_objects)


@settings(max_examples=400, deadline=None)
@given(st.lists(object_messages, min_size=1, max_size=25))
def test_blocks_decode_exactly_like_each_message_alone(values: list[bytes]) -> None:
    want = _reference(values, 1_048_576)
    assert _as_reference(decode_batch(values)) == want
    if all(b"\n" not in v for v in values):
        assert _as_reference(decode_lines(b"\n".join(values))) == want


@settings(max_examples=100, deadline=None)
@given(st.lists(good_bars.map(msg), min_size=1, max_size=40))
def test_good_blocks_never_touch_the_exact_path(values: list[bytes]) -> None:
    fast = decode_block(b"\n".join(values), 1_048_576, expect=len(values))
    assert fast is not None and fast.keep is None and fast.refer == []


@pytest.mark.parametrize("where", [0, 1, 500, 998, 999])
@pytest.mark.parametrize(
    "bad",
    [
        b'{"symbol":"A","date":"2021-02-03","close":1',
        b'{"symbol":"\xff","date":"2021-02-03","close":1}',
        b'{"symbol":"A","date":"2021-02-03","close":false}',
    ],
)
def test_one_broken_message_costs_only_itself(
    where: int, bad: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [GOOD] * 1000
    values[where] = bad
    exact_calls: list[int] = []
    real = decode_batch_module.decode_values

    def counting(vs: Any, limit: int) -> Any:
        exact_calls.append(len(vs))
        return real(vs, limit)

    monkeypatch.setattr(decode_batch_module, "decode_values", counting)
    out = decode_lines(b"\n".join(values))
    assert exact_calls == [1]  # the broken message alone went the exact path
    assert len(out) == 999 and [r.index for r in out.rejects] == [where]
    assert out.message_index.tolist() == [i for i in range(1000) if i != where]


def test_no_row_is_completed_by_the_line_after_it() -> None:
    """Read as a stream of values, these three broken lines would make three valid
    ones (the first completed by the second, two on the third): as many values as
    lines, each on the wrong row. A line that does not end with `}` rules the
    stream reading out."""
    lines = [
        b'{"symbol":"A","date":"2021-02-03","close":1,"x":',
        b'{"close":2}}',
        b'{"symbol":"B","date":"2021-02-03","close":1}{"symbol":"C","date":"2021-02-03","close":1}',
    ]
    out = decode_lines(b"\n".join(lines))
    assert _as_reference(out) == _reference(lines, 1_048_576)
    assert len(out) == 0 and [r.index for r in out.rejects] == [0, 1, 2]


def test_preconditions_send_the_block_to_the_exact_path() -> None:
    assert decode_block(b"", 100) is None
    assert decode_block(b" " + GOOD, 100) is None  # not starting with "{"
    assert decode_block(GOOD + b"\n", 100) is None  # an empty last message
    assert decode_block(GOOD + b"\n\n" + GOOD, 100) is None  # an empty message
    assert decode_block(b'{"a":[1]}', 100) is None  # a "[" anywhere
    assert decode_block(GOOD + b"\n" + GOOD, len(GOOD) - 1) is None  # too large
    assert decode_block(GOOD + b"\n" + GOOD, 100, expect=1) is None  # a newline inside
    assert decode_block(GOOD + b"\n" + GOOD, len(GOOD), expect=2) is not None


def test_symbols_come_factorized_in_order_of_first_appearance() -> None:
    values = [
        msg({"symbol": s, "date": "2021-02-03", "close": 1.0}) for s in ["B", "A", "B", "C", "A"]
    ]
    out = decode_lines(b"\n".join(values))
    assert out.uniques == ["B", "A", "C"]
    assert out.codes.dtype == np.int32 and out.codes.tolist() == [0, 1, 0, 2, 1]
    assert out.symbols == ["B", "A", "B", "C", "A"]


def test_a_block_refused_throughout_goes_exact_at_once() -> None:
    """A producer that always sends a wrong type would cost a re-parse per message."""
    bad = b'{"symbol":"A","date":"2021-02-03","close":1.5,"volume":"12"}'
    values = [bad, GOOD] * 500
    assert decode_block(b"\n".join(values), 1_048_576) is None
    out = decode_lines(b"\n".join(values))
    assert len(out) == 500 and {r.reason for r in out.rejects} == {"invalid_field:volume"}
