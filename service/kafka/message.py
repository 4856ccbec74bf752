"""What the rest of the service may know about a Kafka record, without importing Kafka.

`MessageLike` mirrors the few `confluent_kafka.Message` methods the adapter reads
when it turns records into a `Batch` (`service.kafka.consumer.to_batch`); nothing
outside `service/kafka/` sees a message. This module must never import
`confluent_kafka`: importing it is how pure code stays pure.

`KafkaOrigin` is where each message of a Kafka batch came from (the `Origin` the
pipeline asks for, typed so that a Kafka sink takes only Kafka batches); it remembers
each message's key, so a dead letter can keep its source message's key (and land where
compaction and per-key ordering expect it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["Headers", "KafkaOrigin", "MessageLike", "TopicPartitionKey"]

# Exactly librdkafka's header shapes (list form on consumed messages).
Headers = list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None]

# (topic, partition): the only partition identity that crosses the adapter.
TopicPartitionKey = tuple[str, int]


class MessageLike(Protocol):
    """The subset of `confluent_kafka.Message` the service reads."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> object | None: ...
    def headers(self) -> Headers | None: ...


@dataclass(frozen=True, slots=True)
class KafkaOrigin:
    """Where each message of a Kafka batch came from (lists parallel to the messages).

    `topics` names each message's topic when a batch mixes topics (the input and the
    repartition topic, SPEC 7); None means every message came from `topic`. `keys` holds
    each message's key (None for an unkeyed one), when the consumer kept them.
    """

    topic: str
    partitions: list[int]
    offsets: list[int]
    timestamps_ms: list[int]
    topics: list[str] | None = field(default=None, kw_only=True)
    keys: list[bytes | None] | None = field(default=None, kw_only=True)

    def topic_of(self, index: int) -> str:
        return self.topics[index] if self.topics is not None else self.topic

    def key_of(self, index: int) -> bytes | None:
        keys = self.keys
        return keys[index] if keys is not None and 0 <= index < len(keys) else None

    def arrival(self, message_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each bar's partition and record timestamp (SPEC 1 orders events by it)."""
        partitions = np.asarray(self.partitions, dtype=np.int32)[message_index]
        stamps = np.asarray(self.timestamps_ms, dtype=np.int64)[message_index]
        return partitions, stamps

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
