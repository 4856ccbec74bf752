"""Decoding, validation reasons (SPEC 1), result encoding (SPEC 6), dead letters."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.calendar import date_to_day
from service.decode.batch import decode_batch
from service.decode.exact import _parse_joined
from service.decode.types import DecodedBatch, Reject
from service.encode import (
    dead_letter_headers,
    encode_pattern_part,
    encode_result,
    errors_file_record,
)
from service.engine.types import ENGINE_VERSION, Pattern, PatternResult, Position, Signal

GOOD: dict[str, Any] = {
    "symbol": "600519.SH",
    "date": "2021-02-03",
    "open": 1.0,
    "high": 1.1,
    "low": 0.9,
    "close": 1.05,
    "volume": 12345.0,
}


def bar(**changes: Any) -> dict[str, Any]:
    out = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def msg(obj: Any) -> bytes:
    """JSON text; the stdlib writes integers beyond 64 bits, which orjson refuses."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def reasons(values: list[bytes]) -> list[str]:
    return [r.reason for r in decode_batch(values).rejects]


def one_reason(**changes: Any) -> str | None:
    """Reason for a single bar, checked both alone and inside a batch of good bars
    (the batched fast path and the per-message path must agree)."""
    alone = decode_batch([msg(bar(**changes))])
    mixed = decode_batch([msg(GOOD), msg(bar(**changes)), msg(GOOD)])
    assert [(r.index, r.reason) for r in mixed.rejects] == [(1, r.reason) for r in alone.rejects]
    assert len(mixed.symbols) == 2 + len(alone.symbols)
    return alone.rejects[0].reason if alone.rejects else None


# --- happy path ---


def test_valid_bar_columns() -> None:
    out = decode_batch([msg(GOOD), msg(bar(symbol="000001.SZ", date="1901-01-01", close=7))])
    assert out.symbols == ["600519.SH", "000001.SZ"]
    assert out.days.dtype == np.int32 and out.closes.dtype == np.float64
    assert out.days.tolist() == [date_to_day(dt.date(2021, 2, 3)), date_to_day(dt.date(1901, 1, 1))]
    assert out.closes.tolist() == [1.05, 7.0]
    assert out.message_index.dtype == np.int32 and out.message_index.tolist() == [0, 1]
    assert out.rejects == []


def test_empty_batch() -> None:
    out = decode_batch([])
    assert out.symbols == [] and len(out.days) == 0 and len(out.message_index) == 0


def test_minimal_bar_and_unknown_fields() -> None:
    out = decode_batch([msg({"symbol": "A", "date": "2099-12-31", "close": 1, "x": [1, {}]})])
    assert out.symbols == ["A"] and out.rejects == []


# --- aliases and nulls ---


def test_aliases() -> None:
    original = {
        "stock_code": "A.B",
        "trade_date": "2020-01-02",
        "close_price": 3.0,
        "open_price": 2.0,
        "high_price": 4.0,
        "low_price": 1.0,
    }
    out = decode_batch([msg(original)])
    assert out.symbols == ["A.B"] and out.closes.tolist() == [3.0]
    assert reasons([msg({**original, "low_price": 5.0})]) == ["invalid_field:low"]


def test_canonical_wins_over_alias_and_null_falls_back() -> None:
    out = decode_batch([msg(bar(close=2.0, close_price=-5)), msg(bar(close=None, close_price=3))])
    assert out.closes.tolist() == [2.0, 3.0] and out.rejects == []
    assert one_reason(symbol=None, stock_code="ALIAS") is None
    assert one_reason(low=None, low_price=2.0) == "invalid_field:low"  # 2.0 > high 1.1


def test_null_counts_as_absent() -> None:
    assert one_reason(close=None) == "missing_field:close"
    assert one_reason(open=None, high=None, low=None, volume=None) is None


