"""File inputs for `sfa replay` and `sfa produce`: JSONL (optionally gzip), JSON arrays,
CSV, TSV, Parquet, Avro container files (`service.files.avrofile`).

Every format is turned into the same thing the Kafka path sees: one message value
per element, so decoding and validation (`service.decode`) are shared and a file
replay rejects exactly what the live service would. A bad record is never an error
here: it travels on as a message the decoder rejects, so it costs one dead letter
and nothing else. Only a file that cannot be read on (a truncated gzip, a corrupt
Parquet row group, an I/O error) stops, and then only that file: what it yielded
before stays yielded, and the break is a `FileFailure` (or, when the caller keeps
no list of failures, an `InputError`).

Decisions:

* The format comes from the name (`.parquet`, `.csv`, `.tsv`, `.json`, anything else
  JSONL, each optionally `.gz`); whether the bytes are gzip comes from the bytes.
* JSONL: a line holding only whitespace is blank and skipped; `\\r\\n` endings are fine;
  a UTF-8 byte order mark before line 1 is dropped (CSV drops it too).
* `.json`: one document, an array of bars (each element a message, its position the
  element's number from 1) or one bar; a file that is not one document is read as JSONL.
  A batch is at most `batch_lines` file lines; when all of them are clean objects it
  stays one newline-joined payload (`Batch.of_lines`), the cheapest thing to hand on.
* CSV: see `service.files.csvrows` (one broken line costs one dead letter).
* Parquet: only the bar columns are read (unknown fields are ignored, SPEC 1, so
  an extra column of any type costs nothing). Date columns of timestamp type are
  cast to dates; decimals to float64; a bar column of a type JSON cannot hold
  (bytes, a duration) becomes a string and so an `invalid_field`. A NaN is
  written as null, so a NaN close is `missing_field:close`. Positions are rows.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import IO, Any

import numpy as np
import orjson

from service.batches import Batch, FileOrigin
from service.errors import InputError
from service.files.avrofile import avro_records
from service.files.breaks import (
    READ_ERRORS,
    BrokenAt,
    FileFailure,
    is_gzip,
    is_url,
    open_binary,
    open_raw,
    read_chunk,
    reason,
)
from service.files.csvrows import KNOWN_COLUMNS, STRING_COLUMNS, csv_rows

__all__ = [
    "FileFailure",
    "KeyedMessage",
    "iter_keyed_bars",
    "jsonl_batches",
    "keyed_messages",
    "parquet_rows",
    "read_batches",
    "total_size_hint",
]

_CHUNK_BYTES = 4 << 20
_ROWS_PER_CHUNK = 5000
_first_byte = itemgetter(0)
_last_byte = itemgetter(-1)


def _kind(path: str) -> str:
    lower = path.lower().removesuffix(".gz")
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".avro"):
        return "avro"
    if lower.endswith(".tsv"):
        return "tsv"
    if lower.endswith(".json"):
        return "json"
    return "jsonl"


# --- one JSON document (.json) ---


def _json_document(path: str) -> Iterator[tuple[list[bytes], list[int]]] | None:
    """A `.json` file holding one document: an array of bars (pretty-printed, as
    `json.dump(bars, f, indent=2)` writes it), each element a message positioned by its
    index from 1, or a single bar object. None when the file is not one JSON document
    (JSONL named `.json`): it is then read as JSONL. The document is held in memory."""
    try:
        with open_binary(path) as f:
            data = f.read()
    except READ_ERRORS as exc:
        raise BrokenAt(1, exc) from exc
    try:
        document = orjson.loads(data.removeprefix(_BOM))
    except orjson.JSONDecodeError:
        return None
    elements = document if type(document) is list else [document]
    dumps = orjson.dumps
    values = [dumps(element) for element in elements]
    return iter([(values, list(range(1, len(values) + 1)))] if values else [])


# --- JSONL ---


_NEWLINE = ord("\n")
_BRACE = ord("{")
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark: Windows tools start text files with it


def _jsonl(path: str, batch_lines: int) -> Iterator[Batch[FileOrigin]]:
    with open_binary(path) as f:
        yield from jsonl_batches(f, path, batch_lines)


def jsonl_batches(
    f: IO[bytes], path: str, batch_lines: int, line: int = 0, file_start: bool | None = None
) -> Generator[Batch[FileOrigin], None, int]:
    """`batch_lines` file lines at a time, cut with one numpy pass per read chunk; `f`
    needs only `read1` (partitioned replay hands a byte range of the file, whose lines
    are then counted from `line`). Returns the number of the last line read (blank ones
    included), so a caller reading a range learns its line count without a rescan.
    `file_start` says whether `f` starts at the file's first byte (default: when
    counting from line 0), since only there may a byte order mark be dropped.

    Blank lines and CRs are dropped (see `_keep`); they only make a batch hold fewer
    messages, and then it is a list of values rather than a blob. When a read
    fails, the whole lines read before it are yielded, then `BrokenAt` the first
    line that was not read whole.
    """
    data = b""  # unconsumed bytes: whole lines, then maybe a partial one
    eof = False
    broken: BaseException | None = None
    first = line == 0 if file_start is None else file_start  # a BOM only starts a file
    while not eof:
        chunk, broken = read_chunk(f, _CHUNK_BYTES)
        if first:
            chunk, first = chunk.removeprefix(_BOM), False
        eof = not chunk or broken is not None
        data = data + chunk if data else chunk
        if broken is not None:
            data = data[: data.rfind(b"\n") + 1]  # a line cut short is not a record
        elif eof and data and not data.endswith(b"\n"):
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
    if broken is not None:
        raise BrokenAt(line + 1, broken)
    return line


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


# --- Parquet ---


def _as_text(value: Any) -> str:
    """orjson's fallback for a bar column JSON cannot hold: text, so it is rejected
    as an invalid field rather than failing the file."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _parquet(path: str) -> Iterator[tuple[list[bytes], list[int]]]:
    return parquet_rows(path)


