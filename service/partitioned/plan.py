"""Where the input is cut: blocks a worker can read on its own, and how many owners.

Inputs are paths or fsspec URLs (`s3://...`, `file:///...`): every worker opens them
itself, so on a remote cluster they must name something the workers can read.

A JSONL file is cut into byte ranges of about `block_bytes`. A range does not need to
know where lines start: it owns every line whose first byte lies inside it (it begins
after the first newline at or past its start, and reads on past its end to the next
newline), so the planner reads nothing and two neighbours never share or miss a line.
Lines are numbered per block; the driver adds the lines of the blocks before it.

A Parquet file is cut by row group (rows are numbered within the group, and the driver
adds the rows of the groups before it, as for lines). One block per file where a byte
offset cannot start a record: gzip (no random access) and CSV (a quoted field may hold
a newline). Empty files are blocks too, so every file is accounted for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.files.breaks import is_gzip, open_raw, reason

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "MIN_BLOCK_BYTES",
    "PARTITIONED_MIN_BYTES",
    "Block",
    "check_inputs",
    "default_partitions",
    "pick_block_bytes",
    "plan_blocks",
]

#: Inputs smaller than this replay in one process unless `--partitions` says otherwise:
#: below it the cluster's start-up (~2 s for two worker processes) costs more than the
#: second core gives back (docs/performance.md, "Partitioned replay").
PARTITIONED_MIN_BYTES = 200_000_000

DEFAULT_BLOCK_BYTES = 64 << 20
MIN_BLOCK_BYTES = 4 << 20

#: Owner partitions per worker by default: more than one so a worker that finishes early
#: takes another partition instead of idling, few so per-partition overhead stays small.
PARTITIONS_PER_WORKER = 2

#: ...but at most this many: the graph holds a task per block and partition, so the
#: driver's share grows with blocks x partitions, while the owners are about a tenth of
#: the work and need no more than a few dozen workers (docs/performance.md, the model).
MAX_DEFAULT_PARTITIONS = 32

Kind = Literal["range", "rowgroup", "file"]


@dataclass(frozen=True, slots=True)
class Block:
    """Part of the input one task reads: file `path` (the `file_index`-th input), bytes
    [start, end) for a range (end None: the whole file). `index` is the block's place in
    file order, which is the order its bars are applied in."""

    index: int
    file_index: int
    path: str
    kind: Kind
    start: int = 0
    end: int | None = None


def _whole_file(path: str) -> bool:
    """Anything but plain JSONL is read whole by one task: gzip (recognised by its bytes,
    as the readers do), CSV/TSV, one JSON document (`.json`), Avro container files."""
    lower = path.lower()
    if lower.endswith((".gz", ".csv", ".tsv", ".json", ".avro")):
        return True
    try:
        return is_gzip(path)
    except OSError:  # unreadable: the block's task says so, with the file's name
        return False


def default_partitions(workers: int) -> int:
    return min(MAX_DEFAULT_PARTITIONS, max(1, workers) * PARTITIONS_PER_WORKER)


def pick_block_bytes(total_bytes: int, workers: int) -> int:
    """About four blocks per worker (so reading balances), at most 64 MiB (a block's
    bytes and decoded columns sit in one worker's memory at once), at least 4 MiB."""
    per = total_bytes // max(1, 4 * workers)
    return max(MIN_BLOCK_BYTES, min(DEFAULT_BLOCK_BYTES, per))


def plan_blocks(
    paths: Sequence[str],
    sizes: Sequence[int],
    block_bytes: int,
    row_groups: Sequence[int] | None = None,
) -> list[Block]:
    """Blocks in file order; `sizes[i]` is the byte size of `paths[i]`, `row_groups[i]`
    its row groups when it is a Parquet file that opens (else 0: read whole)."""
    if block_bytes < 1:
        raise ValueError("block_bytes must be >= 1")
    groups = list(row_groups) if row_groups is not None else [0] * len(paths)
    blocks: list[Block] = []
    for file_index, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        if groups[file_index] > 1:
            for g in range(groups[file_index]):
                blocks.append(Block(len(blocks), file_index, path, "rowgroup", g))
            continue
        if _whole_file(path) or path.lower().endswith(".parquet") or size <= block_bytes:
            blocks.append(Block(len(blocks), file_index, path, "file"))
            continue
        n = -(-size // block_bytes)
        step = -(-size // n)  # n nearly equal ranges
        for start in range(0, size, step):
            end = min(size, start + step)
            blocks.append(Block(len(blocks), file_index, path, "range", start, end))
    return blocks


def check_inputs(paths: Sequence[str]) -> tuple[list[int], list[str], list[int]]:
    """Sizes of the inputs, one line per input this process cannot read, and each
    Parquet file's row groups (0: not Parquet, or a footer that does not read, which
    the whole-file reader then reports as today). Run on every worker before any work:
    a remote worker may not see the driver's files."""
    sizes: list[int] = []
    problems: list[str] = []
    groups: list[int] = []
    for path in paths:
        try:
            with open_raw(path) as fh:
                fh.read(1)
                sizes.append(fh.seek(0, os.SEEK_END))
        except Exception as exc:  # OSError; an fsspec backend may raise anything
            problems.append(f"cannot read input file {path}: {reason(exc)}")
            sizes.append(0)
        groups.append(_row_groups(path) if path.lower().endswith(".parquet") else 0)
    return sizes, problems, groups


def _row_groups(path: str) -> int:
    try:
        import pyarrow.parquet as pq

        with open_raw(path) as fh:
            return int(pq.ParquetFile(fh).num_row_groups)
    except Exception:  # pyarrow raises OSError, ArrowInvalid, ...: read whole instead
        return 0
