"""File inputs for `sfa replay` and `sfa produce`: JSONL (optionally gzip), CSV, Parquet.

Every format is turned into the same thing the Kafka path sees: one message value
per element, so decoding and validation (`service.decode`) are shared and a file
replay rejects exactly what the live service would. A bad record is never an error
here; only a file that cannot be read at all raises `InputError`.

Decisions:

* JSONL: a line holding only whitespace is blank and skipped; `\\r\\n` endings are fine.
  A batch is at most `batch_lines` file lines; when all of them are clean objects it
  stays one newline-joined payload (`Batch.of_lines`), the cheapest thing to hand on.
* CSV: the first row must be a header naming at least one bar field (canonical or
  alias), otherwise the file is taken to have no header. Symbol and date columns
  always stay strings (`000001` must not become `1`); other cells that look like a
  JSON number become numbers, empty cells null, everything else stays a string, so
  a bad close is rejected as `invalid_field:close`. A record's line is the file
  line where it ends (a quoted cell may span lines).
* Parquet: date columns of timestamp type are cast to dates; decimals to float64.
  A NaN is written as null, so a NaN close is `missing_field:close`.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import IO, Any

import numpy as np
import orjson

from service.batches import Batch, FileOrigin
from service.decode.rules import ALIASES
from service.errors import InputError

__all__ = ["iter_keyed_bars", "read_batches", "total_size_hint"]

_CHUNK_BYTES = 4 << 20
_ROWS_PER_CHUNK = 5000
_first_byte = itemgetter(0)
_last_byte = itemgetter(-1)
_STRING_COLUMNS = frozenset({"symbol", "stock_code", "date", "trade_date"})
_KNOWN_COLUMNS = frozenset({*ALIASES, *ALIASES.values(), "volume"})
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith((".csv", ".csv.gz")):
        return "csv"
    return "jsonl"


def _open_binary(path: str) -> IO[bytes]:
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _fail(path: str, exc: BaseException) -> InputError:
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return InputError(f"cannot read input file {path}: {detail}")


# --- JSONL ---


_NEWLINE = ord("\n")
_BRACE = ord("{")


def _jsonl(path: str, batch_lines: int) -> Iterator[Batch]:
    """`batch_lines` file lines at a time, cut with one numpy pass per read chunk.

    Blank lines and CRs are dropped (see `_keep`); they only make a batch hold fewer
    messages, and then it is a list of values rather than a blob.
    """
    with _open_binary(path) as f:
        data = b""  # unconsumed bytes: whole lines, then maybe a partial one
        line = 0  # file lines before `data`
        eof = False
        while not eof:
            chunk = f.read(_CHUNK_BYTES)
            eof = not chunk
            data = data + chunk if data else chunk
            if eof and data and not data.endswith(b"\n"):
                data += b"\n"  # the last line has no newline
            raw = np.frombuffer(data, dtype=np.uint8)
            ends = np.flatnonzero(raw == _NEWLINE)
            start = done = 0
            while len(ends) - done >= batch_lines or (eof and done < len(ends)):
                take = min(batch_lines, len(ends) - done)
                inner = ends[done : done + take - 1]
                end = int(ends[done + take - 1])
                region = data[start:end]
                clean = (
                    raw[start] == _BRACE
                    and bool((raw[inner + 1] == _BRACE).all())
                    and b"\r" not in region
                )
                if clean:
                    yield Batch.of_lines(region, take, FileOrigin(path, line + done + 1))
                else:
                    values, lines = _keep(region.split(b"\n"), line + done)
                    if values:
                        yield Batch.of_values(values, FileOrigin(path, lines=lines))
                start, done = end + 1, done + take
            data = data[start:]
            line += done


def _keep(parts: list[bytes], line: int) -> tuple[list[bytes], list[int]]:
    """Drop blank lines (empty or only spaces/tabs) and trailing CRs.

    When no part is empty, starts with a space or tab, or ends with a CR (lines that
    are arrays, say), C-level passes prove it and no per-line Python work is needed.
    """
    if all(parts):
        firsts = bytes(map(_first_byte, parts))
        if (
            b" " not in firsts
            and b"\t" not in firsts
            and b"\r" not in bytes(map(_last_byte, parts))
        ):
            return parts, list(range(line + 1, line + 1 + len(parts)))
    values: list[bytes] = []
    lines: list[int] = []
    for i, p in enumerate(parts, line + 1):
        if p.endswith(b"\r"):
            p = p[:-1]
        if p.strip(b" \t"):
            values.append(p)
            lines.append(i)
    return values, lines


# --- CSV ---


def _cell(value: str) -> Any:
    if not value:
        return None
    if _NUMBER_RE.fullmatch(value):
        if "." not in value and "e" not in value and "E" not in value:
            return int(value)
        number = float(value)
        if number - number == 0.0:  # finite: inf would be written as null
            return number
    return value


def _csv(path: str) -> Iterator[tuple[list[bytes], list[int]]]:
    with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        names = [h.strip().lstrip("\ufeff") for h in header] if header else []
        if not _KNOWN_COLUMNS.intersection(names):
            raise InputError(
                f"input file {path} has no CSV header row "
                "(expected column names such as symbol,date,close)"
            )
        keep_str = [n in _STRING_COLUMNS for n in names]
        dumps = orjson.dumps
        values: list[bytes] = []
        lines: list[int] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            record = {
                name: (cell or None) if as_str else _cell(cell.strip())
                for name, cell, as_str in zip(names, row, keep_str, strict=False)
            }
            values.append(dumps(record))
            lines.append(reader.line_num)
            if len(values) >= _ROWS_PER_CHUNK:
                yield values, lines
                values, lines = [], []
        if values:
            yield values, lines


# --- Parquet ---


def _parquet(path: str) -> Iterator[tuple[list[bytes], list[int]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise _fail(path, exc) from exc
    row = 0
    dumps = orjson.dumps
    for batch in pf.iter_batches(batch_size=_ROWS_PER_CHUNK):
        columns = []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if name in _STRING_COLUMNS and pa.types.is_timestamp(column.type):
                column = column.cast(pa.date32())
            elif pa.types.is_decimal(column.type):
                column = column.cast(pa.float64())
            columns.append(column)
        rows = pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pylist()
        yield [dumps(r) for r in rows], list(range(row + 1, row + 1 + len(rows)))
        row += len(rows)


# --- public ---


def read_batches(paths: Sequence[str], batch_lines: int = 5000) -> Iterator[Batch]:
    """Messages of every file in order, `batch_lines` at a time (a batch never spans
    two files). Every path is checked before the first batch, so a typo in the last
    file fails at start rather than after an hour of replay."""
    if batch_lines < 1:
        raise ValueError("batch_lines must be >= 1")
    for path in paths:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            reason = "no such file" if not os.path.exists(path) else "not a readable file"
            raise InputError(f"cannot read input file {path}: {reason}")
    return _batches(list(paths), batch_lines)


def _batches(paths: list[str], batch_lines: int) -> Iterator[Batch]:
    readers = {"csv": _csv, "parquet": _parquet}
    for path in paths:
        values: list[bytes] = []
        lines: list[int] = []
        try:
            kind = _kind(path)
            if kind == "jsonl":
                yield from _jsonl(path, batch_lines)
                continue
            for vs, ls in readers[kind](path):
                values.extend(vs)
                lines.extend(ls)
                while len(values) >= batch_lines:
                    origin = FileOrigin(path, lines=lines[:batch_lines])
                    yield Batch.of_values(values[:batch_lines], origin)
                    del values[:batch_lines], lines[:batch_lines]
        except InputError:
            raise
        except (OSError, EOFError, UnicodeDecodeError, zlib.error, csv.Error) as exc:
            raise _fail(path, exc) from exc
        if values:
            yield Batch.of_values(values, FileOrigin(path, lines=lines))


def total_size_hint(paths: Sequence[str]) -> int:
    """Roughly the bytes of message values the files will yield (for progress bars):
    the file size, or for gzip the uncompressed size from its trailer."""
    total = 0
    for path in paths:
        try:
            size = os.path.getsize(path)
            if path.lower().endswith(".gz") and size >= 4:
                with open(path, "rb") as f:
                    f.seek(-4, os.SEEK_END)
                    size = struct.unpack("<I", f.read(4))[0]
        except OSError:
            continue
        total += size
    return total


def _key(value: bytes) -> bytes | None:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is list:
        obj = obj[0] if obj else None
    if type(obj) is not dict:
        return None
    symbol = obj.get("symbol")
    if symbol is None:
        symbol = obj.get("stock_code")
    return symbol.encode() if type(symbol) is str and symbol else None


def iter_keyed_bars(paths: Sequence[str]) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per message for `sfa produce`: the value exactly as read (an array
    line stays one array message); the key is the bar's symbol, or the first element's
    for an array, else None. The key is what keeps a symbol on one partition."""
    for batch in read_batches(paths):
        for value in batch.messages():
            yield _key(value), value