def parquet_rows(
    path: str, row_groups: list[int] | None = None
) -> Iterator[tuple[list[bytes], list[int]]]:
    """Rows as messages with their row numbers (from 1); `row_groups` reads only those
    (partitioned replay: a block per row group, rows counted within it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(open_raw(path) if is_url(path) else path)
    except (OSError, pa.ArrowException) as exc:
        raise BrokenAt(0, exc) from exc
    wanted = [n for n in pf.schema_arrow.names if n in KNOWN_COLUMNS]
    row = 0
    dumps = orjson.dumps
    batches = pf.iter_batches(batch_size=_ROWS_PER_CHUNK, row_groups=row_groups, columns=wanted)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            columns = []
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                if name in STRING_COLUMNS and pa.types.is_timestamp(column.type):
                    column = column.cast(pa.date32())
                elif pa.types.is_decimal(column.type):
                    column = column.cast(pa.float64())
                columns.append(column)
            rows = pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise BrokenAt(row + 1, exc) from exc
        if not wanted:
            rows = [{} for _ in range(batch.num_rows)]
        yield [dumps(r, default=_as_text) for r in rows], list(range(row + 1, row + 1 + len(rows)))
        row += len(rows)


# --- public ---


def read_batches(
    paths: Sequence[str],
    batch_lines: int = 5000,
    failures: list[FileFailure] | None = None,
) -> Iterator[Batch[FileOrigin]]:
    """Messages of every file in order, `batch_lines` at a time (a batch never spans
    two files). Every path is checked before the first batch, so a typo in the last
    file fails at start rather than after an hour of replay.

    A file that breaks part way keeps what it yielded; with a `failures` list the
    break is appended there and the next file is read, otherwise `InputError`.
    """
    if batch_lines < 1:
        raise ValueError("batch_lines must be >= 1")
    for path in paths:
        if is_url(path):
            _check_url(path)
        elif not os.path.isfile(path) or not os.access(path, os.R_OK):
            reason = "no such file" if not os.path.exists(path) else "not a readable file"
            raise InputError(f"cannot read input file {path}: {reason}")
    return _batches(list(paths), batch_lines, failures)


def _check_url(path: str) -> None:
    """An fsspec URL names a file this process can open (fsspec's own reason if not)."""
    try:
        with open_raw(path) as fh:
            fh.read(1)
    except Exception as exc:  # fsspec backends raise OSError, ValueError, ImportError...
        raise InputError(f"cannot read input file {path}: {reason(exc)}") from None


def _batches(
    paths: list[str], batch_lines: int, failures: list[FileFailure] | None
) -> Iterator[Batch[FileOrigin]]:
    for path in paths:
        failure: FileFailure | None = None
        values: list[bytes] = []
        lines: list[int] = []
        try:
            kind = _kind(path)
            document = _json_document(path) if kind == "json" else None
            if kind in ("jsonl", "json") and document is None:
                yield from _jsonl(path, batch_lines)
            else:
                if document is not None:
                    rows = document
                elif kind == "parquet":
                    rows = _parquet(path)
                elif kind == "avro":
                    rows = avro_records(path, _ROWS_PER_CHUNK)
                else:
                    rows = csv_rows(path, "\t" if kind == "tsv" else None)
                for vs, ls in rows:
                    values.extend(vs)
                    lines.extend(ls)
                    while len(values) >= batch_lines:
                        origin = FileOrigin(path, lines=lines[:batch_lines])
                        yield Batch.of_values(values[:batch_lines], origin)
                        del values[:batch_lines], lines[:batch_lines]
        except BrokenAt as exc:
            failure = FileFailure(path, exc.line, reason(exc.cause))
        except InputError as exc:  # a CSV without a header
            failure = FileFailure(path, 0, reason(exc))
        except READ_ERRORS as exc:  # at open
            failure = FileFailure(path, 0, reason(exc))
        if values:
            yield Batch.of_values(values, FileOrigin(path, lines=lines))
        if failure is not None:
            if failures is None:
                raise InputError(failure.message())
            failures.append(failure)


def total_size_hint(paths: Sequence[str]) -> int:
    """Roughly the bytes of message values the files will yield (for progress bars):
    the file size, or for gzip the uncompressed size from its trailer."""
    total = 0
    for path in paths:
        try:
            size = os.path.getsize(path)
            if size >= 4 and is_gzip(path):
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


@dataclass(frozen=True, slots=True)
class KeyedMessage:
    """One message for `sfa produce`, with where it came from (to report a skip)."""

    key: bytes | None
    value: bytes
    file: str
    line: int


def keyed_messages(
    paths: Sequence[str], failures: list[FileFailure] | None = None
) -> Iterator[KeyedMessage]:
    """Every message with its key and position; broken files as in `read_batches`.

    The value is exactly as read (an array line stays one array message); the key
    is the bar's symbol, or the first element's for an array, else None. The key is
    what keeps a symbol on one partition.
    """
    for batch in read_batches(paths, failures=failures):
        origin = batch.origin
        for i, value in enumerate(batch.messages()):
            yield KeyedMessage(_key(value), value, origin.file, origin.line_of(i))


def iter_keyed_bars(paths: Sequence[str]) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per message, as `keyed_messages` without positions."""
    for m in keyed_messages(paths):
        yield m.key, m.value
