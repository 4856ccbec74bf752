"""Output files that are never left half written, and never written over an input.

A command writes to a temporary file beside its target and renames it into place
only when the run ends (`AtomicFile.commit`), so an interrupted or failed run
leaves an existing file exactly as it was, and a reader never sees half a file.
The rename is atomic because both names are in one directory (one file system).
A symlinked target stays a symlink: the file it points to is the one replaced.
A target that exists and is not a regular file (a device such as /dev/null, a FIFO)
is written in place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from service.errors import SfaError

__all__ = ["AtomicFile", "atomic_output", "refuse_overlaps"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFile:
    """`file` is the temporary file; `commit()` renames it onto `path`, `discard()`
    removes it. Opening fails with one line when the target cannot be written."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._target = os.path.realpath(path)
        if os.path.isdir(self._target):
            raise SfaError(f"cannot write {path}: it is a directory")
        directory, name = os.path.split(self._target)
        self._done = False
        try:
            st = os.stat(self._target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise SfaError(f"cannot write {path}: {exc.strerror}") from None
        self._temp: str | None = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            # A device, a FIFO, /dev/stdout: written in place; renaming over it would
            # replace the device node with a plain file.
            try:
                self.file: IO[bytes] = open(self._target, "wb")  # noqa: SIM115
            except OSError as exc:
                raise SfaError(f"cannot write {path}: {exc.strerror}") from None
            return
        mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
        try:
            fd, self._temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        except OSError as exc:
            raise SfaError(f"cannot write {path}: {exc.strerror}") from None
        os.fchmod(fd, mode)
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        """Everything written is on disk under the target's name, or one-line error."""
        if self._done:
            return
        try:
            self.file.flush()
            if self._temp is not None:
                os.fsync(self.file.fileno())
            self.file.close()
            if self._temp is not None:
                os.replace(self._temp, self._target)
            self._done = True
        except OSError as exc:
            self.discard()
            raise SfaError(f"cannot write {self.path}: {exc.strerror}") from None

    def discard(self) -> None:
        """Remove the temporary file; the target stays as it was (a no-op after commit)."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self.file.close()
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[IO[bytes]]:
    """The temporary file; renamed into place when the block ends normally, removed
    when it raises (a write error becomes one line naming the file)."""
    out = AtomicFile(path)
    try:
        yield out.file
    except OSError as exc:
        out.discard()
        raise SfaError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        out.discard()
        raise
    out.commit()


def _special(path: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links and symlinks included
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_overlaps(outputs: dict[str, str], inputs: Iterable[str]) -> None:
    """One line, before anything runs, when an output (`{flag: path}`) is one of the
    inputs or another output: writing it would destroy what is being read."""
    named = [
        (flag, path)
        for flag, path in outputs.items()
        if path and path != "-" and not _special(path)  # /dev/null twice is fine
    ]
    for flag, path in named:
        for source in inputs:
            if _same(path, source):
                raise SfaError(f"{flag} {path} is also an input file; refusing to write over it")
    for i, (flag, path) in enumerate(named):
        for other_flag, other in named[i + 1 :]:
            if _same(path, other):
                raise SfaError(f"{flag} and {other_flag} name the same file {path}")
