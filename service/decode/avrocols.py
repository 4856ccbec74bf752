"""Columnar decoding of flat Avro records: a batch of one schema straight to bar columns.

Why: fastavro builds a dict per record (about 7-11 µs each here), several times the
cost of everything else the service does per bar. A flat record (every field a
primitive, or a union of null and one primitive) has a layout numpy can walk for the
whole batch at once: one pass per field over an array of read positions, varints
decoded a byte column at a time, doubles gathered 8 bytes a row. Symbols and dates,
which repeat, are decided once per distinct value (`service.decode.rules`' caches).

Like `service.decode.fast` for JSON, this path only *accepts*: a row it cannot decode
(malformed, truncated, trailing bytes) or whose values break or merely approach a
SPEC 1 rule (null, out of range, non-finite...) is handed back (`refer`) to the exact
path (fastavro and `validate_bar`), which alone decides a reason. So the output is
always the exact path's; property tests in tests/unit/decode/test_decode_wire.py hold them
together. A schema that is not flat, uses logical types, or carries a SPEC field
both under its name and its alias is not taken at all (`flat_plan` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.decode.rules import ALIASES, parse_day, symbol_ok

__all__ = ["FlatColumns", "FlatPlan", "decode_flat", "flat_plan"]

_PRIMITIVE = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})
_NUMERIC = frozenset({"int", "long", "float", "double"})
_SPEC = ("symbol", "date", "close", "open", "high", "low", "volume")
_WIDTH = {"symbol": 32, "date": 10}  # the longest valid value, in bytes
_PLANS: dict[str, FlatPlan | None] = {}
_CACHE_LIMIT = 1_000


@dataclass(frozen=True, slots=True)
class _Field:
    kind: str  # an Avro primitive
    null_branch: int | None  # a [null, T] union: the branch index of null; else None


@dataclass(frozen=True, slots=True)
class FlatPlan:
    """How to walk a flat record: its fields in order, and where each SPEC field is."""

    fields: tuple[_Field, ...]
    spec: dict[str, int]  # canonical SPEC 1 name -> index in `fields`


@dataclass(slots=True)
class FlatColumns:
    """Rows taken (their positions in the batch, ascending) as columns; the rest refer."""

    rows: np.ndarray  # int64 positions of the taken rows
    symbols: list[str]
    days: np.ndarray  # int32
    closes: np.ndarray  # float64
    refer: np.ndarray  # int64 positions for the exact path


def _field(avro_type: Any) -> _Field | None:
    if isinstance(avro_type, dict):
        if "logicalType" in avro_type:  # fastavro converts these: leave them to it
            return None
        avro_type = avro_type.get("type")
    if isinstance(avro_type, str):
        return _Field(avro_type, None) if avro_type in _PRIMITIVE else None
    if isinstance(avro_type, list) and len(avro_type) == 2 and "null" in avro_type:
        other = _field(avro_type[1 - avro_type.index("null")])
        if other is None or other.null_branch is not None or other.kind == "null":
            return None
        return _Field(other.kind, avro_type.index("null"))
    return None


def flat_plan(schema_text: str) -> FlatPlan | None:
    """The plan of a writer schema (cached by text), or None when this path cannot take it."""
    if schema_text in _PLANS:
        return _PLANS[schema_text]
    plan = _plan(schema_text)
    if len(_PLANS) >= _CACHE_LIMIT:
        _PLANS.clear()
    _PLANS[schema_text] = plan
    return plan


def _plan(schema_text: str) -> FlatPlan | None:
    try:
        schema = orjson.loads(schema_text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    fields: list[_Field] = []
    names: dict[str, int] = {}
    for raw in schema.get("fields") or []:
        field = _field(raw.get("type")) if isinstance(raw, dict) else None
        if field is None:
            return None
        names[str(raw.get("name"))] = len(fields)
        fields.append(field)
    spec: dict[str, int] = {}
    for name in _SPEC:
        alias = ALIASES.get(name)
        found = [names[n] for n in (name, alias) if n is not None and n in names]
        if len(found) > 1:
            return None  # which one wins depends on nulls per row: the exact path decides
        if found:
            kind = fields[found[0]].kind
            if kind != "string" if name in _WIDTH else kind not in _NUMERIC:
                return None
            spec[name] = found[0]
    return FlatPlan(tuple(fields), spec)


class _Walk:
    """Read positions of every row in one buffer; `bad` marks rows that did not decode."""

    def __init__(self, payloads: Sequence[bytes | memoryview]) -> None:
        n = len(payloads)
        lens = np.fromiter(map(len, payloads), np.int64, n)
        self.ends = np.cumsum(lens)
        self.pos = self.ends - lens
        self.buf = np.frombuffer(b"".join(payloads) + bytes(16), np.uint8)
        self.top = len(self.buf) - 1
        self.bad = np.zeros(n, dtype=bool)
        self._high: np.ndarray | None = None  # running count of non-ASCII bytes

    def refer_non_ascii(self, start: np.ndarray, length: np.ndarray) -> None:
        """Mark rows whose string holds a byte above 0x7f as bad.

        Only the exact path (fastavro) may say whether such bytes are valid UTF-8: a
        string this path would skip unread could otherwise make an invalid payload look
        valid. Symbols and dates are ASCII by SPEC 1, and other string fields nearly
        always are, so referring these rows costs nothing in practice.
        """
        if self._high is None:
            self._high = np.concatenate(([0], np.cumsum(self.buf >= 0x80, dtype=np.int64)))
        end = np.minimum(start + np.maximum(length, 0), self.top)
        begin = np.minimum(start, end)
        self.bad |= (self._high[end] - self._high[begin]) > 0

    def gather(self, start: np.ndarray, width: int) -> np.ndarray:
        """`width` bytes from each row's `start` (clipped to the buffer: bad rows only)."""
        index = np.minimum(start[:, None] + np.arange(width), self.top)
        return self.buf[index]

    def varint(self, present: np.ndarray | None) -> np.ndarray:
        """A zigzag varint at every present row's position; advances those rows."""
        p = self.pos
        active = np.ones(len(p), dtype=bool) if present is None else present.copy()
        result = np.zeros(len(p), dtype=np.uint64)
        for k in range(10):
            byte = self.buf[np.minimum(p, self.top)].astype(np.uint64)
            result |= np.where(active, (byte & np.uint64(0x7F)) << np.uint64(7 * k), 0).astype(
                np.uint64
            )
            p = p + active
            active &= (byte & np.uint64(0x80)) != 0
            if not active.any():
                break
        self.bad |= active  # more than 10 bytes: not a long
        self.pos = p
        return (result >> np.uint64(1)).astype(np.int64) ^ -(result & np.uint64(1)).astype(np.int64)

    def read(self, field: _Field, keep: bool) -> tuple[np.ndarray | None, Any]:
        """(present mask or None, value) of one field; the value only when `keep`."""
        present = None
        if field.null_branch is not None:
            branch = self.varint(None)
            self.bad |= (branch != 0) & (branch != 1)
            present = branch != field.null_branch
        kind = field.kind
        step = np.ones(len(self.pos), dtype=np.int64) if present is None else present
        value: Any = None
        if kind == "boolean":
            self.pos = self.pos + step
        elif kind in ("int", "long"):
            value = self.varint(present).astype(np.float64)
        elif kind in ("float", "double"):
            width = 4 if kind == "float" else 8
            if keep:
                raw = np.ascontiguousarray(self.gather(self.pos, width))
                value = raw.view("<f4" if width == 4 else "<f8").ravel().astype(np.float64)
            self.pos = self.pos + step * width
        elif kind in ("string", "bytes"):
            length = self.varint(present)
            self.bad |= length < 0
            length = np.maximum(length, 0) if present is None else np.where(present, length, 0)
            if kind == "string":
                self.refer_non_ascii(self.pos, length)
            value = (self.pos.copy(), length)
            self.pos = self.pos + np.maximum(length, 0)
        return present, value