# --- every reason ---


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"symbol": ...}, "missing_field:symbol"),
        ({"date": ...}, "missing_field:date"),
        ({"close": ...}, "missing_field:close"),
        ({"symbol": ""}, "invalid_field:symbol"),
        ({"symbol": "A" * 33}, "invalid_field:symbol"),
        ({"symbol": "A" * 32}, None),
        ({"symbol": "600519 SH"}, "invalid_field:symbol"),
        ({"symbol": "A\n"}, "invalid_field:symbol"),
        ({"symbol": "é"}, "invalid_field:symbol"),
        ({"symbol": 600519}, "invalid_field:symbol"),
        ({"symbol": ["A"]}, "invalid_field:symbol"),
        ({"date": "2021-02-30"}, "invalid_field:date"),
        ({"date": "2021-2-3"}, "invalid_field:date"),
        ({"date": "20210203"}, "invalid_field:date"),
        ({"date": "2021-02-03T00:00:00"}, "invalid_field:date"),
        ({"date": "2021-02-03\n"}, "invalid_field:date"),
        ({"date": "２０２１-02-03"}, "invalid_field:date"),
        ({"date": 20210203}, "invalid_field:date"),
        ({"date": {"y": 2021}}, "invalid_field:date"),
        ({"date": "1900-12-31"}, "date_out_of_range"),
        ({"date": "2100-01-01"}, "date_out_of_range"),
        ({"date": "0001-01-01"}, "date_out_of_range"),
        ({"date": "1901-01-01"}, None),
        ({"date": "2099-12-31"}, None),
        ({"close": 0}, "invalid_field:close"),
        ({"close": -1.5}, "invalid_field:close"),
        ({"close": "1.5"}, "invalid_field:close"),
        ({"close": "NaN"}, "invalid_field:close"),
        ({"close": True}, "invalid_field:close"),
        ({"close": False}, "invalid_field:close"),
        ({"close": [1.0]}, "invalid_field:close"),
        ({"close": 5e-324}, None),
        ({"close": 1e308}, None),
        ({"close": 10**30}, None),
        ({"close": 2**64 - 1}, None),
        ({"open": 0.0}, "invalid_field:open"),
        ({"open": True}, "invalid_field:open"),
        ({"high": -1}, "invalid_field:high"),
        ({"high": "x"}, "invalid_field:high"),
        ({"low": 0}, "invalid_field:low"),
        ({"low": 2.0}, "invalid_field:low"),  # low > high
        ({"low": 1.1}, None),  # low == high
        ({"high": ..., "low": 50.0}, None),  # only one given: no order rule
        ({"volume": -1}, "invalid_field:volume"),
        ({"volume": True}, "invalid_field:volume"),
        ({"volume": "12"}, "invalid_field:volume"),
        ({"volume": 0}, None),
        ({"volume": 1.0}, None),
    ],
)
def test_reason(changes: dict[str, Any], reason: str | None) -> None:
    assert one_reason(**changes) == reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"symbol": ..., "date": ..., "close": ...}, "missing_field:symbol"),
        ({"date": ..., "close": ..., "symbol": "bad symbol"}, "missing_field:date"),
        ({"close": ..., "symbol": "bad symbol", "date": "x"}, "missing_field:close"),
        ({"symbol": "bad symbol", "date": "x", "close": -1}, "invalid_field:symbol"),
        ({"date": "2021-13-01", "close": -1, "open": -1}, "invalid_field:date"),
        ({"date": "1800-01-01", "close": -1}, "date_out_of_range"),
        ({"close": -1, "open": -1, "volume": -1}, "invalid_field:close"),
        ({"open": -1, "high": -1, "low": -1}, "invalid_field:open"),
        ({"high": -1, "low": -1}, "invalid_field:high"),
        ({"low": -1, "volume": -1}, "invalid_field:low"),
        ({"low": 5.0, "volume": -1}, "invalid_field:low"),
        ({"low": 0.5, "high": 0.6, "volume": -1}, "invalid_field:volume"),
    ],
)
def test_first_broken_rule_names_the_reason(changes: dict[str, Any], reason: str) -> None:
    assert one_reason(**changes) == reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"   ", "invalid_json"),
        (b'{"symbol":"A",', "invalid_json"),
        (b'{"symbol":"\xff\xfe","date":"2021-02-03","close":1}', "invalid_json"),
        (b'{"symbol":"A","date":"2021-02-03","close":1e400}', "invalid_json"),
        (b'{"symbol":"A","date":"2021-02-03","close":NaN}', "invalid_json"),
        (b"5", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"true", "not_an_object"),
    ],
)
def test_message_level_reasons(value: bytes, reason: str) -> None:
    out = decode_batch([msg(GOOD), value, msg(GOOD)])
    assert out.rejects == [Reject(1, None, reason, value)]
    assert out.message_index.tolist() == [0, 2]


