"""The Confluent wire format (magic byte 0, a 4-byte big-endian schema id, the payload)
-> the same `DecodedBatch` as JSON input, with SPEC 1's rules and reasons after decoding.

Pure: the schemas a batch needs are looked up by the caller (`service.registry`) and
handed in as plain data, so this runs in the decode helpers and in tests without a
registry. A batch may mix JSON and wire-format messages (`SFA_INPUT_FORMAT=auto`): the
JSON ones take the usual path (`service.decode.batch`), the others are grouped by
schema id and decoded a group at a time -- a flat Avro record as columns
(`service.decode.avrocols`), whatever that path refers and every other schema to
objects (`service.decode.avro`, `proto`, `json_schema`) checked by the columnar SPEC 1
check -- and the parts are merged back into arrival order.

A decoded record is one bar, an array of bars, or a record holding one array of bars
(and no SPEC 1 field of its own). Reasons beyond SPEC 1's: `unknown_schema` (the
registry has no schema with the message's id), `invalid_avro`, `invalid_protobuf`,
`invalid_json_schema` (the payload does not decode with its schema; or, in a topic
declared of one format, a message that is not in the wire format or whose schema is
of another kind). A rejected element of an array carries that element as JSON, as a
JSON array's would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import orjson

from service.decode.avro import decode_avro, parsed_schema
from service.decode.avrocols import FlatPlan, decode_flat, flat_plan
from service.decode.batch import decode_batch
from service.decode.columns import check_bars
from service.decode.exact import MAX_ARRAY_BARS
from service.decode.types import DecodedBatch, Reject
from service.state.batch import factorize

__all__ = [
    "InputFormat",
    "SchemaKind",
    "WireSchema",
    "bars_of",
    "decode_payloads",
    "decode_wire_batch",
    "is_wire",
    "schema_id",
    "wire_ids",
]

#: SFA_INPUT_FORMAT: auto = byte 0 starts the wire format, anything else is JSON.
InputFormat = Literal["auto", "json", "avro", "protobuf", "jsonschema"]
#: The registry's schemaType (Confluent's API omits it for Avro).
SchemaKind = Literal["AVRO", "JSON", "PROTOBUF"]

_MAGIC = 0
_HEADER = 5
_head = itemgetter(slice(0, _HEADER))
_REASON: dict[str, str] = {
    "AVRO": "invalid_avro",
    "JSON": "invalid_json_schema",
    "PROTOBUF": "invalid_protobuf",
}
_CANONICAL = ("symbol", "stock_code")
_KIND_OF_FORMAT: dict[str, SchemaKind] = {
    "avro": "AVRO",
    "protobuf": "PROTOBUF",
    "jsonschema": "JSON",
}


def _protobuf(payloads: Sequence[bytes | memoryview], text: str) -> list[Any | None]:
    from service.decode.proto import decode_protobuf  # ~25 ms of imports: only when used

    return decode_protobuf(payloads, text)


def _json_schema(payloads: Sequence[bytes | memoryview], text: str) -> list[Any | None]:
    from service.decode.json_schema import decode_json_schema  # ~70 ms: only when used

    return decode_json_schema(payloads, text)


_DECODERS: dict[str, Callable[[Sequence[bytes | memoryview], str], list[Any | None]]] = {
    "AVRO": decode_avro,
    "PROTOBUF": _protobuf,
    "JSON": _json_schema,
}


#: Valid bars decided as columns: (message index, symbols, days, closes).
_Part = tuple[np.ndarray, list[str], np.ndarray, np.ndarray]


@dataclass(frozen=True, slots=True)
class WireSchema:
    """A registered schema as the decoder needs it: plain data, cheap to pickle."""

    id: int
    kind: SchemaKind
    text: str


def is_wire(value: bytes) -> bool:
    """Starts with the magic byte and holds a whole header (5 bytes)."""
    return len(value) >= _HEADER and value[0] == _MAGIC


def schema_id(value: bytes) -> int:
    """The schema id of a wire-format message (`is_wire(value)` must hold)."""
    return int.from_bytes(value[1:_HEADER], "big")


def wire_ids(values: Iterable[bytes]) -> set[int]:
    """The schema ids a batch refers to (what the caller must look up): one C-level pass
    over the 5-byte heads, then one look per distinct head."""
    return {schema_id(h) for h in set(map(_head, values)) if is_wire(h)}


def decode_payloads(schema: WireSchema, payloads: Sequence[bytes | memoryview]) -> list[Any | None]:
    """Payloads (after the 5-byte header) of one schema decoded, None where one does not
    fit; ValueError when the decoder refuses the schema itself."""
    return _DECODERS[schema.kind](payloads, schema.text)


def decode_wire_batch(
    values: Sequence[bytes],
    schemas: Mapping[int, WireSchema | None],
    input_format: InputFormat = "auto",
    max_message_bytes: int = 1_048_576,
) -> DecodedBatch:
    """A batch of JSON and wire-format messages -> valid bars and rejects.

    `schemas` maps every id of `wire_ids(values)` to its schema, or None when the
    registry does not know it. With `input_format="avro"` (or protobuf, jsonschema)
    every message must be in the wire format with a schema of that kind; with "auto" a
    message not starting with byte 0 is JSON.
    """
    json_rows: list[int] = []
    groups: dict[int, list[int]] = {}
    rejects: list[Reject] = []
    strict = _KIND_OF_FORMAT.get(input_format)  # the one kind a declared format accepts
    heads = set(map(_head, values))
    one = heads.pop() if len(heads) == 1 else b""
    to_sort: Sequence[bytes] = values
    if is_wire(one) and max(map(len, values)) <= max_message_bytes:
        groups[schema_id(one)] = list(range(len(values)))  # the usual batch: one schema
        to_sort = ()
    for i, value in enumerate(to_sort):
        if not is_wire(value):
            if strict is not None:
                rejects.append(Reject(i, None, _REASON[strict], bytes(value)))
            else:
                json_rows.append(i)
        elif len(value) > max_message_bytes:
            rejects.append(Reject(i, None, "too_large", bytes(value)))
        else:
            groups.setdefault(schema_id(value), []).append(i)
    objects: list[tuple[int, Any]] = []
    parts: list[_Part] = []  # columns decided without objects: fast Avro, JSON
    for sid, rows in groups.items():
        schema = schemas.get(sid)
        if schema is None:
            rejects.extend(Reject(i, None, "unknown_schema", bytes(values[i])) for i in rows)
            continue
        reason = _REASON[strict or schema.kind]
        if strict is not None and schema.kind != strict:
            rejects.extend(Reject(i, None, reason, bytes(values[i])) for i in rows)
            continue
        payloads = [memoryview(values[i])[_HEADER:] for i in rows]
        plan = _flat_plan(schema)
        if plan is not None:  # columnar; the rows it refers go on below
            cols = decode_flat(payloads, plan)
            taken = np.asarray(rows, dtype=np.int64)[cols.rows]
            parts.append((taken, cols.symbols, cols.days, cols.closes))
            rest = cols.refer.tolist()
            rows, payloads = [rows[j] for j in rest], [payloads[j] for j in rest]
        try:
            decoded = decode_payloads(schema, payloads) if rows else []
        except ValueError:  # the registry holds a schema the decoder refuses
            decoded = [None] * len(rows)
        for i, obj in zip(rows, decoded, strict=True):
            if obj is None:
                rejects.append(Reject(i, None, reason, bytes(values[i])))
            else:
                objects.append((i, obj))
    objects.sort(key=lambda pair: pair[0])
    wired = _check_objects(objects, values, rejects)
    if not json_rows and not parts:
        return wired
    parts.append((wired.message_index, wired.symbols, wired.days, wired.closes))
    if json_rows:
        at = np.asarray(json_rows, dtype=np.int64)
        part = decode_batch([values[i] for i in json_rows], max_message_bytes)
        parts.append((at[part.message_index], part.symbols, part.days, part.closes))
        rejects.extend(
            Reject(int(at[r.index]), r.array_index, r.reason, r.raw) for r in part.rejects
        )
    return _assemble(parts, rejects)


def _flat_plan(schema: WireSchema) -> FlatPlan | None:
    """The columnar plan of an Avro schema that fastavro accepts too, else None."""
    if schema.kind != "AVRO":
        return None
    plan = flat_plan(schema.text)
    if plan is not None:
        try:
            parsed_schema(schema.text)  # the same schemas refused as on the exact path
        except ValueError:
            return None
    return plan


def bars_of(obj: Any) -> list[Any] | None:
    """The array a decoded record carries (itself, or the one array field of a record
    without a `symbol`), or None when it is one bar."""
    if type(obj) is list:
        return obj
    if type(obj) is dict and not any(obj.get(name) is not None for name in _CANONICAL):
        arrays = [v for v in obj.values() if type(v) is list]
        if len(arrays) == 1:
            return arrays[0]
    return None


def _check_objects(
    objects: list[tuple[int, Any]], values: Sequence[bytes], rejects: list[Reject]
) -> DecodedBatch:
    """SPEC 1 over decoded records: one bar, an array of bars, or a record holding one."""
    bars: list[dict[str, Any]] = []
    msg: list[int] = []
    pos: list[int | None] = []
    for i, obj in objects:
        array = bars_of(obj)
        if array is None:
            if type(obj) is dict:
                bars.append(obj)
                msg.append(i)
                pos.append(None)
            else:
                rejects.append(Reject(i, None, "not_an_object", bytes(values[i])))
        elif len(array) > MAX_ARRAY_BARS:
            rejects.append(Reject(i, None, "too_large", bytes(values[i])))
        else:
            for j, element in enumerate(array):
                if type(element) is dict:
                    bars.append(element)
                    msg.append(i)
                    pos.append(j)
                else:
                    rejects.append(Reject(i, j, "not_an_object", _json(element)))
    checked = check_bars(bars) if bars else None
    if checked is None:
        symbols: list[str] = []
        days = np.empty(0, dtype=np.int32)
        closes = np.empty(0, dtype=np.float64)
        index = np.empty(0, dtype=np.int32)
    else:
        symbols, days, closes = checked.symbols, checked.days, checked.closes
        index = np.asarray(msg, dtype=np.int32)
        if checked.keep is not None:
            index = index[checked.keep]
        for row, reason in checked.rejected:
            where = pos[row]
            raw = bytes(values[msg[row]]) if where is None else _json(bars[row])
            rejects.append(Reject(msg[row], where, reason, raw))
    rejects.sort(key=lambda r: (r.index, -1 if r.array_index is None else r.array_index))
    codes, uniques = factorize(symbols)
    return DecodedBatch(codes, uniques, days, closes, index, rejects)


def _json(value: Any) -> bytes:
    """A decoded element as JSON (dates and bytes as text): what its dead letter carries."""
    return orjson.dumps(value, default=str)


def _assemble(parts: list[_Part], rejects: list[Reject]) -> DecodedBatch:
    """The parts in arrival order: by message index, a message's bars kept together in
    their own order (a stable sort; each message lies in one part)."""
    index = np.concatenate([p[0] for p in parts]).astype(np.int64)
    order = np.argsort(index, kind="stable")
    symbols = [s for p in parts for s in p[1]]
    codes, uniques = factorize([symbols[k] for k in order.tolist()])
    rejects.sort(key=lambda r: (r.index, -1 if r.array_index is None else r.array_index))
    return DecodedBatch(
        codes,
        uniques,
        np.concatenate([p[2] for p in parts]).astype(np.int32)[order],
        np.concatenate([p[3] for p in parts]).astype(np.float64)[order],
        index[order].astype(np.int32),
        rejects,
    )
