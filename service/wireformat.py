"""Bars -> the Confluent wire format: the schemas sfa registers and their encoders.

Used by `sfa produce --format avro|protobuf|jsonschema` (a feed as an upstream producer
would send it) and by the tests and the bench. The schemas follow SPEC 1: `symbol`,
`date` (a string) and `close` required, the other prices and `volume` optional (null by
default in Avro, explicit presence in Protobuf), so adding another optional field later
is a BACKWARD-compatible change.

A JSON bar is written under its canonical names (an alias's value moves to the
canonical field, a null counts as absent, unknown fields are dropped). A bar Avro cannot
carry (a missing required field, a string where a number belongs, an array line) is
refused with the reason, and `sfa produce` names it as a skipped line: the Avro feed
carries what the JSON file would have carried, less what it could not encode.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Protocol

import fastavro
import orjson

from service.decode.rules import ALIASES

__all__ = [
    "BAR_JSON_SCHEMA_TEXT",
    "BAR_PROTO_TEXT",
    "BAR_SCHEMA",
    "BAR_SCHEMA_TEXT",
    "AvroBarEncoder",
    "BarEncoder",
    "JsonSchemaBarEncoder",
    "ProtobufBarEncoder",
    "avro_bar",
    "wire_header",
]

_OPTIONAL = ["null", "double"]
BAR_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Bar",
    "namespace": "sfa",
    "doc": "One daily stock bar (SPEC 1).",
    "fields": [
        {"name": "symbol", "type": "string"},
        {"name": "date", "type": "string", "doc": "YYYY-MM-DD"},
        {"name": "close", "type": "double"},
        {"name": "open", "type": _OPTIONAL, "default": None},
        {"name": "high", "type": _OPTIONAL, "default": None},
        {"name": "low", "type": _OPTIONAL, "default": None},
        {"name": "volume", "type": _OPTIONAL, "default": None},
    ],
}
BAR_SCHEMA_TEXT = json.dumps(BAR_SCHEMA, separators=(",", ":"))
# Every field with explicit presence: a close of 0 or an empty symbol is sent (and
# rejected by SPEC 1 for what it is), not dropped as a proto3 default.
BAR_PROTO_TEXT = """syntax = "proto3";
package sfa;

// One daily stock bar (SPEC 1).
message Bar {
  optional string symbol = 1;
  optional string date = 2;  // YYYY-MM-DD
  optional double close = 3;
  optional double open = 4;
  optional double high = 5;
  optional double low = 6;
  optional double volume = 7;
}
"""
_NULLABLE = {"type": ["number", "null"]}
BAR_JSON_SCHEMA_TEXT = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Bar",
        "description": "One daily stock bar (SPEC 1).",
        "type": "object",
        "properties": {
            "symbol": {"type": "string"},
            "date": {"type": "string"},
            "close": {"type": "number"},
            "open": _NULLABLE,
            "high": _NULLABLE,
            "low": _NULLABLE,
            "volume": _NULLABLE,
        },
        "required": ["symbol", "date", "close"],
    },
    separators=(",", ":"),
)
_NUMBERS = ("close", "open", "high", "low", "volume")


def wire_header(schema_id: int) -> bytes:
    """Magic byte 0 and the 4-byte big-endian schema id."""
    return b"\x00" + struct.pack(">I", schema_id)


def avro_bar(value: bytes) -> dict[str, Any] | str:
    """The Avro record of one JSON bar, or why it cannot be one."""
    try:
        bar = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "not JSON"
    if type(bar) is not dict:
        return "not one bar object (--format sends one bar per message)"
    out: dict[str, Any] = {}
    for name in ("symbol", "date", *_NUMBERS):
        item = bar.get(name)
        if item is None and name in ALIASES:
            item = bar.get(ALIASES[name])
        out[name] = item
    for name in ("symbol", "date"):
        if type(out[name]) is not str:
            return f"{name} missing or not a string"
    for name in _NUMBERS:
        item = out[name]
        if (item is None and name != "close") or type(item) in (int, float):
            out[name] = None if item is None else float(item)
        else:
            return f"{name} missing or not a number"
    return out


class BarEncoder(Protocol):
    def encode(self, value: bytes) -> bytes | str: ...


class AvroBarEncoder:
    """JSON bar -> wire-format Avro under `schema_id` (the id `BAR_SCHEMA` got)."""

    def __init__(self, schema_id: int, schema: dict[str, Any] | None = None) -> None:
        self._header = wire_header(schema_id)
        self._schema = fastavro.parse_schema(schema or BAR_SCHEMA)

    def encode(self, value: bytes) -> bytes | str:
        """The message to send, or the reason the bar cannot be written as Avro."""
        record = avro_bar(value)
        if isinstance(record, str):
            return record
        out = io.BytesIO()
        out.write(self._header)
        fastavro.schemaless_writer(out, self._schema, record)
        return out.getvalue()


class ProtobufBarEncoder:
    """JSON bar -> wire-format Protobuf (`BAR_PROTO_TEXT`'s first message, index 0)."""

    def __init__(self, schema_id: int) -> None:
        from service.decode.proto import message_class  # protobuf: only when asked for

        self._header = wire_header(schema_id) + b"\x00"
        self._cls = message_class(BAR_PROTO_TEXT, (0,))

    def encode(self, value: bytes) -> bytes | str:
        record = avro_bar(value)
        if isinstance(record, str):
            return record
        fields = {k: v for k, v in record.items() if v is not None}
        return self._header + self._cls(**fields).SerializeToString()


class JsonSchemaBarEncoder:
    """JSON bar -> wire-format JSON Schema (`BAR_JSON_SCHEMA_TEXT`): canonical JSON."""

    def __init__(self, schema_id: int) -> None:
        self._header = wire_header(schema_id)

    def encode(self, value: bytes) -> bytes | str:
        record = avro_bar(value)
        if isinstance(record, str):
            return record
        return self._header + orjson.dumps({k: v for k, v in record.items() if v is not None})
