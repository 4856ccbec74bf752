"""The repartition topic's record format (SPEC 7): many forwarded bars per record, as columns.

The topic is internal, so the format is ours. A batch forwards each destination
partition's bars as one record (or a few, `MAX_BARS_PER_RECORD` each, so a record fits
the broker's default `message.max.bytes` of 1 MB whatever the symbols' length), and the
owner decodes a record with a few `numpy.frombuffer` calls instead of parsing one JSON
bar per message. docs/reference.md describes it for operators.

Version 1, little-endian:

    header  "<4sBBHII": magic b"\\xffSFA", version 1, flags 0, len(topic), n bars, k symbols
    topic   the source topic the bars were read from (UTF-8)
    lengths k x u8: each symbol's length; then the k symbols (ASCII, SPEC 1's alphabet)
    padding zero bytes up to a multiple of 8
    columns n x f8 close, n x i8 timestamp (ms), n x i8 source offset,
            n x i4 day (days since 1970-01-01), n x i4 symbol code (into the k symbols),
            n x i4 source partition, n x i4 ordinal (the bar's place among its source
            message's valid bars: read order inside an array)

Each bar keeps its original timestamp (SPEC 1's event order), its read position and its
read order, in the order it was read. A record that is not exactly this (truncated,
corrupted, another version) raises `InvalidForward`: the caller dead-letters it whole
(`invalid_forward`). A record starting with anything but the magic is version 0, one
JSON bar as the service wrote before version 1 (`is_columnar` tells them apart), so a
rolling upgrade loses nothing in flight.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from service.calendar import FIRST_BAR_DAY, LAST_BAR_DAY
from service.decode.rules import symbol_ok

__all__ = [
    "MAGIC",
    "MAX_BARS_PER_RECORD",
    "VERSION",
    "ForwardedBars",
    "InvalidForward",
    "decode_record",
    "encode_record",
    "is_columnar",
]

MAGIC = b"\xffSFA"  # 0xff never starts UTF-8 JSON, nor the Confluent wire format (0x00)
VERSION = 1
#: 40 bytes of columns a bar, plus at most 33 of symbol table: 6,000 bars stay under 450 kB.
MAX_BARS_PER_RECORD = 6000
_HEADER = struct.Struct("<4sBBHII")
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("closes", "<f8"),
    ("stamps", "<i8"),
    ("offsets", "<i8"),
    ("days", "<i4"),
    ("codes", "<i4"),
    ("partitions", "<i4"),
    ("ordinals", "<i4"),
)
_BAR_BYTES = sum(np.dtype(t).itemsize for _, t in _COLUMNS)


class InvalidForward(ValueError):
    """A repartition record this version cannot read."""


@dataclass(frozen=True, slots=True)
class ForwardedBars:
    """The bars of one record, columns in read order; `uniques[codes[i]]` is bar i's symbol."""

    topic: str
    uniques: list[str]
    codes: np.ndarray
    days: np.ndarray
    closes: np.ndarray
    stamps: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray
    ordinals: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)


def is_columnar(value: bytes) -> bool:
    """Version 1 or later (the magic); anything else is a version-0 JSON bar."""
    return value[:4] == MAGIC


def encode_record(bars: ForwardedBars) -> bytes:
    """One record of `bars` (at most `MAX_BARS_PER_RECORD`; the caller splits)."""
    n, k = len(bars), len(bars.uniques)
    topic = bars.topic.encode()
    names = [s.encode() for s in bars.uniques]
    head = b"".join(
        [
            _HEADER.pack(MAGIC, VERSION, 0, len(topic), n, k),
            topic,
            bytes(len(s) for s in names),
            *names,
        ]
    )
    parts = [head, bytes(-len(head) % 8)]
    parts += [np.ascontiguousarray(getattr(bars, name), dtype=t).tobytes() for name, t in _COLUMNS]
    return b"".join(parts)


def decode_record(value: bytes) -> ForwardedBars:
    """The bars of a version-1 record; `InvalidForward` for anything else."""
    if len(value) < _HEADER.size:
        raise InvalidForward("shorter than the header")
    magic, version, _flags, topic_len, n, k = _HEADER.unpack_from(value)
    if magic != MAGIC:
        raise InvalidForward("no magic")
    if version != VERSION:
        raise InvalidForward(f"version {version}, this service reads {VERSION}")
    at = _HEADER.size
    topic_end = at + topic_len
    lengths = value[topic_end : topic_end + k]
    names_end = topic_end + k + sum(lengths)
    start = names_end + (-names_end % 8)
    if len(lengths) != k or len(value) != start + n * _BAR_BYTES:
        raise InvalidForward(f"{len(value)} bytes do not hold {n} bars of {k} symbols")
    try:
        topic = value[at:topic_end].decode()
        uniques: list[str] = []
        pos = topic_end + k
        for length in lengths:
            uniques.append(value[pos : pos + length].decode("ascii"))
            pos += length
    except UnicodeDecodeError as exc:
        raise InvalidForward(f"not text: {exc}") from None
    columns: dict[str, np.ndarray] = {}
    for name, t in _COLUMNS:
        column = np.frombuffer(value, dtype=t, count=n, offset=start)
        columns[name] = column.astype(t[1:], copy=False)
        start += column.nbytes
    _check(uniques, columns, n)
    return ForwardedBars(topic=topic, uniques=uniques, **columns)


def _check(uniques: list[str], c: dict[str, np.ndarray], n: int) -> None:
    """What the sender guaranteed (SPEC 1's rules held when it read the bars): anything
    else is corruption, and the whole record is refused rather than half applied."""
    if not all(symbol_ok(s) for s in uniques):
        raise InvalidForward("a symbol outside SPEC 1's alphabet")
    if n == 0:
        return
    codes, days, closes = c["codes"], c["days"], c["closes"]
    if codes.min() < 0 or codes.max() >= len(uniques):
        raise InvalidForward("a symbol code out of range")
    if days.min() < FIRST_BAR_DAY or days.max() > LAST_BAR_DAY:
        raise InvalidForward("a day out of SPEC 1's range")
    if not (np.isfinite(closes).all() and (closes > 0).all()):
        raise InvalidForward("a close that is not finite and positive")
    if c["partitions"].min() < 0 or c["offsets"].min() < 0 or c["ordinals"].min() < 0:
        raise InvalidForward("a negative read position")
