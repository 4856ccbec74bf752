"""Bytes <-> bars and results: batch decoding (SPEC 1), result encoding (SPEC 6),
dead-letter records.

Decoding is the per-message hot path, so a batch is parsed with a single
`orjson.loads` over `[m0,m1,...]` whenever that provably gives the same values as
parsing each message alone (see `_parse_joined`), and validated column-wise
(`service.validate`). Anything unusual in a batch (a too-large message, an array
message, broken JSON) sends that batch down the plain per-message path, which gives
the same answers, only slower.

Decisions on points the SPEC leaves open:

* An array message longer than 10,000 elements is rejected whole as `too_large`.
* An empty array message carries no bar and is silently accepted (no dead letter).
* Array elements that are themselves arrays (or scalars) are `not_an_object`.
* A number too large for a double (e.g. `1e400`) makes orjson refuse the message,
  so it is `invalid_json`; integers beyond 64 bits are parsed as floats.
* Rejects come out sorted by (message index, array index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from service.calendar import day_to_date
from service.engine.types import ENGINE_VERSION, PatternResult, Position, Signal
from service.fastdecode import Columns, decode_block
from service.state.batch import factorize
from service.validate import check_bars

__all__ = [
    "MAX_ARRAY_BARS",
    "DecodedBatch",
    "Reject",
    "ResultEncoder",
    "dead_letter_headers",
    "decode_batch",
    "decode_lines",
    "encode_pattern_part",
    "encode_result",
    "errors_file_record",
]

MAX_ARRAY_BARS = 10_000

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
_first_byte = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Reject:
    """One dead letter: a rejected message, or one rejected element of an array."""

    index: int  # index of the message within the batch
    array_index: int | None  # position inside a JSON array message, else None
    reason: str
    raw: bytes  # the message bytes; for an array element: that element's JSON


@dataclass(slots=True)
class DecodedBatch:
    """Valid bars of a batch as columns (arrival order) plus the rejects.

    Symbols come factorized (`uniques[codes[i]]` is bar i's symbol, uniques in order of
    first appearance): the state groups by code, and a batch crosses the process
    boundary as a few arrays and one short list instead of a string per bar.
    """

    codes: np.ndarray  # int32 index into `uniques`, per valid bar
    uniques: list[str]
    days: np.ndarray  # int32 day numbers
    closes: np.ndarray  # float64
    message_index: np.ndarray  # int32: the message that carried each valid bar
    rejects: list[Reject]

    @property
    def symbols(self) -> list[str]:
        """Each valid bar's symbol (a new list; tests and small callers)."""
        uniques = self.uniques
        return [uniques[c] for c in self.codes.tolist()]

    def __len__(self) -> int:
        return len(self.codes)


def _parse_joined(values: Sequence[bytes], max_message_bytes: int) -> list[Any] | None:
    """Parse every message with one `orjson.loads`, or None when that is not provably
    the same as parsing them one by one (the caller then does exactly that).

    Proof: the text is `[m0,\nm1,\n...]`; suppose it parses to n values. No inserted
    separator lies inside a string (JSON strings cannot hold a raw newline); none
    separates object members (that would need a key, but every message starts with
    `{`); none lies inside a nested array (there is no `[` but the outer one); and an
    object cannot span a separator either (after a comma inside an object comes a key,
    not `{`). So the n-1 inserted separators are the n-1 top-level ones: each message
    is exactly one element, the dict it would parse to alone. Checking costs two C
    scans, far less than n separate `loads` calls.
    """
    n = len(values)
    parts = list(values)
    try:
        parts[0] = b"[" + parts[0]
        parts[-1] = bytes(parts[-1]) + b"]"
        if bytes(map(_first_byte, values)).count(b"{") != n:
            return None
    except IndexError:  # an empty message
        return None
    blob = b",\n".join(parts)
    if len(blob) > max_message_bytes and max(map(len, values)) > max_message_bytes:
        return None
    if blob.find(b"[", 1) != -1:
        return None
    try:
        parsed = _loads(blob)
    except _JSONDecodeError:  # broken JSON somewhere: find it message by message
        return None
    return parsed if len(parsed) == n else None  # type: ignore[no-any-return]


