"""Results and dead letters -> bytes: SPEC 6 result objects, SPEC 1 dead-letter records.

Encoding is per emitted result, so the hot part (`ResultEncoder`) splices cached
fragments rather than dumping a dict per result; `encode_result` is the plain
reference it is checked against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from service.calendar import day_to_date
from service.decode.types import Reject
from service.engine.types import ENGINE_VERSION, PatternResult, Position, Signal

__all__ = [
    "ResultEncoder",
    "dead_letter_headers",
    "encode_pattern_part",
    "encode_result",
    "errors_file_record",
]

_dumps = orjson.dumps

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
                "window_day": position.window_day,
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
        return self.splice(
            symbol,
            as_of_day,
            status,
            pattern_part,
            self.position_part(position),
            self.signal_part(signal),
            bars_in_state,
            input_ref,
        )

    def position_part(self, position: Position) -> bytes:
        """`,"position":{...}`; cached, since a batch's symbols share a few as_of days."""
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
                    "window_day": position.window_day,
                }
            )
        return pos

    @staticmethod
    def signal_part(signal: Signal | None) -> bytes:
        """`,"signal":...,"bars_in_state":`: callers cache it per (pattern, phase)."""
        if signal is None:
            return b',"signal":null,"bars_in_state":'
        return (
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

    def splice(
        self,
        symbol: str,
        as_of_day: int,
        status: str,
        pattern_part: bytes,
        position_part: bytes,
        signal_part: bytes,
        bars_in_state: int,
        input_ref: dict[str, Any] | None,
    ) -> bytes:
        """One result from its cached fragments: the per-result work is a join."""
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
        ref = b"null}" if input_ref is None else _dumps(input_ref, option=_OPT) + b"}"
        return b"".join(
            (
                head,
                day,
                mid,
                pattern_part,
                position_part,
                signal_part,
                b"%d" % bars_in_state,
                self._version,
                ref,
            )
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
