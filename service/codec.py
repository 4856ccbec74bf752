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

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from service.calendar import day_to_date
from service.engine.types import ENGINE_VERSION, PatternResult, Position, Signal
from service.validate import check_bars

__all__ = [
    "MAX_ARRAY_BARS",
    "DecodedBatch",
    "Reject",
    "dead_letter_headers",
    "decode_batch",
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
    """Valid bars of a batch as columns (arrival order) plus the rejects."""

    symbols: list[str]
    days: np.ndarray  # int32 day numbers
    closes: np.ndarray  # float64
    message_index: np.ndarray  # int32: the message that carried each valid bar
    rejects: list[Reject]


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
    """Parse and validate a batch of message values; bad records become `Reject`s."""
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
    return DecodedBatch(checked.symbols, checked.days, checked.closes, message_index, rejects)


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
