"""The batch type and the two protocols every stage of the pipeline imports.

A batch is formed before the pipeline (the Kafka consumer's bounded `consume`, the
file readers' line batches) and travels through it as one element: a payload (the
messages, in one of three shapes) plus where they came from (`KafkaOrigin` or
`FileOrigin`). `BatchOutput` is what a finished batch produced, which a `BatchSink`
delivers as a unit; `Compute` is what the pipeline asks of the compute layer.

    Kafka consumer --Batch(list[bytes], KafkaOrigin)--\\
    file readers  --Batch(bytes | list[bytes], FileOrigin)--> Pipeline --BatchOutput--> BatchSink
    replay reader --Batch(DecodedBatch, FileOrigin)---/
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from service.compute.tasks import ChunkResult
from service.decode.types import DecodedBatch, Reject
from service.engine import EngineParams, SymbolWindows

__all__ = [
    "Batch",
    "BatchOutput",
    "BatchSink",
    "Compute",
    "FileOrigin",
    "Forward",
    "KafkaOrigin",
    "Origin",
    "Payload",
    "ServiceCompute",
]

#: A batch's messages: one bytes object per message; or the messages joined by b"\n"
#: (a clean JSONL stretch, one object to hand to a decoder process); or already decoded
#: (replay's reader process decodes as it reads).
Payload = list[bytes] | bytes | DecodedBatch


@dataclass(frozen=True, slots=True)
class KafkaOrigin:
    """Where each message of a Kafka batch came from (lists parallel to the messages).

    `topics` names each message's topic when a batch mixes topics (the input and the
    repartition topic, SPEC 7); None means every message came from `topic`.
    """

    topic: str
    partitions: list[int]
    offsets: list[int]
    timestamps_ms: list[int]
    topics: list[str] | None = field(default=None, kw_only=True)

    def topic_of(self, index: int) -> str:
        return self.topics[index] if self.topics is not None else self.topic

    def input_ref(self, index: int) -> dict[str, Any]:
        """SPEC 6 `input`: the position of message `index`."""
        return {
            "topic": self.topic_of(index),
            "partition": self.partitions[index],
            "offset": self.offsets[index],
        }

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the offset to commit once this batch is delivered."""
        # Offsets only grow within a partition in a batch: the last one seen is the max.
        if self.topics is None:
            last = dict(zip(self.partitions, self.offsets, strict=True))
            return {(self.topic, p): o + 1 for p, o in last.items()}
        where = zip(self.topics, self.partitions, strict=True)
        last_of = dict(zip(where, self.offsets, strict=True))
        return {tp: o + 1 for tp, o in last_of.items()}


@dataclass(frozen=True, slots=True)
class FileOrigin:
    """The file a batch came from and the line of each message (CSV: where the record
    ends; Parquet: the row). `lines` is None when they run on from `first_line`."""

    file: str
    first_line: int = 1
    lines: list[int] | None = None

    def line_of(self, index: int) -> int:
        """The file line of message `index` (0 when unknown)."""
        if self.lines is not None:
            return self.lines[index] if 0 <= index < len(self.lines) else 0
        return self.first_line + index


Origin = KafkaOrigin | FileOrigin


@dataclass(slots=True)
class Batch:
    """Messages plus where they came from; `n_bytes` counts a separator per message
    (what a JSONL file holds), for progress. Build one with the `of_*` constructors."""

    payload: Payload
    origin: Origin
    n_messages: int
    n_bytes: int
    closed_at: float = field(default_factory=time.monotonic)

    @classmethod
    def of_values(cls, values: list[bytes], origin: Origin) -> Batch:
        return cls(values, origin, len(values), sum(map(len, values)) + len(values))

    @classmethod
    def of_lines(cls, blob: bytes, count: int, origin: Origin) -> Batch:
        """`count` messages joined by single newlines."""
        return cls(blob, origin, count, len(blob) + 1)

    @classmethod
    def of_decoded(cls, decoded: DecodedBatch, count: int, size: int, origin: Origin) -> Batch:
        """Already decoded: `count` messages that took `size` bytes."""
        return cls(decoded, origin, count, size)

    def messages(self) -> list[bytes]:
        """One bytes object per message (a joined payload is split on demand)."""
        payload = self.payload
        if isinstance(payload, bytes):
            return payload.split(b"\n") if payload else []
        if isinstance(payload, list):
            return payload
        raise TypeError("a decoded batch no longer holds its messages")


class Forward(NamedTuple):
    """A bar read off a partition other than its owner's, to produce to partition
    `partition` of the repartition topic (SPEC 7), stamped with its original timestamp.
    A tuple: a snapshot feed makes one per bar, and a dataclass costs twice as much."""

    partition: int
    key: bytes
    value: bytes
    timestamp_ms: int


@dataclass(slots=True)
class BatchOutput:
    """Everything one batch produces; the sink commits it as a unit."""

    seq: int
    batch: Batch
    results: list[tuple[str, bytes]]
    rejects: list[Reject]
    state_records: list[tuple[bytes, bytes]]
    n_bars: int
    statuses: Counter[str]
    executed_by: frozenset[str]
    analysed: int
    timings: dict[str, float]
    forwards: list[Forward] = field(default_factory=list)


class BatchSink(Protocol):
    """Where a finished batch goes. Called in batch order, one call at a time."""

    async def write(self, out: BatchOutput) -> None: ...


class Compute(Protocol):
    """What the pipeline needs of the compute layer (service.compute.stream.ComputeHandle)."""

    async def run_chunks(
        self, chunks: list[list[SymbolWindows]], params: EngineParams
    ) -> list[ChunkResult]: ...


class ServiceCompute(Compute, Protocol):
    """The compute handle as `sfa run` holds it: the pipeline's `Compute`, plus what
    the service reports (fallback, workers) and closes."""

    #: Set by the service; the handle calls it whenever `fallback_active` flips.
    on_fallback_change: Callable[[], None] | None

    @property
    def fallback_active(self) -> bool: ...
    @property
    def fallback_reason(self) -> str | None: ...
    def worker_stats(self) -> dict[str, int]: ...
    async def close(self) -> None: ...
