"""The exact decoding path: orjson and the SPEC 1 rules, message by message in effect.

It decides every reason code. A batch is parsed with a single `orjson.loads` over
`[m0,m1,...]` whenever that provably gives the same values as parsing each message
alone (see `_parse_joined`), and validated column-wise (`service.decode.columns`).
Anything unusual in a batch (a too-large message, an array message, broken JSON)
sends that batch down the plain per-message path, which gives the same answers, only
slower.

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
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from service.decode.columns import check_bars
from service.decode.types import Reject

__all__ = ["MAX_ARRAY_BARS", "decode_values"]

MAX_ARRAY_BARS = 10_000

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
_first_byte = itemgetter(0)


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
    return parsed if len(parsed) == n else None


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


def decode_values(
    values: Sequence[bytes], max_message_bytes: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[Reject]]:
    """The exact path: orjson and the SPEC 1 rules, message by message in effect.

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