def _parse_each(
    values: Sequence[bytes], max_message_bytes: int
) -> tuple[list[dict[str, Any]], list[int], list[int | None], list[Reject]]:
    """The plain path: each message alone; returns bars, their message and array index."""
    bars: list[dict[str, Any]] = []
    msg: list[int] = []
    pos: list[int | None] = []
    rejects: list[Reject] = []
    for i, value in enumerate(values):
        if len(value) > max_message_bytes:
            rejects.append(Reject(i, None, "too_large", bytes(value)))
            continue
        try:
            obj = _loads(value)
        except _JSONDecodeError:  # also raised for bytes that are not UTF-8
            rejects.append(Reject(i, None, "invalid_json", bytes(value)))
            continue
        kind = type(obj)
        if kind is dict:
            bars.append(obj)
            msg.append(i)
            pos.append(None)
        elif kind is list:
            if len(obj) > MAX_ARRAY_BARS:
                rejects.append(Reject(i, None, "too_large", bytes(value)))
                continue
            for j, element in enumerate(obj):
                if type(element) is dict:
                    bars.append(element)
                    msg.append(i)
                    pos.append(j)
                else:
                    rejects.append(Reject(i, j, "not_an_object", _dumps(element)))
        else:
            rejects.append(Reject(i, None, "not_an_object", bytes(value)))
    return bars, msg, pos, rejects


def decode_batch(values: Sequence[bytes], max_message_bytes: int = 1_048_576) -> DecodedBatch:
    """Parse and validate a batch of message values; bad records become `Reject`s.

    Messages without a newline of their own are joined into one block for the
    columnar fast path (`service.fastdecode`); anything it cannot take is decoded
    message by message, exactly.
    """
    if values:
        blob = b"\n".join(values)
        fast = decode_block(blob, max_message_bytes, expect=len(values))
        if fast is not None:
            return _assemble(fast, values.__getitem__, max_message_bytes)
    return _decoded(*_decode_values(values, max_message_bytes))


def decode_lines(blob: bytes, max_message_bytes: int = 1_048_576) -> DecodedBatch:
    """`decode_batch` of `blob.split(b"\\n")`, without splitting in the usual case: file
    batches travel to the decoder as one bytes object."""
    if blob:
        fast = decode_block(blob, max_message_bytes)
        if fast is not None:
            return _assemble(fast, fast.message, max_message_bytes)
    return _decoded(*_decode_values(blob.split(b"\n") if blob else [], max_message_bytes))


def _assemble(
    fast: Columns, message: Callable[[int], bytes], max_message_bytes: int
) -> DecodedBatch:
    """The fast path's columns, with every row it referred decided by the exact path."""
    n = len(fast.days)
    if fast.keep is None:
        index = np.arange(n, dtype=np.int32)
        return DecodedBatch(fast.codes, fast.uniques, fast.days, fast.closes, index, [])
    keep = fast.keep
    uniques = fast.uniques
    symbols = [uniques[c] for c in fast.codes.tolist()]
    days, closes = fast.days.copy(), fast.closes.copy()
    rejects: list[Reject] = []
    for row in fast.refer:
        value = message(row)
        one_symbol, one_day, one_close, _, one_rejects = _decode_values([value], max_message_bytes)
        if one_symbol:  # the message is one object, so one bar or one reject
            symbols[row], days[row], closes[row] = one_symbol[0], one_day[0], one_close[0]
            keep[row] = True
        else:
            rejects.extend(Reject(row, r.array_index, r.reason, r.raw) for r in one_rejects)
    codes, kept_uniques = factorize([s for s, k in zip(symbols, keep.tolist(), strict=True) if k])
    index = np.flatnonzero(keep).astype(np.int32)
    return DecodedBatch(codes, kept_uniques, days[keep], closes[keep], index, rejects)


def _decoded(
    symbols: list[str],
    days: np.ndarray,
    closes: np.ndarray,
    message_index: np.ndarray,
    rejects: list[Reject],
) -> DecodedBatch:
    codes, uniques = factorize(symbols)
    return DecodedBatch(codes, uniques, days, closes, message_index, rejects)


