"""Where a file stops being readable, and how that is told to a user.

A reader that cannot go on raises `BrokenAt` with the first line it could not
read, after yielding everything before it; `service.files.readers` turns that into
a `FileFailure` (kept in a list, so the other inputs are still read) or, for a
caller that keeps no list, an `InputError`. The reason is in words, never a
library's internal text.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import IO

from service.errors import InputError

__all__ = [
    "READ_ERRORS",
    "BrokenAt",
    "FileFailure",
    "is_gzip",
    "open_binary",
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


def is_gzip(path: str) -> bool:
    """Whether the file's bytes are gzip, whatever its name says."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def open_binary(path: str) -> IO[bytes]:
    """The file's bytes, decompressed when they are gzip. The bytes decide, not the
    name: gzip data without `.gz` was read as 329 lines of binary (every one a dead
    letter, and `sfa produce` sent them on), and plain text named `.gz` is read as
    text (`gzip -dcf` does the same)."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


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