def decode_flat(payloads: Sequence[bytes | memoryview], plan: FlatPlan) -> FlatColumns:
    """A batch of payloads (after the wire header) of one flat schema -> columns."""
    walk = _Walk(payloads)
    wanted = {index: name for name, index in plan.spec.items()}
    got: dict[str, tuple[np.ndarray | None, Any]] = {}
    for index, field in enumerate(plan.fields):
        present, value = walk.read(field, index in wanted)
        if index in wanted:
            got[wanted[index]] = (present, value)
    flag = walk.bad | (walk.pos != walk.ends)
    n = len(payloads)
    for name in ("symbol", "date", "close"):
        if name not in got:
            return FlatColumns(*_empty(), refer=np.arange(n, dtype=np.int64))
        present = got[name][0]
        if present is not None:
            flag |= ~present
    symbol_codes, symbols = _distinct(walk, got["symbol"][1], "symbol", flag)
    date_codes, dates = _distinct(walk, got["date"][1], "date", flag)
    names = [s.decode("ascii", "replace") for s in symbols]
    symbol_ok_arr = np.fromiter((symbol_ok(s) for s in names), bool, len(names))
    days_of = [parse_day(d.decode("ascii", "replace")) for d in dates]
    date_ok = np.fromiter((type(d) is int for d in days_of), bool, len(days_of))
    day_values = np.fromiter((d if type(d) is int else 0 for d in days_of), np.int64, len(days_of))
    flag |= ~symbol_ok_arr[symbol_codes] | ~date_ok[date_codes]
    with np.errstate(invalid="ignore"):
        close = got["close"][1]
        flag |= ~(np.isfinite(close) & (close > 0))
        prices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in ("open", "high", "low", "volume"):
            if name not in got:
                continue
            present, value = got[name]
            here = np.ones(n, dtype=bool) if present is None else present
            fine = np.isfinite(value) & (value >= 0 if name == "volume" else value > 0)
            flag |= here & ~fine
            prices[name] = (here, value)
        if "low" in prices and "high" in prices:
            both = prices["low"][0] & prices["high"][0]
            flag |= both & (prices["low"][1] > prices["high"][1])
    keep = ~flag
    rows = np.flatnonzero(keep)
    codes = symbol_codes[keep].tolist()
    return FlatColumns(
        rows=rows,
        symbols=[names[c] for c in codes],
        days=day_values[date_codes[keep]].astype(np.int32),
        closes=close[keep].astype(np.float64),
        refer=np.flatnonzero(flag),
    )


def _distinct(
    walk: _Walk, value: tuple[np.ndarray, np.ndarray], name: str, flag: np.ndarray
) -> tuple[np.ndarray, list[bytes]]:
    """Each row's code into the distinct values of a string field (at most `_WIDTH`
    bytes; longer ones, or ones holding a NUL, are flagged), and those values."""
    start, length = value
    width = _WIDTH[name]
    flag |= (length < 1) | (length > width)
    raw = walk.gather(start, width)
    inside = np.arange(width) < length[:, None]
    flag |= ((raw == 0) & inside).any(axis=1)
    raw = np.where(inside, raw, 0).astype(np.uint8)
    fixed = np.ascontiguousarray(raw).view(f"S{width}").ravel()
    uniques, codes = np.unique(fixed, return_inverse=True)
    return codes.ravel(), [bytes(u) for u in uniques.tolist()]


def _empty() -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    return (
        np.empty(0, dtype=np.int64),
        [],
        np.empty(0, dtype=np.int32),
        np.empty(0, dtype=np.float64),
    )