def test_too_large_message_is_rejected_whole() -> None:
    big = msg(bar(pad="x" * 200))
    out = decode_batch([msg(GOOD), big, msg(GOOD)], max_message_bytes=len(big) - 1)
    assert out.rejects == [Reject(1, None, "too_large", big)]
    assert len(decode_batch([big], max_message_bytes=len(big)).symbols) == 1


def test_array_length_limit() -> None:
    ok = msg([GOOD] * 10_000)
    assert len(decode_batch([ok], max_message_bytes=10**9).symbols) == 10_000
    too_long = msg([GOOD] * 10_001)
    out = decode_batch([too_long, msg(GOOD)], max_message_bytes=10**9)
    assert out.rejects == [Reject(0, None, "too_large", too_long)]
    assert out.message_index.tolist() == [1]


def test_array_with_mixed_elements() -> None:
    elements: list[Any] = [
        bar(symbol="A"),
        bar(close=-1),
        5,
        [GOOD],
        bar(symbol="B"),
        None,
        bar(date="2021-02-29"),
    ]
    out = decode_batch([msg(bar(symbol="Z")), msg(elements), msg([]), msg(bar(symbol="Y"))])
    assert out.symbols == ["Z", "A", "B", "Y"]
    assert out.message_index.tolist() == [0, 1, 1, 3]
    assert [(r.index, r.array_index, r.reason) for r in out.rejects] == [
        (1, 1, "invalid_field:close"),
        (1, 2, "not_an_object"),
        (1, 3, "not_an_object"),
        (1, 5, "not_an_object"),
        (1, 6, "invalid_field:date"),
    ]
    assert out.rejects[0].raw == msg(bar(close=-1))
    assert out.rejects[1].raw == b"5" and out.rejects[2].raw == msg([GOOD])


def test_duplicate_bars_are_all_kept_in_order() -> None:
    out = decode_batch([msg(bar(close=1.0)), msg(bar(close=2.0))])
    assert out.closes.tolist() == [1.0, 2.0]


def test_memoryview_and_bytearray_values() -> None:
    raw = msg(GOOD)
    out = decode_batch([memoryview(raw), bytearray(raw), raw])  # type: ignore[list-item]
    assert len(out.symbols) == 3
    bad = decode_batch([memoryview(b"nope")])  # type: ignore[list-item]
    assert bad.rejects[0].raw == b"nope" and type(bad.rejects[0].raw) is bytes


def test_bools_among_floats_in_the_fast_path() -> None:
    rows = [bar(volume=1.0), bar(volume=True), bar(open=False), bar(close=1), bar(high=1.0)]
    out = decode_batch([msg(r) for r in rows])
    assert [(r.index, r.reason) for r in out.rejects] == [
        (1, "invalid_field:volume"),
        (2, "invalid_field:open"),
    ]


