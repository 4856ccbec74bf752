"""Outputs are renamed into place only when a run ends, and never written over an input."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from service.errors import SfaError
from service.files.output import AtomicFile, atomic_output, refuse_overlaps


def test_the_target_appears_only_at_commit(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    out = AtomicFile(str(target))
    out.file.write(b"new\n")
    out.file.flush()
    assert target.read_bytes() == b"old\n"  # readers still see the previous file
    out.commit()
    assert target.read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_failure_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    with pytest.raises(RuntimeError), atomic_output(str(target)) as fh:
        fh.write(b"half")
        raise RuntimeError("the run failed")
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_mode_of_a_new_file_follows_the_umask_and_an_old_one_is_kept(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with atomic_output(str(tmp_path / "new")) as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o640
    kept = tmp_path / "kept"
    kept.write_bytes(b"")
    kept.chmod(0o604)
    with atomic_output(str(kept)) as fh:
        fh.write(b"x")
    assert kept.stat().st_mode & 0o777 == 0o604


def test_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    """Not renamed over: that would turn a device (/dev/null) into a plain file."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with atomic_output(str(fifo)) as fh:
        fh.write(b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"]
    assert fifo.is_fifo()


@pytest.mark.parametrize(
    "target", ["missing-dir/out.jsonl", "."], ids=["no such directory", "a directory"]
)
def test_an_unwritable_target_is_one_line(tmp_path: Path, target: str) -> None:
    path = str(tmp_path / target)
    with pytest.raises(SfaError, match=r"^cannot write .*") as info:
        AtomicFile(path)
    assert "\n" not in str(info.value)


def test_outputs_that_are_inputs_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "bars.jsonl"
    data.write_bytes(b"{}\n")
    (tmp_path / "sym").symlink_to(data)
    os.link(data, tmp_path / "hard")
    for alias in ["bars.jsonl", "sym", "hard", "./bars.jsonl"]:
        with pytest.raises(SfaError, match="is also an input file"):
            refuse_overlaps({"--output": str(tmp_path / alias)}, [str(data)])
    with pytest.raises(SfaError, match="name the same file"):
        refuse_overlaps({"--output": str(tmp_path / "a"), "--errors": str(tmp_path / "a")}, [])
    refuse_overlaps({"--output": "-", "--errors": ""}, [str(data)])
    refuse_overlaps({"--output": os.devnull, "--errors": os.devnull}, [str(data)])
    refuse_overlaps({"--output": str(tmp_path / "new.jsonl")}, [str(data)])