def _decode_values(
    values: Sequence[bytes], max_message_bytes: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[Reject]]:
    """The exact path: orjson and `service.validate`, message by message in effect.

    Returns the valid bars' symbols, days, closes and message index, and the rejects.
    """
    joined = _parse_joined(values, max_message_bytes) if values else []
    if joined is not None:
        bars: list[dict[str, Any]] = joined
        msg: list[int] | None = None  # bar i came from message i
        pos: list[int | None] | None = None
        rejects: list[Reject] = []
    else:
        bars, msg, pos, rejects = _parse_each(values, max_message_bytes)
    checked = check_bars(bars)
    message_index = (
        np.arange(len(bars), dtype=np.int32) if msg is None else np.array(msg, dtype=np.int32)
    )
    if checked.keep is not None:
        message_index = message_index[checked.keep]
    for row, reason in checked.rejected:
        if msg is None or pos is None:
            rejects.append(Reject(row, None, reason, bytes(values[row])))
        elif pos[row] is None:
            rejects.append(Reject(msg[row], None, reason, bytes(values[msg[row]])))
        else:
            rejects.append(Reject(msg[row], pos[row], reason, _dumps(bars[row])))
    if msg is not None and checked.rejected:
        rejects.sort(key=lambda r: (r.index, -1 if r.array_index is None else r.array_index))
    return checked.symbols, checked.days, checked.closes, message_index, rejects


# --- output (SPEC 6) ---

_DATES: dict[int, str] = {}
_OPT = orjson.OPT_SERIALIZE_NUMPY


def _iso(day: int) -> str:
    text = _DATES.get(day)
    if text is None:
        text = _DATES[day] = day_to_date(day).isoformat()
    return text


def encode_pattern_part(result: PatternResult) -> bytes:
    """`"years_analyzed":[..],"pattern":{..}|null,"curve":[..]` without braces.

    These members depend only on the cached pattern, so the caller encodes them once
    per pattern and `encode_result` splices the bytes into every result.
    """
    p = result.pattern
    pattern = None
    if p is not None:
        pattern = {
            "pattern_strength": float(p.pattern_strength),
            "average_return_before": float(p.average_return_before),
            "average_return_after": float(p.average_return_after),
            "volatility_before": float(p.volatility_before),
            "volatility_after": float(p.volatility_after),
            "volatility_ratio": None if p.volatility_ratio is None else float(p.volatility_ratio),
            "consistency_score": float(p.consistency_score),
            "confidence_level": float(p.confidence_level),
            "peak_day": int(p.peak_day),
            "trough_day": int(p.trough_day),
        }
    curve = list(
        zip(
            np.asarray(result.curve_k).tolist(),
            np.asarray(result.curve_mean, dtype=np.float64).tolist(),
            np.asarray(result.curve_n).tolist(),
            strict=True,
        )
    )
    body = _dumps(
        {"years_analyzed": [int(y) for y in result.years], "pattern": pattern, "curve": curve}
    )
    return body[1:-1]


def encode_result(
    *,
    symbol: str,
    as_of_day: int,
    status: str,
    window_days: int,
    alignment: str,
    pattern_part: bytes,
    position: Position,
    signal: Signal | None,
    bars_in_state: int,
    input_ref: dict[str, Any] | None,
    engine_version: str = ENGINE_VERSION,
) -> bytes:
    """One SPEC 6 result object, keys in the SPEC's order (two dumps and a splice)."""
    head = _dumps(
        {
            "symbol": symbol,
            "as_of": _iso(int(as_of_day)),
            "status": status,
            "window_days": window_days,
            "alignment": alignment,
        },
        option=_OPT,
    )
    sig = None
    if signal is not None:
        sig = {
            "signal": signal.signal,
            "strength": signal.strength,
            "action": signal.action,
            "volatility_warning": signal.volatility_warning,
        }
    tail = _dumps(
        {
            "position": {
                "spring_festival_date": _iso(int(position.spring_festival_day)),
                "days_to_spring_festival": position.days_to_spring_festival,
                "relative_day": position.relative_day,
                "in_window": position.in_window,
                "phase": position.phase,
            },
            "signal": sig,
            "bars_in_state": bars_in_state,
            "engine_version": engine_version,
            "input": input_ref,
        },
        option=_OPT,
    )
    return head[:-1] + b"," + pattern_part + b"," + tail[1:]