def test_partly_missing_optional_columns_and_mixed_key_orders() -> None:
    rows = [
        {"close": 2.0, "date": "2021-01-04", "symbol": "A"},
        bar(open=...),
        {**bar(), "open": None},
        {"symbol": "B", "date": "2021-01-05", "close": 3, "volume": None, "extra": "x,{"},
        bar(high=..., low=0.5),
    ]
    out = decode_batch([msg(r) for r in rows])
    assert out.rejects == [] and out.symbols == ["A", "600519.SH", "600519.SH", "B", "600519.SH"]


# --- the single-parse fast path must never change an answer ---


@pytest.mark.parametrize(
    "values",
    [
        # merged through a nested array, compensated by a split message
        [
            b'{"symbol":"A","date":"2021-01-04","close":1,"j":[{}',
            b"{}]}",
            b'{"symbol":"B",'
            b'"date":"2021-01-04","close":1},{"symbol":"C","date":"2021-01-04","close":1}',
        ],
        # merged through a string, compensated by a split message
        [
            b'{"s":"}',
            b'{","symbol":"A","date":"2021-01-04","close":1}',
            b'{"symbol":"B","date":"2021-01-04","close":1},{"symbol":"C","date":"2021-01-04",'
            b'"close":1}',
        ],
        # an array message split across two messages
        [
            b'[{"symbol":"A","date":"2021-01-04","close":1}',
            b'{"symbol":"B","date":"2021-01-04","close":1}]',
            b'{"symbol":"C","date":"2021-01-04","close":1}',
        ],
        # members split across messages
        [b'{"symbol":"A","date":"2021-01-04"', b'"close":1}', b"{},{}"],
    ],
)
def test_adversarial_batches_match_per_message_parsing(values: list[bytes]) -> None:
    assert _same_as_per_message(values)
    assert all(r.reason == "invalid_json" for r in decode_batch(values).rejects)


def _same_as_per_message(values: list[bytes], max_bytes: int = 1_048_576) -> bool:
    assert _as_reference(decode_batch(values, max_bytes)) == _reference(values, max_bytes)
    return True


def _as_reference(out: DecodedBatch) -> tuple[list[Any], list[Any]]:
    """A decoded batch in the reference's shape: (good bars, rejects)."""
    good = list(
        zip(
            out.symbols,
            out.days.tolist(),
            out.closes.tolist(),
            out.message_index.tolist(),
            strict=True,
        )
    )
    return good, [(r.index, r.array_index, r.reason, r.raw) for r in out.rejects]


# --- an independent reference, for the property test ---

ALIAS = {
    "symbol": "stock_code",
    "date": "trade_date",
    "close": "close_price",
    "open": "open_price",
    "high": "high_price",
    "low": "low_price",
}


def _ref_bar(b: dict[str, Any]) -> str | tuple[str, int, float]:
    def get(name: str) -> Any:
        v = b.get(name)
        return b.get(ALIAS[name]) if v is None and name in ALIAS else v

    def num(v: Any, strict: bool) -> bool:
        return (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (v > 0 if strict else v >= 0)
        )

    for name in ("symbol", "date", "close"):
        if get(name) is None:
            return f"missing_field:{name}"
    s, d, c = get("symbol"), get("date"), get("close")
    if not (
        isinstance(s, str)
        and 1 <= len(s) <= 32
        and all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in s)
    ):
        return "invalid_field:symbol"
    try:
        assert isinstance(d, str) and len(d) == 10 and d[4] == d[7] == "-"
        assert all(ch in "0123456789" for ch in d[:4] + d[5:7] + d[8:])
        day = dt.date(int(d[:4]), int(d[5:7]), int(d[8:]))
    except (AssertionError, ValueError):
        return "invalid_field:date"
    if not dt.date(1901, 1, 1) <= day <= dt.date(2099, 12, 31):
        return "date_out_of_range"
    if not num(c, True):
        return "invalid_field:close"
    for name in ("open", "high", "low"):
        if get(name) is not None and not num(get(name), True):
            return f"invalid_field:{name}"
    if get("low") is not None and get("high") is not None and get("low") > get("high"):
        return "invalid_field:low"
    if b.get("volume") is not None and not num(b["volume"], False):
        return "invalid_field:volume"
    return s, date_to_day(day), float(c)


