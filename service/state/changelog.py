"""Bytes of the durable state changelog (SPEC 7: per-symbol state survives a restart).

The Kafka service writes these records to a compacted topic in the same transaction as
a batch's results, so the topic always holds the state as of the last committed batch.
Compaction keeps the last value per key, hence one key per unit that changes on its own:

- `b"<symbol>/<year>"`: one festival window's bars. A batch rewrites only the windows
  it changed, so a record stays small (121 calendar-day bars ~ 1.5 KB) however long the
  symbol's history grows.
- `b"<symbol>/meta"`: latest(s) and the input partition, which move without any window
  changing (bars outside every window, or a newly arrived day in an open window's gap).

Symbols are `A-Za-z0-9._-` (SPEC 1), so `/` cannot occur inside one.

Values start with a format version byte and a kind byte, so a reader can refuse, or
migrate, records written by another version. Version 2 adds each bar's event stamp
(int64 ms, SPEC 1) after the closes, because a correction arriving after a restart must
be compared with the held bar's stamp. Migration rule: a version 1 window is read as
stamped 0 (the epoch), so any bar read after the upgrade replaces it, which is exactly
what version 1 did (the later arrival won); version 1 meta records read as they are.
Version 2 is written from now on, so compaction migrates the topic as windows change.
Window values carry the window size `W` they were cut with, so a restart with a
different `SFA_WINDOW_DAYS` can drop the bars that no longer fall inside the window
instead of silently mixing two window sizes.
Arrays are little-endian and restored with `np.frombuffer`: no per-bar Python objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from service.errors import SfaError

__all__ = [
    "FORMAT_VERSION",
    "MetaRecord",
    "StateRecordError",
    "WindowRecord",
    "decode_key",
    "decode_value",
    "encode_meta",
    "encode_window",
    "meta_key",
    "window_key",
]

FORMAT_VERSION = 2
_READABLE = (1, 2)

_KIND_WINDOW = ord("W")
_KIND_META = ord("M")
_META_SUFFIX = b"meta"
# version, kind, year, window_days, n_bars: 8 bytes, so the int32 days start aligned.
_WINDOW_HEADER = struct.Struct("<BBHHH")
# version, kind, 2 pad bytes, latest, partition.
_META = struct.Struct("<BBxxii")
_DAYS = np.dtype("<i4")
_CLOSES = np.dtype("<f8")
_STAMPS = np.dtype("<i8")


class StateRecordError(SfaError):
    """A changelog record that this version cannot read: restoring must not guess."""


@dataclass(frozen=True, slots=True, eq=False)
class WindowRecord:
    """One window's bars as written: `days` int32 ascending, `closes` float64, `stamps`
    int64 event stamps (all 0 in a version 1 record)."""

    year: int
    window_days: int
    days: np.ndarray
    closes: np.ndarray
    stamps: np.ndarray


@dataclass(frozen=True, slots=True)
class MetaRecord:
    """The per-symbol scalars: latest(s) as a day number, and the input partition (-1: files)."""

    latest: int
    partition: int


def window_key(symbol: str, year: int) -> bytes:
    return f"{symbol}/{year}".encode()


def meta_key(symbol: str) -> bytes:
    return symbol.encode() + b"/" + _META_SUFFIX


def decode_key(key: bytes) -> tuple[str, int | None]:
    """`(symbol, year)` for a window key, `(symbol, None)` for a meta key."""
    symbol, sep, tail = key.rpartition(b"/")
    if not sep or not symbol:
        raise StateRecordError(f"not a state key: {key!r}")
    if tail == _META_SUFFIX:
        return symbol.decode(), None
    if not tail.isdigit():
        raise StateRecordError(f"not a state key: {key!r}")
    return symbol.decode(), int(tail)


def encode_window(
    year: int,
    window_days: int,
    days: np.ndarray,
    closes: np.ndarray,
    stamps: np.ndarray | None = None,
    *,
    version: int = FORMAT_VERSION,
) -> bytes:
    """A window's value; `stamps` None means all 0. `version=1` (tests of the migration)
    writes the old layout, without stamps."""
    n = len(days)
    header = _WINDOW_HEADER.pack(version, _KIND_WINDOW, year, window_days, n)
    parts = [header, np.asarray(days, dtype=_DAYS).tobytes(), np.asarray(closes, _CLOSES).tobytes()]
    if version >= 2:
        stamped = np.zeros(n, _STAMPS) if stamps is None else np.asarray(stamps, _STAMPS)
        parts.append(stamped.tobytes())
    return b"".join(parts)


def encode_meta(latest: int, partition: int) -> bytes:
    return _META.pack(FORMAT_VERSION, _KIND_META, latest, partition)


def decode_value(value: bytes) -> WindowRecord | MetaRecord:
    """Parse a record value; anything malformed or from another version raises."""
    if len(value) < 2:
        raise StateRecordError(f"state record too short ({len(value)} bytes)")
    version, kind = value[0], value[1]
    if version not in _READABLE:
        raise StateRecordError(f"state record version {version}, this build reads {_READABLE}")
    if kind == _KIND_META:
        if len(value) != _META.size:
            raise StateRecordError(f"meta record of {len(value)} bytes, expected {_META.size}")
        _, _, latest, partition = _META.unpack(value)
        return MetaRecord(latest, partition)
    if kind != _KIND_WINDOW:
        raise StateRecordError(f"unknown state record kind {kind}")
    if len(value) < _WINDOW_HEADER.size:
        raise StateRecordError("window record shorter than its header")
    _, _, year, window_days, n = _WINDOW_HEADER.unpack_from(value)
    per_bar = _DAYS.itemsize + _CLOSES.itemsize + (_STAMPS.itemsize if version >= 2 else 0)
    expected = _WINDOW_HEADER.size + n * per_bar
    if len(value) != expected:
        raise StateRecordError(f"window record of {len(value)} bytes, expected {expected}")
    off = _WINDOW_HEADER.size
    days = np.frombuffer(value, dtype=_DAYS, count=n, offset=off)
    off += n * _DAYS.itemsize
    closes = np.frombuffer(value, dtype=_CLOSES, count=n, offset=off)
    off += n * _CLOSES.itemsize
    if version >= 2:
        stamps = np.frombuffer(value, dtype=_STAMPS, count=n, offset=off)
    else:
        stamps = np.zeros(n, dtype=np.int64)
    if n > 1 and not bool(np.all(days[1:] > days[:-1])):
        raise StateRecordError(f"window record of year {year}: days not strictly increasing")
    return WindowRecord(year, window_days, days, closes, stamps)
