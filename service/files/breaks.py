"""Where a file stops being readable, and how that is told to a user.

A reader that cannot go on raises `BrokenAt` with the first line it could not
read, after yielding everything before it; `service.files.readers` turns that into
a `FileFailure` (kept in a list, so the other inputs are still read) or, for a
caller that keeps no list, an `InputError`. The reason is in words, never a
library's internal text.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass
from typing import IO

from service.errors import InputError

__all__ = [
    "READ_ERRORS",
    "BrokenAt",
    "FileFailure",
    "is_gzip",
    "is_url",
    "open_binary",
    "open_raw",
    "read_chunk",
    "reason",
]

# What reading a file on can raise (gzip.BadGzipFile is an OSError).
READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True, slots=True)
class FileFailure:
    """A file that could not be read to its end: where it broke, and why in words.

    `line` is the first line (Parquet: row) not read; everything before it was
    yielded. 0 when the file could not be read at all.
    """

    file: str
    line: int
    reason: str

    def message(self) -> str:
        if self.line <= 1:
            return f"input file {self.file} not read: {self.reason}"
        return (
            f"input file {self.file} broken at line {self.line}: {self.reason} "
            f"(the {self.line - 1} line(s) before it were read)"
        )


class BrokenAt(Exception):
    """A reader could not go on at `line` (what came before is already yielded)."""

    def __init__(self, line: int, cause: BaseException) -> None:
        super().__init__(line, cause)
        self.line = line
        self.cause = cause


def reason(exc: BaseException) -> str:
    """Words for a user, not a library's internals."""
    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, EOFError):
        return "the compressed data ends early (truncated file?)"
    if isinstance(exc, gzip.BadGzipFile):
        return "not a gzip file"
    if isinstance(exc, zlib.error):
        return "corrupt compressed data"
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return str(strerror)
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "") or type(exc).__name__


_GZIP_MAGIC = b"\x1f\x8b"


def is_url(path: str) -> bool:
    """An fsspec URL (`s3://bucket/key`, `file:///data/bars.jsonl`) rather than a path."""
    return "://" in path


def open_raw(path: str) -> IO[bytes]:
    """The bytes as stored (no decompression), seekable; a path or an fsspec URL."""
    if is_url(path):
        from fsspec.core import url_to_fs

        fs, inner = url_to_fs(path)
        # fsspec's remote files (s3fs, gcsfs: AbstractBufferedFile) have no `read1`,
        # which `read_chunk` needs; a BufferedReader over their `readinto` adds it.
        return io.BufferedReader(fs.open(inner, "rb"))
    return open(path, "rb")


def is_gzip(path: str) -> bool:
    """Whether the bytes are gzip, whatever the name says (a path or an fsspec URL)."""
    with open_raw(path) as f:
        return f.read(2) == _GZIP_MAGIC


class _GzipOf(gzip.GzipFile):
    """A gzip stream over a file it owns: closing it closes that file too (GzipFile
    leaves a `fileobj` it was given open)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def open_binary(path: str) -> IO[bytes]:
    """The content, decompressed when the bytes are gzip; a path or an fsspec URL, which
    the partitioned replay's workers read where the driver may see no file at all.

    The bytes decide, not the name: gzip data without `.gz` was read as 329 lines of
    binary (every one a dead letter, and `sfa produce` sent them on), and plain text
    named `.gz` is read as text (`gzip -dcf` does the same).
    """
    if is_gzip(path):
        if is_url(path):
            return _GzipOf(open_raw(path))  # type: ignore[return-value]
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open_raw(path)


def read_chunk(f: IO[bytes], size: int) -> tuple[bytes, BaseException | None]:
    """Up to `size` bytes, and the error that stopped the read, if one did.

    `read1` pieces, so a gzip stream that breaks part way still gives everything
    decompressed before the break (a plain `read(size)` would drop it).
    """
    pieces: list[bytes] = []
    got = 0
    try:
        while got < size:
            piece = f.read1(size - got)  # type: ignore[attr-defined]
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
    except READ_ERRORS as exc:
        return b"".join(pieces), exc
    return b"".join(pieces), None