class ResultEncoder:
    """`encode_result`, byte for byte, for a stream of results with shared parts.

    Every emitted result costs two dict dumps and a splice with `encode_result`; but in
    a batch most symbols share their latest day (so their as_of and position), and the
    status, window and alignment members take a handful of values. Those fragments are
    encoded once and joined, which makes emitting a result several times cheaper.
    Checked against `encode_result` by a property test.
    """

    def __init__(
        self, window_days: int, alignment: str, engine_version: str = ENGINE_VERSION
    ) -> None:
        self._w = window_days
        self._alignment = alignment
        self._version = b',"engine_version":' + _dumps(engine_version) + b',"input":'
        self._heads: dict[str, bytes] = {}
        self._days: dict[int, bytes] = {}
        self._statuses: dict[str, bytes] = {}
        self._positions: dict[Position, bytes] = {}

    def encode(
        self,
        symbol: str,
        as_of_day: int,
        status: str,
        pattern_part: bytes,
        position: Position,
        signal: Signal | None,
        bars_in_state: int,
        input_ref: dict[str, Any] | None,
    ) -> bytes:
        head = self._heads.get(symbol)
        if head is None:
            if len(self._heads) >= _FRAGMENT_LIMIT:
                self._heads.clear()
            head = self._heads[symbol] = b'{"symbol":' + _dumps(symbol) + b',"as_of":'
        day = self._days.get(as_of_day)
        if day is None:
            day = self._days[as_of_day] = _dumps(_iso(as_of_day))
        mid = self._statuses.get(status)
        if mid is None:
            mid = self._statuses[status] = (
                b',"status":'
                + _dumps(status)
                + b',"window_days":'
                + _dumps(self._w)
                + b',"alignment":'
                + _dumps(self._alignment)
                + b","
            )
        pos = self._positions.get(position)
        if pos is None:
            if len(self._positions) >= _FRAGMENT_LIMIT:
                self._positions.clear()
            pos = self._positions[position] = b',"position":' + _dumps(
                {
                    "spring_festival_date": _iso(position.spring_festival_day),
                    "days_to_spring_festival": position.days_to_spring_festival,
                    "relative_day": position.relative_day,
                    "in_window": position.in_window,
                    "phase": position.phase,
                }
            )
        if signal is None:
            sig = b',"signal":null,"bars_in_state":'
        else:
            sig = (
                b',"signal":'
                + _dumps(
                    {
                        "signal": signal.signal,
                        "strength": signal.strength,
                        "action": signal.action,
                        "volatility_warning": signal.volatility_warning,
                    }
                )
                + b',"bars_in_state":'
            )
        ref = b"null}" if input_ref is None else _dumps(input_ref, option=_OPT) + b"}"
        return b"".join(
            (head, day, mid, pattern_part, pos, sig, b"%d" % bars_in_state, self._version, ref)
        )


_FRAGMENT_LIMIT = 100_000  # symbols / positions remembered; bounds junk growth


# --- dead letters (SPEC 1) ---


def errors_file_record(reject: Reject, file: str, line: int) -> bytes:
    """One line of the replay errors file (no trailing newline)."""
    return _dumps(
        {
            "reason": reject.reason,
            "source": {"file": file, "line": line, "index": reject.array_index},
            "raw": reject.raw.decode("utf-8", errors="replace"),
        }
    )


def dead_letter_headers(
    reject: Reject, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Kafka headers of a dead-letter record; the value is `reject.raw`."""
    headers = [
        ("sfa.reason", reject.reason.encode()),
        ("sfa.source.topic", topic.encode()),
        ("sfa.source.partition", str(partition).encode()),
        ("sfa.source.offset", str(offset).encode()),
    ]
    if reject.array_index is not None:
        headers.append(("sfa.source.index", str(reject.array_index).encode()))
    return headers
