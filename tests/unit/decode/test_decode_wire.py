"""Wire-format decoding (service.decode.wire) held to the JSON path: the same bars sent
as Avro or as JSON give the same valid bars and the same reasons at the same places."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decode import decode_batch
from service.decode.avro import decode_avro
from service.decode.avrocols import decode_flat, flat_plan
from service.decode.proto import message_class
from service.decode.types import DecodedBatch
from service.decode.wire import WireSchema, decode_wire_batch, wire_ids
from service.wireformat import BAR_JSON_SCHEMA_TEXT, BAR_PROTO_TEXT

_OPT = ["null", "double"]
BAR: dict[str, Any] = {
    "type": "record",
    "name": "Bar",
    "fields": [
        {"name": "symbol", "type": "string"},
        {"name": "date", "type": "string"},
        {"name": "close", "type": "double"},
        {"name": "open", "type": _OPT, "default": None},
        {"name": "high", "type": _OPT, "default": None},
        {"name": "low", "type": _OPT, "default": None},
        {"name": "volume", "type": _OPT, "default": None},
    ],
}
ARRAY = {"type": "array", "items": BAR}
HOLDER = {
    "type": "record",
    "name": "Snapshot",
    "fields": [{"name": "bars", "type": ARRAY}, {"name": "source", "type": "string"}],
}
# An upstream schema using SPEC 1's aliases, with a field sfa does not know.
ALIASED = {
    "type": "record",
    "name": "Quote",
    "fields": [
        {"name": "stock_code", "type": "string"},
        {"name": "trade_date", "type": "string"},
        {"name": "close_price", "type": "float"},
        {"name": "venue", "type": "string"},
    ],
}
# Protobuf: the bar sfa registers, and a holder of repeated bars (message index 1).
PROTO = BAR_PROTO_TEXT + "message Bars { repeated Bar bars = 1; }\n"
# JSON Schema: anything JSON (SPEC 1 decides), and a strict one a payload can break.
LOOSE = json.dumps({"type": ["object", "array"]})
SCHEMAS = {
    1: WireSchema(1, "AVRO", json.dumps(BAR)),
    7: WireSchema(7, "AVRO", json.dumps(ARRAY)),
    12: WireSchema(12, "AVRO", json.dumps(HOLDER)),
    30: WireSchema(30, "AVRO", json.dumps(ALIASED)),
    40: WireSchema(40, "PROTOBUF", PROTO),
    50: WireSchema(50, "JSON", LOOSE),
    51: WireSchema(51, "JSON", BAR_JSON_SCHEMA_TEXT),
}


def proto(message: Any) -> bytes:
    """Bar (index 0) or Bars (index 1) under id 40; absent fields left unset."""
    bar_cls = message_class(PROTO, (0,))

    def one(bar: dict[str, Any]) -> Any:
        return bar_cls(**{k: v for k, v in bar.items() if v is not None})

    if isinstance(message, list):
        body = message_class(PROTO, (1,))(**{"bars": [one(b) for b in message]}).SerializeToString()
        return b"\x00" + struct.pack(">I", 40) + b"\x02\x02" + body  # indexes [1]
    return b"\x00" + struct.pack(">I", 40) + b"\x00" + one(message).SerializeToString()


def wire(schema_id: int, schema: dict[str, Any], value: Any) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), value)
    return out.getvalue()


def as_avro(bar: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: bar.get(f["name"]) for f in BAR["fields"]}


def comparable(d: DecodedBatch) -> tuple[Any, ...]:
    return (
        d.symbols,
        d.days.tolist(),
        d.closes.tolist(),
        d.message_index.tolist(),
        [(r.index, r.array_index, r.reason) for r in d.rejects],
    )


_symbols = st.sampled_from(["600519.SH", "AAPL", "BAD SYM", "", "x" * 33, "000001.SZ"])
_dates = st.sampled_from(["2020-01-02", "2021-02-30", "1899-12-31", "2024-02-10", "20-1-1"])
_prices = st.sampled_from([1.0, 12.5, 0.0, -3.0, float("inf"), 99.9])
_bars = st.fixed_dictionaries(
    {"symbol": _symbols, "date": _dates, "close": _prices},
    optional={"open": _prices, "high": _prices, "low": _prices, "volume": _prices},
)


# A wider upstream schema: fields sfa ignores (of every primitive type), a nullable
# symbol, prices whose null branch comes second. Flat, so the columnar path takes it.
WIDE: dict[str, Any] = {
    "type": "record",
    "name": "Tick",
    "fields": [
        {"name": "venue", "type": "string"},
        {"name": "seq", "type": "long"},
        {"name": "flag", "type": "boolean"},
        {"name": "symbol", "type": ["null", "string"]},
        {"name": "date", "type": "string"},
        {"name": "px", "type": ["null", "float"]},
        {"name": "close", "type": "double"},
        {"name": "open", "type": ["double", "null"]},
        {"name": "high", "type": ["double", "null"]},
        {"name": "low", "type": ["double", "null"]},
        {"name": "volume", "type": ["null", "double"]},
        {"name": "raw", "type": "bytes"},
        {"name": "n", "type": "int"},
    ],
}
SCHEMAS[60] = WireSchema(60, "AVRO", json.dumps(WIDE))


def as_wide(bar: dict[str, Any], seq: int) -> dict[str, Any]:
    extra = {"venue": "XSHG", "seq": seq, "flag": seq % 2 == 0, "px": None if seq % 3 else 1.5}
    return {**extra, **as_avro(bar), "raw": b"\x00\xff" * (seq % 3), "n": -seq}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(_bars, st.lists(_bars, min_size=1, max_size=4)),
            st.sampled_from(["json", "avro", "wide", "protobuf", "jsonschema"]),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_every_format_of_the_same_bars_decodes_as_json_does(
    messages: list[tuple[Any, str]],
) -> None:
    json_values: list[bytes] = []
    mixed: list[bytes] = []
    for seq, (message, fmt) in enumerate(messages):
        # JSON cannot carry inf: the JSON reference writes a string there, which SPEC 1
        # rejects with the same reason (a non-number close) as inf (not finite).
        json_values.append(_no_inf(message))
        if fmt == "json":
            mixed.append(json_values[-1])
        elif fmt == "jsonschema":
            mixed.append(b"\x00" + struct.pack(">I", 50) + json_values[-1])
        elif fmt == "protobuf":
            mixed.append(proto(message))
        elif isinstance(message, list):
            mixed.append(wire(7, ARRAY, [as_avro(b) for b in message]))
        elif fmt == "wide":
            mixed.append(wire(60, WIDE, as_wide(message, seq * 7919)))
        else:
            mixed.append(wire(1, BAR, as_avro(message)))
    got = decode_wire_batch(mixed, SCHEMAS)
    want = decode_batch(json_values)
    assert comparable(got) == comparable(want)
    for reject in got.rejects:
        if reject.array_index is None:
            assert reject.raw == mixed[reject.index]


_damage = st.one_of(
    st.tuples(st.just("cut"), st.integers(0, 60)),
    st.tuples(st.just("add"), st.integers(0, 255)),
    st.tuples(st.just("flip"), st.integers(0, 60), st.integers(1, 255)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_bars, st.booleans(), _damage), min_size=1, max_size=20))
def test_the_columnar_path_decides_damaged_payloads_as_fastavro_does(
    messages: list[tuple[dict[str, Any], bool, Any]],
) -> None:
    values = []
    for seq, (bar, wide, damage) in enumerate(messages):
        good = wire(60, WIDE, as_wide(bar, seq)) if wide else wire(1, BAR, as_avro(bar))
        body = bytearray(good)
        if damage[0] == "cut":
            body = body[: max(5, len(body) - 1 - damage[1])]
        elif damage[0] == "add":
            body.append(damage[1])
        else:
            at = 5 + damage[1] % (len(body) - 5)
            body[at] ^= damage[2]
        values.append(bytes(body))
    got = decode_wire_batch(values, SCHEMAS)
    with pytest.MonkeyPatch.context() as patch:  # the exact path alone: fastavro per message
        patch.setattr("service.decode.wire._flat_plan", lambda schema: None)
        want = decode_wire_batch(values, SCHEMAS)
    assert comparable(got) == comparable(want)


def test_flat_schemas_take_the_columnar_path_and_others_do_not() -> None:
    assert flat_plan(json.dumps(BAR)) is not None
    assert flat_plan(json.dumps(WIDE)) is not None
    assert flat_plan(json.dumps(ALIASED)) is not None
    assert flat_plan(json.dumps(ARRAY)) is None  # not a record
    assert flat_plan(json.dumps(HOLDER)) is None  # a nested array
    both = dict(BAR, fields=[*BAR["fields"], {"name": "stock_code", "type": "string"}])
    assert flat_plan(json.dumps(both)) is None  # name and alias: the exact path decides
    dated = dict(BAR, fields=[{"name": "date", "type": {"type": "int", "logicalType": "date"}}])
    assert flat_plan(json.dumps(dated)) is None
    numeric_symbol = dict(BAR, fields=[{"name": "symbol", "type": "long"}])
    assert flat_plan(json.dumps(numeric_symbol)) is None
    values = [wire(1, BAR, as_avro({"symbol": "A", "date": "2020-01-02", "close": 2.0}))] * 3
    plan = flat_plan(json.dumps(BAR))
    assert plan is not None
    cols = decode_flat([memoryview(v)[5:] for v in values], plan)
    assert cols.rows.tolist() == [0, 1, 2] and cols.refer.tolist() == []
    assert cols.symbols == ["A"] * 3 and cols.closes.tolist() == [2.0] * 3


def _no_inf(message: Any) -> bytes:
    def fix(bar: dict[str, Any]) -> dict[str, Any]:
        return {k: ("inf" if v == float("inf") else v) for k, v in bar.items()}

    return orjson.dumps([fix(b) for b in message] if isinstance(message, list) else fix(message))


def test_a_record_holding_an_array_and_aliases_are_bars() -> None:
    bars = [
        {"symbol": "A.SH", "date": "2020-01-02", "close": 10.0},
        {"symbol": "B.SH", "date": "2020-01-02", "close": -1.0},
    ]
    values = [
        wire(12, HOLDER, {"bars": [as_avro(b) for b in bars], "source": "feed"}),
        wire(
            30,
            ALIASED,
            {"stock_code": "C.SZ", "trade_date": "2020-01-03", "close_price": 2.5, "venue": "x"},
        ),
    ]
    got = decode_wire_batch(values, SCHEMAS)
    assert got.symbols == ["A.SH", "C.SZ"]
    assert got.closes.tolist() == [10.0, 2.5]
    assert got.message_index.tolist() == [0, 1]
    assert [(r.index, r.array_index, r.reason) for r in got.rejects] == [
        (0, 1, "invalid_field:close")
    ]
    assert orjson.loads(got.rejects[0].raw)["symbol"] == "B.SH"


def test_unknown_truncated_and_foreign_payloads_are_one_reject_each() -> None:
    good = [
        wire(1, BAR, as_avro({"symbol": f"S{i}", "date": "2020-01-02", "close": 1.0 + i}))
        for i in range(5)
    ]
    other = dict(BAR, fields=[*BAR["fields"], {"name": "extra", "type": "long"}])
    foreign = wire(
        1, other, {**as_avro({"symbol": "F", "date": "2020-01-02", "close": 2.0}), "extra": 99}
    )
    values = [
        good[0],
        wire(99, BAR, as_avro({"symbol": "U", "date": "2020-01-02", "close": 1.0})),
        good[1],
        good[2][:-3],  # truncated
        good[3],
        foreign,  # written with another schema under id 1: trailing bytes
        b"\x00\x00",  # too short for a header: JSON, and not valid JSON
        good[4],
        orjson.dumps({"symbol": "J", "date": "2020-01-02", "close": 3.0}),
    ]
    got = decode_wire_batch(values, {**SCHEMAS, 99: None})
    assert got.symbols == ["S0", "S1", "S3", "S4", "J"]
    assert got.message_index.tolist() == [0, 2, 4, 7, 8]
    assert [(r.index, r.reason) for r in got.rejects] == [
        (1, "unknown_schema"),
        (3, "invalid_avro"),
        (5, "invalid_avro"),
        (6, "invalid_json"),
    ]
    assert [r.raw for r in got.rejects][:3] == [values[1], values[3], values[5]]


def test_protobuf_and_json_schema_payloads_that_do_not_fit_are_one_reject_each() -> None:
    bar = {"symbol": "A", "date": "2020-01-02", "close": 1.0}
    good = proto(bar)
    values = [
        good,
        good[:-3],  # truncated inside a field
        good[:5] + b"\x08",  # a message-index count with no index after it
        b"\x00" + struct.pack(">I", 51) + orjson.dumps(bar),
        b"\x00" + struct.pack(">I", 51) + orjson.dumps({**bar, "close": "1.0"}),  # schema
        b"\x00" + struct.pack(">I", 51) + b"{nope",
    ]
    got = decode_wire_batch(values, SCHEMAS)
    assert got.message_index.tolist() == [0, 3]
    assert [(r.index, r.reason) for r in got.rejects] == [
        (1, "invalid_protobuf"),
        (2, "invalid_protobuf"),
        (4, "invalid_json_schema"),
        (5, "invalid_json_schema"),
    ]
    strict = decode_wire_batch(values, SCHEMAS, "protobuf")
    assert strict.message_index.tolist() == [0]
    assert [r.reason for r in strict.rejects][-3:] == ["invalid_protobuf"] * 3


def test_strict_avro_format_refuses_json_and_other_schema_kinds() -> None:
    values = [
        orjson.dumps({"symbol": "J", "date": "2020-01-02", "close": 3.0}),
        wire(1, BAR, as_avro({"symbol": "A", "date": "2020-01-02", "close": 1.0})),
        b"\x00\x00\x00\x00\x05{}",
    ]
    got = decode_wire_batch(values, {**SCHEMAS, 5: WireSchema(5, "JSON", "{}")}, "avro")
    assert got.symbols == ["A"]
    assert [(r.index, r.reason) for r in got.rejects] == [(0, "invalid_avro"), (2, "invalid_avro")]
    auto = decode_wire_batch(values, {**SCHEMAS, 5: WireSchema(5, "JSON", "{}")})
    # In auto mode the JSON Schema message is decoded; `{}` then breaks SPEC 1.
    assert [(r.index, r.reason) for r in auto.rejects] == [(2, "missing_field:symbol")]


def test_wire_ids_and_the_batch_reader_fallback() -> None:
    values = [wire(1, BAR, as_avro({"symbol": "A", "date": "2020-01-02", "close": 1.0}))] * 3
    assert wire_ids([*values, b"{}", b"\x00\x00\x00\x01", b""]) == {1}
    payloads = [memoryview(v)[5:] for v in values]
    text = SCHEMAS[1].text
    assert [o["symbol"] for o in decode_avro(payloads, text)] == ["A", "A", "A"]  # type: ignore[index]
    broken = [payloads[0], payloads[1][:4], payloads[2]]
    got = decode_avro(broken, text)
    assert got[1] is None and got[0] == got[2] and got[0] is not None


def test_invalid_utf8_in_a_field_the_columns_skip_is_invalid_avro() -> None:
    """Found by the property test above: the wide schema's first string field is not a
    bar field, so the columnar path skipped it unread and accepted a payload fastavro
    rejects. Rows with non-ASCII strings now go to fastavro, which decides."""
    bar = {"symbol": "600519.SH", "date": "2020-01-02", "close": 1.0}
    body = bytearray(wire(60, WIDE, as_wide(bar, 0)))
    body[6] ^= 0x80  # the first byte of that string: no longer valid UTF-8
    got = decode_wire_batch([bytes(body)], SCHEMAS)
    assert comparable(got)[-1] == [(0, None, "invalid_avro")]
