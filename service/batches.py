"""The batch types and the two protocols every stage of the pipeline imports.

A batch is formed before the pipeline (the Kafka consumer's bounded `consume`, the
file readers' line batches) and travels through it as one element; `BatchOutput` is
what a finished batch produced, which a `BatchSink` delivers as a unit; `Compute` is
what the pipeline asks of the compute layer.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.compute.tasks import ChunkResult
from service.decode.types import DecodedBatch, Reject
from service.engine import EngineParams, SymbolWindows

__all__ = ["BatchOutput", "BatchSink", "Compute", "RawBatch"]


@dataclass(slots=True)
class RawBatch:
    """Messages as they came, plus where each came from (files or Kafka).

    A file batch may instead carry its lines as one newline-joined `blob` (it crosses
    to the decoder process in one piece), or arrive already `decoded` by the replay
    file reader (service.files.source), with only its count and size.
    """

    values: list[bytes] = field(default_factory=list)
    closed_at: float = field(default_factory=time.monotonic)
    # files
    file: str | None = None
    lines: list[int] | None = None  # per message; None: `first_line` + index
    blob: bytes | None = None  # instead of `values`: the messages joined by b"\n"
    count: int = 0  # messages in `blob` or `decoded`
    first_line: int = 1
    decoded: DecodedBatch | None = None  # set by a source that decodes for itself
    size: int = 0  # message bytes plus separators, when there are no `values`
    # Kafka (parallel to values)
    topic: str | None = None
    partitions: list[int] | None = None
    offsets: list[int] | None = None
    timestamps_ms: list[int] | None = None

    @property
    def n_messages(self) -> int:
        if self.blob is not None or self.decoded is not None:
            return self.count
        return len(self.values)

    @property
    def n_bytes(self) -> int:
        """Message bytes plus one separator each (what a JSONL file holds)."""
        if self.blob is not None:
            return len(self.blob) + 1
        if self.decoded is not None:
            return self.size
        return sum(map(len, self.values)) + len(self.values)

    def line_of(self, index: int) -> int:
        """The file line of message `index` (0 when unknown)."""
        if self.lines is not None:
            return self.lines[index] if 0 <= index < len(self.lines) else 0
        return self.first_line + index

    def input_ref(self, index: int) -> dict[str, Any] | None:
        """SPEC 6 `input`: the message position in Kafka mode, null for files."""
        if self.offsets is None or self.partitions is None:
            return None
        return {
            "topic": self.topic,
            "partition": self.partitions[index],
            "offset": self.offsets[index],
        }

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the offset to commit once this batch is delivered."""
        if self.offsets is None or self.partitions is None or self.topic is None:
            return {}
        # Offsets only grow within a partition in a batch: the last one seen is the max.
        last = dict(zip(self.partitions, self.offsets, strict=True))
        return {(self.topic, p): o + 1 for p, o in last.items()}


@dataclass(slots=True)
class BatchOutput:
    """Everything one batch produces; the sink commits it as a unit."""

    seq: int
    raw: RawBatch
    results: list[tuple[str, bytes]]
    rejects: list[Reject]
    state_records: list[tuple[bytes, bytes]]
    n_bars: int
    statuses: Counter[str]
    executed_by: frozenset[str]
    analysed: int
    timings: dict[str, float]


class BatchSink(Protocol):
    """Where a finished batch goes. Called in batch order, one call at a time."""

    async def write(self, out: BatchOutput) -> None: ...


class Compute(Protocol):
    """What the pipeline needs of the compute layer (service.compute.stream.ComputeHandle)."""

    async def run_chunks(
        self, chunks: list[list[SymbolWindows]], params: EngineParams
    ) -> list[ChunkResult]: ...
