"""The batch type and the protocols every stage of the pipeline imports.

A batch is formed before the pipeline (the Kafka consumer's bounded `consume`, the
file readers' line batches) and travels through it as one element: a payload (the
messages, in one of three shapes) plus where they came from (its `Origin`: a
`service.kafka.message.KafkaOrigin` or a `FileOrigin`). The batch, the pipeline and the
sink are generic in the origin (`Batch[OriginT]`, `Pipeline[OriginT]`,
`BatchSink[OriginT]`): the Kafka sink takes Kafka batches and says so in its type
rather than checking. `BatchOutput` is what a finished batch produced, which a
`BatchSink` delivers as a unit; a `Router` is the stage a source may hand the pipeline
to forward bars to their owner; `Compute` is what the pipeline asks of the compute layer.

    Kafka consumer --Batch[KafkaOrigin]: list[bytes]--\\   (+ its Router: the Forwarder)
    file readers  --Batch[FileOrigin]: bytes | list[bytes]--> Pipeline --> BatchSink
    replay reader --Batch[FileOrigin]: DecodedBatch---/
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

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
    "Origin",
    "OriginT",
    "Payload",
    "PayloadDecoder",
    "Routed",
    "Router",
    "ServiceCompute",
]

#: A batch's messages: one bytes object per message; or the messages joined by b"\n"
#: (a clean JSONL stretch, one object to hand to a decoder process); or already decoded
#: (replay's reader process decodes as it reads).
Payload = list[bytes] | bytes | DecodedBatch


class Origin(Protocol):
    """What the pipeline asks of where a batch came from; each source types its own
    (`service.kafka.message.KafkaOrigin`, `FileOrigin` below), and a sink says which
    one it delivers (`BatchSink[KafkaOrigin]`), so no stage checks it at run time."""

    def arrival(self, message_index: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Per bar (by the index of its message): the partition it was read off and its
        event timestamp in ms; None when every bar arrived alike (a file: line order
        decides)."""
        ...

    def input_ref(self, index: int) -> dict[str, Any] | None:
        """SPEC 6 `input` of message `index`, or None when results carry none."""
        ...


OriginT = TypeVar("OriginT", bound=Origin)


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

    def arrival(self, message_index: np.ndarray) -> None:
        return None

    def input_ref(self, index: int) -> None:
        return None


@dataclass(slots=True)
class Batch(Generic[OriginT]):
    """Messages plus where they came from; `n_bytes` counts a separator per message
    (what a JSONL file holds), for progress. Build one with the `of_*` constructors."""

    payload: Payload
    origin: OriginT
    n_messages: int
    n_bytes: int
    closed_at: float = field(default_factory=time.monotonic)

    @classmethod
    def of_values(cls, values: list[bytes], origin: OriginT) -> Batch[OriginT]:
        return cls(values, origin, len(values), sum(map(len, values)) + len(values))

    @classmethod
    def of_lines(cls, blob: bytes, count: int, origin: OriginT) -> Batch[OriginT]:
        """`count` messages joined by single newlines."""
        return cls(blob, origin, count, len(blob) + 1)

    @classmethod
    def of_decoded(
        cls, decoded: DecodedBatch, count: int, size: int, origin: OriginT
    ) -> Batch[OriginT]:
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
    """A record of bars read off partitions other than their owner's, handed on to
    their owner `partition` (SPEC 7), which a `Router` decides and a sink delivers;
    `n_bars` bars travel in it, each with its own timestamp inside."""

    partition: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    n_bars: int


class Routed(NamedTuple):
    """A batch's bars after routing: those applied here (with their partition and
    timestamp) and those handed on."""

    applied: DecodedBatch
    partitions: np.ndarray
    stamps: np.ndarray
    forwards: list[Forward]


class PayloadDecoder(Protocol):
    """Messages to bar columns (`service.decode.pool.Decoder`)."""

    async def decode(self, values: Sequence[bytes]) -> DecodedBatch: ...


class Router(Protocol[OriginT]):
    """A stage the source hands the pipeline: which bars belong elsewhere (`route`),
    and how the records it handed on read back (`decode`, given the decoder of the
    source's own messages). Only the Kafka side has one
    (`service.kafka.forward.Forwarder`); replay applies every bar it reads."""

    async def decode(self, batch: Batch[OriginT], decoder: PayloadDecoder) -> DecodedBatch: ...

    def route(
        self,
        origin: OriginT,
        decoded: DecodedBatch,
        partitions: np.ndarray,
        stamps: np.ndarray,
    ) -> Routed: ...


@dataclass(slots=True)
class BatchOutput(Generic[OriginT]):
    """Everything one batch produces; the sink commits it as a unit."""

    seq: int
    batch: Batch[OriginT]
    results: list[tuple[str, bytes]]
    rejects: list[Reject]
    state_records: list[tuple[bytes, bytes]]
    n_bars: int
    statuses: Counter[str]
    executed_by: frozenset[str]
    analysed: int
    timings: dict[str, float]
    forwards: list[Forward] = field(default_factory=list)


class BatchSink(Protocol[OriginT]):
    """Where a finished batch goes. Called in batch order, one call at a time."""

    async def write(self, out: BatchOutput[OriginT]) -> None: ...


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
