"""One block on a worker: read, decode with the SPEC 1 rules, split the bars by owner.

The reading and decoding are the single-process replay's own (`service.files.readers`,
`service.decode`), so a block rejects exactly what a replay would, for the same reasons.
What comes back is plain data keyed for Dask's `getitem`: `"meta"` (counts, dead letters
with block-relative lines, a break), `"status"` (what an owner needs to know about the
block: its file and whether the file broke in it) and one `Piece` per owner partition,
so each owner task fetches only its own columns from whichever worker read the block.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from service.batches import Batch, FileOrigin
from service.decode.batch import decode_batch, decode_lines
from service.files.breaks import BrokenAt, FileFailure, open_raw, reason
from service.files.readers import jsonl_batches, parquet_rows, read_batches
from service.ownership import owner
from service.partitioned.plan import Block

__all__ = ["BlockOutput", "BlockStatus", "Piece", "read_block"]

RejectRow = tuple[int, int | None, str, bytes]  # line in the block, array index, reason, raw


@dataclass(frozen=True, slots=True)
class Piece:
    """One owner partition's valid bars of one block, in file order; bar i is
    `uniques[codes[i]]` and every unique is used (what `StateStore.apply_codes` takes)."""

    codes: np.ndarray  # int32
    uniques: list[str]
    days: np.ndarray  # int32
    closes: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True, slots=True)
class BlockStatus:
    """What an owner must know of a block to apply it as the single-process replay would:
    a file that broke in this block is not read past it."""

    file_index: int
    broken: bool


@dataclass(frozen=True, slots=True)
class BlockOutput:
    """A block's counts and dead letters; lines count from the block's first line (1),
    `n_lines` is how many lines it held (the driver numbers the next block from it)."""

    index: int
    file_index: int
    path: str
    n_lines: int
    n_messages: int
    n_bars: int
    n_bytes: int
    rejects: list[RejectRow]
    failure: FileFailure | None  # line relative to the block, as `rejects`


class _Range(io.RawIOBase):
    """Bytes [start, end) of an open file, with `read1` (what the JSONL reader calls)."""

    def __init__(self, f: IO[bytes], start: int, end: int) -> None:
        super().__init__()
        f.seek(start)
        self._f = f
        self._left = end - start

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size < 0 else min(size, self._left)
        piece = self._f.read(want)
        self._left -= len(piece)
        return piece


def _snap(f: IO[bytes], pos: int, size: int) -> int:
    """The first line start at or after `pos` (a line belongs to the block holding its
    first byte)."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    f.seek(pos - 1)
    return pos - 1 + len(f.readline())


def _range_batches(block: Block, batch_lines: int, counter: list[int]) -> Any:
    assert block.end is not None
    with open_raw(block.path) as f:
        size = f.seek(0, io.SEEK_END)
        start = _snap(f, block.start, size)
        end = _snap(f, block.end, size)
        region = _Range(f, start, end)
        lines = yield from jsonl_batches(
            region,  # type: ignore[arg-type]
            block.path,
            batch_lines,
            file_start=start == 0,
        )
        counter.append(lines)


def _row_group_batches(block: Block, batch_lines: int, counter: list[int]) -> Any:
    """A row group's rows as batches of messages, rows numbered within the group."""
    rows = 0
    for values, lines in parquet_rows(block.path, [block.start]):
        rows += len(values)
        for i in range(0, len(values), batch_lines):
            origin = FileOrigin(block.path, lines=lines[i : i + batch_lines])
            yield Batch.of_values(values[i : i + batch_lines], origin)
    counter.append(rows)


def _decode(batch: Batch[FileOrigin], max_message_bytes: int) -> Any:
    payload = batch.payload
    if isinstance(payload, bytes):
        return decode_lines(payload, max_message_bytes)
    return decode_batch(batch.messages(), max_message_bytes)


def _to_block(index: dict[str, int], uniques: list[str]) -> np.ndarray:
    """Block codes of a batch's uniques, new symbols numbered in order of appearance.
    After the first batches every symbol is known: then one C-level pass."""
    try:
        return np.fromiter(map(index.__getitem__, uniques), np.int32, len(uniques))
    except KeyError:
        for s in uniques:
            index.setdefault(s, len(index))
        return np.fromiter(map(index.__getitem__, uniques), np.int32, len(uniques))


def read_block(
    block: Block, partitions: int, batch_lines: int, max_message_bytes: int
) -> dict[Any, Any]:
    """`{"meta": BlockOutput, "status": BlockStatus, 0..partitions-1: Piece}`."""
    failures: list[FileFailure] = []
    counter: list[int] = []
    if block.kind == "range":
        batches = _range_batches(block, batch_lines, counter)
    elif block.kind == "rowgroup":
        batches = _row_group_batches(block, batch_lines, counter)
    else:
        batches = read_batches([block.path], batch_lines, failures)
    index: dict[str, int] = {}
    codes: list[np.ndarray] = []
    days: list[np.ndarray] = []
    closes: list[np.ndarray] = []
    rejects: list[RejectRow] = []
    n_messages = n_bytes = 0
    try:
        for batch in batches:
            decoded = _decode(batch, max_message_bytes)
            origin = batch.origin
            n_messages += batch.n_messages
            n_bytes += batch.n_bytes
            for r in decoded.rejects:
                rejects.append((origin.line_of(r.index), r.array_index, r.reason, r.raw))
            if len(decoded):
                codes.append(_to_block(index, decoded.uniques)[decoded.codes])
                days.append(decoded.days)
                closes.append(decoded.closes)
    except BrokenAt as exc:  # a range or row group: the file broke inside this block
        failures.append(FileFailure(block.path, exc.line, reason(exc.cause)))
    failure = failures[0] if failures else None
    all_codes = np.concatenate(codes) if codes else np.empty(0, np.int32)
    out: dict[Any, Any] = {
        "meta": BlockOutput(
            block.index,
            block.file_index,
            block.path,
            counter[0] if counter else 0,
            n_messages,
            len(all_codes),
            n_bytes,
            rejects,
            failure,
        ),
        "status": BlockStatus(block.file_index, failure is not None),
    }
    uniques = list(index)
    pieces = split_by_owner(
        all_codes,
        uniques,
        np.concatenate(days) if days else np.empty(0, np.int32),
        np.concatenate(closes) if closes else np.empty(0, np.float64),
        partitions,
    )
    out.update(enumerate(pieces))
    return out


def split_by_owner(
    codes: np.ndarray, uniques: list[str], days: np.ndarray, closes: np.ndarray, partitions: int
) -> list[Piece]:
    """One `Piece` per owner partition (SPEC 7's `owner(s)` over `partitions`), each in
    the order the bars came (a stable sort by owner keeps it)."""
    owners = np.fromiter((owner(s, partitions) for s in uniques), np.int32, len(uniques))
    bar_owner = owners[codes] if len(codes) else np.empty(0, np.int32)
    order = np.argsort(bar_owner, kind="stable")
    bounds = np.searchsorted(bar_owner[order], np.arange(partitions + 1)).tolist()
    pieces: list[Piece] = []
    remap = np.full(len(uniques), -1, dtype=np.int32)
    for p in range(partitions):
        sel = order[bounds[p] : bounds[p + 1]]
        piece_codes = codes[sel]
        used = np.unique(piece_codes)
        remap[used] = np.arange(len(used), dtype=np.int32)
        pieces.append(
            Piece(
                remap[piece_codes],
                [uniques[i] for i in used.tolist()],
                days[sel],
                closes[sel],
            )
        )
    return pieces
