"""CSV records as message values, one bad line never costing more than itself.

The first row must be a header naming at least one bar field (canonical or alias),
otherwise the file is taken to have no header. The delimiter is `,`, or the first of
`;`, tab and `|` under which a comma-less header names a bar field (a spreadsheet export
where the comma is the decimal mark); `.tsv` files use tabs. Symbol and date columns always stay
strings (`000001` must not become `1`); other cells that look like a JSON number
become numbers, empty cells null, everything else stays a string, so a bad close is
rejected as `invalid_field:close`. A record's line is the file line where it ends.

Why not `csv.reader` over the whole file: one non-UTF-8 byte fails the text
decoding of everything, and one stray quote opens a cell that swallows the rest of
the file. Here lines are decoded one by one, and a quoted cell may span lines only
within a record that has as many cells as the header and at most
`_MAX_RECORD_LINES` lines. A line that breaks those rules is handed on as its raw
bytes (not JSON, so the decoder dead-letters it as `invalid_json`) and reading
resumes on the line after it.
"""

from __future__ import annotations

import csv
import re
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

import orjson

from service.decode.rules import ALIASES
from service.errors import InputError
from service.files.breaks import READ_ERRORS, BrokenAt, open_binary, read_chunk

__all__ = ["KNOWN_COLUMNS", "STRING_COLUMNS", "csv_rows"]

_CHUNK_BYTES = 1 << 20
_ROWS_PER_CHUNK = 5000
_MAX_RECORD_LINES = 64  # a quoted cell may span lines, up to this many per record
STRING_COLUMNS = frozenset({"symbol", "stock_code", "date", "trade_date"})
KNOWN_COLUMNS = frozenset({*ALIASES, *ALIASES.values(), "volume"})
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


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


class _BadRecord(Exception):
    """The record being read cannot be one (not UTF-8, or spans too many lines)."""


class _Lines:
    """The file's lines as text for `csv.reader`, remembering the current record's.

    `taken` holds (line number, raw bytes) of every line the reader pulled for the
    record it is reading; lines pushed back to `pending` are served again first,
    so after a bad record the reader can resume on the line after its first.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._ready: deque[bytes] = deque()
        self._rest = b""
        self._eof = False
        self._error: BaseException | None = None
        self.line = 0  # lines read from the file
        self.pending: deque[tuple[int, bytes]] = deque()
        self.taken: list[tuple[int, bytes]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if len(self.taken) >= _MAX_RECORD_LINES:
            raise _BadRecord
        if self.pending:
            number, raw = self.pending.popleft()
        else:
            raw = self._next_raw()
            self.line += 1
            number = self.line
        self.taken.append((number, raw))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadRecord from None

    def _next_raw(self) -> bytes:
        """The next whole line (with its newline); a read error once those run out."""
        while not self._ready:
            if self._error is not None:
                raise self._error
            if self._eof:
                if self._rest:  # the last line has no newline
                    rest, self._rest = self._rest, b""
                    return rest
                raise StopIteration
            chunk, error = read_chunk(self._f, _CHUNK_BYTES)
            parts = (self._rest + chunk).split(b"\n")
            self._rest = parts.pop()
            self._ready.extend(p + b"\n" for p in parts)
            if error is not None:
                self._error = error
                self._rest = b""  # cut short by the error: not a line
            elif not chunk:
                self._eof = True
        return self._ready.popleft()

    def restart_after_first(self) -> tuple[int, bytes]:
        """The current record's first line (to hand on as bad); the rest read again."""
        first, rest = self.taken[0], self.taken[1:]
        self.pending.extendleft(reversed(rest))
        self.taken = []
        return first


def _one_record(row: list[str], taken: list[tuple[int, bytes]], width: int, delimiter: str) -> bool:
    """Whether a record read over several lines really is one (a quoted cell holding
    newlines) rather than a stray quote that paired with a later one: it has the
    header's width, and no line inside it would be a whole plain row on its own."""
    if len(row) != width:
        return False
    sep = delimiter.encode()
    return not any(b'"' not in raw and raw.count(sep) == width - 1 for _, raw in taken[1:])


# Tried in order on a header that names no bar field when split on commas: the usual
# separators of spreadsheet exports in locales where the comma is the decimal mark.
_OTHER_DELIMITERS = (";", "\t", "|")


def _names(cells: list[str]) -> list[str]:
    return [h.strip().lstrip("\ufeff") for h in cells]


def _header(cells: list[str] | None, delimiter: str | None) -> tuple[list[str], str]:
    """The column names and the delimiter: `delimiter`, or the first of `,` and
    `_OTHER_DELIMITERS` under which the header names a bar field."""
    names = _names(cells) if cells else []
    if delimiter is not None or KNOWN_COLUMNS.intersection(names) or len(names) != 1:
        return names, delimiter or ","
    for other in _OTHER_DELIMITERS:
        split = _names(next(csv.reader([names[0]], delimiter=other)))
        if KNOWN_COLUMNS.intersection(split):
            return split, other
    return names, ","


def csv_rows(path: str, delimiter: str | None = None) -> Iterator[tuple[list[bytes], list[int]]]:
    """Records of a CSV (`delimiter` None: `,`, or `;`, tab or `|` when the header says
    so) or TSV (`delimiter="\\t"`) file as message values with their lines."""
    with open_binary(path) as f:
        feed = _Lines(f)
        try:
            header = next(csv.reader(feed, delimiter=delimiter or ","), None)
        except (_BadRecord, csv.Error):
            header = None
        names, delimiter = _header(header, delimiter)
        if not KNOWN_COLUMNS.intersection(names):
            shown = ",".join(names)[:80]
            raise InputError(
                "no header row naming a bar field (expected column names such as "
                f"symbol,date,close; the first row is {shown!r})"
            )
        keep_str = [n in STRING_COLUMNS for n in names]
        dumps = orjson.dumps
        values: list[bytes] = []
        lines: list[int] = []
        reader = csv.reader(feed, delimiter=delimiter)
        while True:
            feed.taken = []
            try:
                row = next(reader)
                good = len(feed.taken) == 1 or _one_record(row, feed.taken, len(names), delimiter)
            except StopIteration:
                break
            except (_BadRecord, csv.Error):
                good = False
            except READ_ERRORS as exc:
                if values:
                    yield values, lines
                raise BrokenAt(feed.taken[0][0] if feed.taken else feed.line + 1, exc) from exc
            if not good:
                number, raw = feed.restart_after_first()
                values.append(raw.rstrip(b"\r\n"))  # not JSON: the decoder dead-letters it
                lines.append(number)
                reader = csv.reader(feed, delimiter=delimiter)  # the old one is mid-record
            elif row and (len(row) > 1 or row[0].strip()):  # else a blank line
                record = {
                    name: (cell or None) if as_str else _cell(cell.strip())
                    for name, cell, as_str in zip(names, row, keep_str, strict=False)
                }
                values.append(dumps(record))
                lines.append(feed.taken[-1][0])
            if len(values) >= _ROWS_PER_CHUNK:
                yield values, lines
                values, lines = [], []
        if values:
            yield values, lines
