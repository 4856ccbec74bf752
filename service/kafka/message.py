"""What the rest of the service may know about a Kafka record, without importing Kafka.

`MessageLike` mirrors the few `confluent_kafka.Message` methods the pipeline
uses, so pipeline and codec code type-check against it and tests pass a
`StubMessage` instead of a broker. This module must never import
`confluent_kafka`: importing it is how pure code stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Headers", "MessageLike", "StubMessage", "TopicPartitionKey"]

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


@dataclass(frozen=True)
class StubMessage:
    """An in-memory `MessageLike` for tests of code above the adapter."""

    value_: bytes | None
    key_: bytes | None = None
    topic_: str = "stock-bars"
    partition_: int = 0
    offset_: int = 0
    timestamp_ms: int = 0
    headers_: list[tuple[str, str | bytes | None]] = field(default_factory=list)

    def value(self) -> bytes | None:
        return self.value_

    def key(self) -> bytes | None:
        return self.key_

    def topic(self) -> str | None:
        return self.topic_

    def partition(self) -> int | None:
        return self.partition_

    def offset(self) -> int | None:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        # 1 = TIMESTAMP_CREATE_TIME, as librdkafka reports producer timestamps.
        return (1, self.timestamp_ms)

    def error(self) -> object | None:
        return None

    def headers(self) -> Headers | None:
        return list(self.headers_) or None
