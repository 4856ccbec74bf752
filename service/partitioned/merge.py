"""The driver's share: number the dead letters, order the results, count, write.

Dead letters come back per block with block-relative lines; a block's absolute first
line is the sum of the lines of the blocks of its file before it, so the driver never
reads an input. A file that broke in block k keeps what it read up to the break, and
none of its later blocks count (the owners skip their bars by the same rule,
`owners.counted_blocks`), exactly as the single-process replay stops at a break.

Results: `--emit final` merges the partitions' symbol-sorted runs into one sorted run,
the order the single-process replay writes; `--emit batch` writes partition after
partition, each block by block.
"""

from __future__ import annotations

import heapq
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import IO

from service.decode.types import Reject
from service.encode import errors_file_record
from service.errors import SfaError
from service.files.breaks import FileFailure
from service.partitioned.blocks import BlockOutput
from service.partitioned.owners import OwnerOutput

__all__ = ["PartDirectory", "ReplayTotals", "merge_outputs", "ordered_results"]


class PartDirectory:
    """`--output DIR/`: one `part-NNNNN.jsonl` per owner partition (final: each sorted by
    symbol; batch: block by block), written into a hidden directory beside `DIR` and
    renamed onto it when the run ends, so `DIR` appears whole or not at all. `DIR` must
    not exist, or be empty (a directory of parts from another run is not mixed in)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path.rstrip("/") or "/")
        if os.path.lexists(self.path) and (not os.path.isdir(self.path) or os.listdir(self.path)):
            raise SfaError(f"--output {path}: exists and is not an empty directory")
        parent, name = os.path.split(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
            self._temp: str | None = tempfile.mkdtemp(
                prefix=f".{name}.", suffix=".part", dir=parent
            )
        except OSError as exc:
            raise SfaError(f"cannot write {path}: {exc.strerror}") from None

    def write(self, owners: Sequence[OwnerOutput]) -> None:
        assert self._temp is not None
        for o in owners:
            with open(os.path.join(self._temp, f"part-{o.partition:05d}.jsonl"), "wb") as fh:
                if o.payloads:
                    fh.write(b"\n".join([*o.payloads, b""]))

    def commit(self) -> None:
        if self._temp is None:
            return
        os.chmod(self._temp, 0o777 & ~_umask())
        os.replace(self._temp, self.path)
        self._temp = None

    def discard(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass(slots=True)
class ReplayTotals:
    """What the summary line reports, as `ReplayStats` does for the single process."""

    messages: int = 0
    bars: int = 0
    results: int = 0
    analysed: int = 0
    symbols: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    failures: list[FileFailure] = field(default_factory=list)
    executed_by: set[str] = field(default_factory=set)


def ordered_results(owners: Sequence[OwnerOutput], emit: str) -> Iterator[bytes]:
    if emit == "batch":
        for o in owners:
            yield from o.payloads
        return
    runs = [zip(o.symbols, o.payloads, strict=True) for o in owners]
    yield from map(itemgetter(1), heapq.merge(*runs, key=itemgetter(0)))


def merge_outputs(
    blocks: Sequence[BlockOutput],
    owners: Sequence[OwnerOutput],
    emit: str,
    results: IO[bytes] | PartDirectory | None,
    errors: IO[bytes] | None,
) -> ReplayTotals:
    """Write the results and dead letters of a finished run; `blocks` in block order."""
    totals = ReplayTotals()
    offset: dict[int, int] = {}  # file index -> lines of its blocks so far
    broken: set[int] = set()
    error_lines: list[bytes] = []
    for b in sorted(blocks, key=lambda b: b.index):
        if b.file_index in broken:
            continue
        first = offset.get(b.file_index, 0)
        totals.messages += b.n_messages
        totals.bars += b.n_bars
        for line, array_index, why, raw in b.rejects:
            totals.dead_letters[why] += 1
            if errors is not None:
                reject = Reject(0, array_index, why, raw)
                error_lines.append(errors_file_record(reject, b.path, first + line))
        if b.failure is not None:
            broken.add(b.file_index)
            line = b.failure.line
            totals.failures.append(
                FileFailure(b.path, first + line if line else 0, b.failure.reason)
            )
        offset[b.file_index] = first + b.n_lines
    if errors is not None and error_lines:
        error_lines.append(b"")
        errors.write(b"\n".join(error_lines))
    if isinstance(results, PartDirectory):
        results.write(owners)
    elif results is not None:
        chunk: list[bytes] = []
        for payload in ordered_results(owners, emit):
            chunk.append(payload)
            if len(chunk) >= 10_000:
                chunk.append(b"")
                results.write(b"\n".join(chunk))
                chunk = []
        if chunk:
            chunk.append(b"")
            results.write(b"\n".join(chunk))
    for o in owners:
        totals.results += len(o.payloads)
        totals.analysed += o.analysed
        totals.symbols += o.held_symbols
        totals.statuses.update(o.statuses)
        totals.executed_by.add(o.executed_by)
    return totals
