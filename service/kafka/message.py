"""What the rest of the service may know about a Kafka record, without importing Kafka.

`MessageLike` mirrors the few `confluent_kafka.Message` methods the adapter reads
when it turns records into a `Batch` (`service.kafka.consumer.to_batch`); nothing
outside `service/kafka/` sees a message. This module must never import
`confluent_kafka`: importing it is how pure code stays pure.

`KeyedKafkaOrigin` is a `KafkaOrigin` that also remembers each message's key, so a dead
letter can keep its source message's key (and land where compaction and per-key ordering
expect it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from service.batches import KafkaOrigin

__all__ = ["Headers", "KeyedKafkaOrigin", "MessageLike", "TopicPartitionKey"]

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
class KeyedKafkaOrigin(KafkaOrigin):
    """A `KafkaOrigin` plus the key of each message (None for an unkeyed one)."""

    keys: list[bytes | None] = field(default_factory=list)

    def key_of(self, index: int) -> bytes | None:
        return self.keys[index] if 0 <= index < len(self.keys) else None