def _reference(values: list[bytes], max_bytes: int) -> tuple[list[Any], list[Any]]:
    good: list[Any] = []
    bad: list[Any] = []

    def one(i: int, j: int | None, obj: Any, raw: bytes) -> None:
        if not isinstance(obj, dict):
            bad.append((i, j, "not_an_object", raw))
            return
        r = _ref_bar(obj)
        if isinstance(r, str):
            bad.append((i, j, r, raw))
        else:
            good.append((*r, i))

    for i, v in enumerate(values):
        if len(v) > max_bytes:
            bad.append((i, None, "too_large", v))
            continue
        try:
            obj = orjson.loads(v)
        except orjson.JSONDecodeError:
            bad.append((i, None, "invalid_json", v))
            continue
        if isinstance(obj, list):
            if len(obj) > 10_000:
                bad.append((i, None, "too_large", v))
                continue
            for j, el in enumerate(obj):
                one(i, j, el, orjson.dumps(el))
        else:
            one(i, None, obj, v)
    return good, bad


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
field_values = {
    "symbol": st.one_of(
        st.sampled_from(["600519.SH", "A", "a-b_c.D", "x" * 33, "", "bad sym"]), scalars
    ),
    "date": st.one_of(
        st.sampled_from(
            [
                "2021-02-03",
                "1901-01-01",
                "2099-12-31",
                "2100-01-01",
                "1900-12-31",
                "2021-02-29",
                "2021-1-1",
            ]
        ),
        scalars,
    ),
    "close": st.one_of(st.floats(0.01, 1e6), scalars),
    "open": st.one_of(st.floats(0.01, 1e6), scalars),
    "high": st.one_of(st.floats(0.01, 1e6), scalars),
    "low": st.one_of(st.floats(0.01, 1e6), scalars),
    "volume": st.one_of(st.floats(0, 1e9), scalars),
}
names = st.sampled_from([*field_values, *ALIAS.values(), "other"])
bars = st.dictionaries(names, st.deferred(lambda: st.one_of(*field_values.values())), max_size=9)
good_bars = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(["A", "B.C"]),
        "date": st.sampled_from(["2021-02-03", "2000-01-01"]),
        "close": st.floats(0.01, 1e6),
    },
    optional={"open": st.floats(0.01, 1e6), "volume": st.floats(0, 1e9)},
)
messages = st.one_of(
    good_bars.map(msg),
    good_bars.map(msg),
    bars.map(msg),
    st.lists(st.one_of(good_bars, bars, scalars), max_size=4).map(msg),
    scalars.map(msg),
    st.binary(max_size=20),
    st.sampled_from([b'{"symbol":"A","date":"2021-02-03","close":1', b"[", b"{},{}", b"\xff"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=12), st.sampled_from([40, 1_048_576]))
def test_every_bar_is_kept_or_rejected_exactly_once(values: list[bytes], max_bytes: int) -> None:
    assert _same_as_per_message(values, max_bytes)


@settings(max_examples=100, deadline=None)
@given(st.lists(good_bars.map(msg), min_size=1, max_size=30))
def test_uniform_good_batches_take_the_single_parse_path(values: list[bytes]) -> None:
    assert _parse_joined(values, 1_048_576) is not None
    assert _same_as_per_message(values)


# --- encoding (SPEC 6) ---


def _pattern_result(ok: bool = True, ratio: float | None = 1.25) -> PatternResult:
    pattern = Pattern(
        pattern_strength=0.1 + 0.2,
        average_return_before=-1.0 / 3.0,
        average_return_after=2.5,
        volatility_before=1.0,
        volatility_after=1.25,
        volatility_ratio=ratio,
        consistency_score=0.75,
        confidence_level=0.123456789012345678,
        peak_day=7,
        trough_day=-3,
    )
    if not ok:
        empty = np.empty(0)
        return PatternResult(
            "A",
            "insufficient_history",
            (2019,),
            None,
            empty.astype(np.int32),
            empty,
            empty.astype(np.int32),
        )
    return PatternResult(
        "600519.SH",
        "ok",
        (2019, 2020, 2021),
        pattern,
        np.array([-2, -1, 1], dtype=np.int32),
        np.array([-3.2, 0.1 + 0.2, 1e-17]),
        np.array([5, 3, 2], dtype=np.int32),
    )


def _encode(part: bytes, signal: Signal | None, input_ref: dict[str, Any] | None) -> bytes:
    return encode_result(
        symbol="600519.SH",
        as_of_day=date_to_day(dt.date(2024, 4, 30)),
        status="ok" if signal else "insufficient_history",
        window_days=60,
        alignment="trading",
        pattern_part=part,
        position=Position(date_to_day(dt.date(2025, 1, 29)), 274, -274, False, "normal_period"),
        signal=signal,
        bars_in_state=np.int64(1234),  # type: ignore[arg-type]
        input_ref=input_ref,
    )


def test_encode_result_ok() -> None:
    part = encode_pattern_part(_pattern_result())
    raw = _encode(
        part,
        Signal("neutral", 0.0, "hold", False),
        {"topic": "stock-bars", "partition": 3, "offset": 81234},
    )
    out = orjson.loads(raw)
    assert list(out) == [
        "symbol",
        "as_of",
        "status",
        "window_days",
        "alignment",
        "years_analyzed",
        "pattern",
        "curve",
        "position",
        "signal",
        "bars_in_state",
        "engine_version",
        "input",
    ]
    assert out["symbol"] == "600519.SH" and out["as_of"] == "2024-04-30"
    assert out["status"] == "ok" and out["window_days"] == 60 and out["alignment"] == "trading"
    assert out["years_analyzed"] == [2019, 2020, 2021]
    assert list(out["pattern"]) == [
        "pattern_strength",
        "average_return_before",
        "average_return_after",
        "volatility_before",
        "volatility_after",
        "volatility_ratio",
        "consistency_score",
        "confidence_level",
        "peak_day",
        "trough_day",
    ]
    assert out["pattern"]["pattern_strength"] == 0.1 + 0.2  # full precision round trip
    assert out["pattern"]["average_return_before"] == -1.0 / 3.0
    assert out["pattern"]["peak_day"] == 7 and out["pattern"]["trough_day"] == -3
    assert out["curve"] == [[-2, -3.2, 5], [-1, 0.1 + 0.2, 3], [1, 1e-17, 2]]
    assert out["position"] == {
        "spring_festival_date": "2025-01-29",
        "days_to_spring_festival": 274,
        "relative_day": -274,
        "in_window": False,
        "phase": "normal_period",
        "window_day": None,  # SPEC 6: null outside every window
    }
    assert out["signal"] == {
        "signal": "neutral",
        "strength": 0.0,
        "action": "hold",
        "volatility_warning": False,
    }
    assert out["bars_in_state"] == 1234 and out["engine_version"] == ENGINE_VERSION
    assert out["input"] == {"topic": "stock-bars", "partition": 3, "offset": 81234}
    assert b" " not in raw.replace(b"600519.SH", b"")  # compact


def test_encode_result_insufficient_and_null_ratio() -> None:
    raw = _encode(encode_pattern_part(_pattern_result(ok=False)), None, None)
    out = orjson.loads(raw)
    assert out["pattern"] is None and out["signal"] is None and out["curve"] == []
    assert out["years_analyzed"] == [2019] and out["input"] is None
    part = encode_pattern_part(_pattern_result(ratio=None))
    assert orjson.loads(b"{" + part + b"}")["pattern"]["volatility_ratio"] is None


def test_encode_pattern_part_is_a_fragment() -> None:
    part = encode_pattern_part(_pattern_result())
    assert part.startswith(b'"years_analyzed":[2019,2020,2021],"pattern":{')
    assert part.endswith(b',"curve":[[-2,-3.2,5],[-1,0.30000000000000004,3],[1,1e-17,2]]')


# --- dead letters ---


def test_errors_file_record() -> None:
    r = Reject(4, 2, "invalid_field:close", b'{"close":"x\xff"}')
    out = orjson.loads(errors_file_record(r, "bars.jsonl", 17))
    assert list(out) == ["reason", "source", "raw"]
    assert out == {
        "reason": "invalid_field:close",
        "source": {"file": "bars.jsonl", "line": 17, "index": 2},
        "raw": '{"close":"x\ufffd"}',
    }
    plain = orjson.loads(errors_file_record(Reject(0, None, "invalid_json", b"x"), "f", 1))
    assert plain["source"]["index"] is None
    assert b"\n" not in errors_file_record(r, "f", 1)


def test_dead_letter_headers() -> None:
    whole = dead_letter_headers(Reject(0, None, "too_large", b"..."), "stock-bars", 3, 81234)
    assert whole == [
        ("sfa.reason", b"too_large"),
        ("sfa.source.topic", b"stock-bars"),
        ("sfa.source.partition", b"3"),
        ("sfa.source.offset", b"81234"),
    ]
    element = dead_letter_headers(Reject(0, 7, "not_an_object", b"5"), "t", 0, 1)
    assert element[-1] == ("sfa.source.index", b"7") and len(element) == 5


def test_decoded_batch_is_plain_data() -> None:
    out = decode_batch([msg(GOOD)])
    assert isinstance(out, DecodedBatch) and isinstance(out.symbols, list)


# --- the caching encoder must write exactly what encode_result writes ---

positions = st.builds(
    Position,
    spring_festival_day=st.integers(
        date_to_day(dt.date(1901, 2, 19)), date_to_day(dt.date(2099, 2, 1))
    ),
    days_to_spring_festival=st.integers(-400, 400),
    relative_day=st.integers(-400, 400),
    in_window=st.booleans(),
    phase=st.sampled_from(["normal_period", "approaching", "festival_day", "recovery"]),
)
signals = st.one_of(
    st.none(),
    st.builds(
        Signal,
        signal=st.sampled_from(["bullish", "bearish", "neutral"]),
        strength=st.floats(0, 1),
        action=st.sampled_from(["buy", "watch", "hold", "sell", "reduce"]),
        volatility_warning=st.booleans(),
    ),
)
input_refs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "topic": st.text(max_size=8),
            "partition": st.integers(0, 99),
            "offset": st.integers(0, 2**62),
        }
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["600519.SH", "A", 'a"b', "\u00e9", "x" * 32]),
            st.integers(date_to_day(dt.date(1901, 1, 1)), date_to_day(dt.date(2099, 12, 31))),
            st.sampled_from(["ok", "insufficient_history"]),
            st.sampled_from([b'"years_analyzed":[],"pattern":null,"curve":[]', b'"x":1']),
            positions,
            signals,
            st.one_of(st.integers(0, 10**6), st.integers(0, 10**6).map(np.int64)),
            input_refs,
        ),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([1, 60, 365]),
    st.sampled_from(["trading", "calendar"]),
)
def test_result_encoder_writes_what_encode_result_writes(
    rows: list[Any], window_days: int, alignment: str
) -> None:
    from service.encode import ResultEncoder

    encoder = ResultEncoder(window_days, alignment)
    for symbol, day, status, part, position, signal, bars_held, ref in rows:
        want = encode_result(
            symbol=symbol,
            as_of_day=day,
            status=status,
            window_days=window_days,
            alignment=alignment,
            pattern_part=part,
            position=position,
            signal=signal,
            bars_in_state=bars_held,
            input_ref=ref,
        )
        got = encoder.encode(symbol, day, status, part, position, signal, bars_held, ref)
        assert got == want
