"""The Kafka sink: one batch's results, dead letters and state changes, then its offsets.

The order is the delivery guarantee (SPEC 7), so it lives here alone, built from the
producer, the consumer and the topics, and unit-tested with fakes:

* exactly_once: `begin`, every record, then `commit(offsets, group metadata)`: the
  consumed offsets (of the input and the repartition topic) commit *inside* the
  transaction, with the output or not at all; the consumer never commits on its own.
* at_least_once: every record, `flush_and_verify` (every record acknowledged, else
  `DeliveryError`), and only then the consumer commits the offsets: a crash repeats
  output but never loses it.

"Every record" includes the bars the batch forwards to the repartition topic (SPEC 7):
in the transaction they commit with the offsets that read them, so a crash neither
loses a forwarded bar nor forwards it twice; at least once, they are flushed and
verified with the rest before the offsets commit, so a crash may forward a bar again
(the owner then applies the same bar twice, which changes nothing) but never loses it.

The blocking calls run through `run` (the service's producer thread); `on_committed`
is told about each batch once its offsets are committed (metrics, health).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.batches import BatchOutput
from service.encode import dead_letter_headers
from service.kafka.errors import AuthorizationError
from service.kafka.message import KafkaOrigin

__all__ = [
    "AtLeastOnceSinkProducer",
    "KafkaSink",
    "SinkConsumer",
    "SinkProducer",
    "SinkTopics",
    "TransactionalSinkProducer",
]

Offsets = Mapping[tuple[str, int], int]
Headers = list[tuple[str, str | bytes | None]]


class SinkProducer(Protocol):
    """The producer call both delivery modes make."""

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> None: ...


class TransactionalSinkProducer(SinkProducer, Protocol):
    """`service.kafka.producer.TransactionalProducer` as the sink uses it."""

    def begin(self) -> None: ...
    def commit(self, offsets: Offsets, group_metadata: object) -> None: ...


class AtLeastOnceSinkProducer(SinkProducer, Protocol):
    """`service.kafka.producer.AtLeastOnceProducer` as the sink uses it."""

    def flush_and_verify(self) -> None: ...


class SinkConsumer(Protocol):
    """The consumer calls the sink makes."""

    def group_metadata(self) -> object: ...
    def commit_offsets(self, offsets: Offsets) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkTopics:
    output: str
    dlq: str
    state: str
    repartition: str | None = None  # None: a batch with forwards is a bug, and raises


async def _inline(fn: Callable[[], None]) -> None:
    fn()


def _nothing() -> None:
    pass


class KafkaSink:
    """`await sink.write(out)`: produce the batch's records, then commit its offsets.

    Build it with `exactly_once(...)` or `at_least_once(...)`: the two differ only in
    how a batch starts and how its offsets commit.
    """

    def __init__(
        self,
        producer: SinkProducer,
        topics: SinkTopics,
        *,
        begin: Callable[[], None],
        commit: Callable[[Offsets], None],
        state_partition: Callable[[bytes], int | None],
        run: Callable[[Callable[[], None]], Awaitable[None]] = _inline,
        on_committed: Callable[[BatchOutput[KafkaOrigin]], None] | None = None,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._begin = begin
        self._commit = commit
        self._state_partition = state_partition
        self._run = run
        self._on_committed = on_committed

    @classmethod
    def exactly_once(
        cls,
        producer: TransactionalSinkProducer,
        consumer: SinkConsumer,
        topics: SinkTopics,
        **kwargs: Any,
    ) -> KafkaSink:
        """Records and offsets in one transaction (the consumer commits nothing)."""

        def commit(offsets: Offsets) -> None:
            producer.commit(offsets, consumer.group_metadata())

        return cls(producer, topics, begin=producer.begin, commit=commit, **kwargs)

    @classmethod
    def at_least_once(
        cls,
        producer: AtLeastOnceSinkProducer,
        consumer: SinkConsumer,
        topics: SinkTopics,
        **kwargs: Any,
    ) -> KafkaSink:
        """Records flushed and verified, then the consumer commits the offsets."""

        def commit(offsets: Offsets) -> None:
            producer.flush_and_verify()
            consumer.commit_offsets(offsets)

        return cls(producer, topics, begin=_nothing, commit=commit, **kwargs)

    async def write(self, out: BatchOutput[KafkaOrigin]) -> None:
        await self._run(lambda: self.write_blocking(out))
        if self._on_committed is not None:
            self._on_committed(out)

    def write_blocking(self, out: BatchOutput[KafkaOrigin]) -> None:
        """The whole batch on the caller's thread; raises when it did not commit."""
        origin = out.batch.origin
        produce, topics = self._producer.produce, self._topics
        if out.forwards and topics.repartition is None:
            raise TypeError("a batch forwards bars but the sink has no repartition topic")
        self._begin()
        for fwd in out.forwards:
            # The original timestamp travels along: it decides event order (SPEC 1).
            produce(
                topics.repartition,  # type: ignore[arg-type]
                fwd.value,
                key=fwd.key,
                partition=fwd.partition,
                timestamp_ms=fwd.timestamp_ms,
            )
        for symbol, payload in out.results:
            produce(topics.output, payload, key=symbol.encode())
        for reject in out.rejects:
            headers: Headers = [
                *dead_letter_headers(
                    reject,
                    origin.topic_of(reject.index),
                    origin.partitions[reject.index],
                    origin.offsets[reject.index],
                )
            ]
            # The source message's key, so a dead letter sits beside its symbol's records.
            produce(topics.dlq, reject.raw, key=origin.key_of(reject.index), headers=headers)
        for key, value in out.state_records:
            # partition p of the state topic holds the state of input partition p
            produce(topics.state, value, key=key, partition=self._state_partition(key))
        try:
            self._commit(origin.next_offsets())
        except AuthorizationError as exc:
            wrote = [
                topic
                for topic, records in (
                    (topics.output, out.results),
                    (topics.dlq, out.rejects),
                    (topics.state, out.state_records),
                    (topics.repartition, out.forwards),
                )
                if records and topic is not None
            ]
            # The broker's refusal names no topic; the operator needs one to grant.
            raise AuthorizationError(
                f"{exc}; this batch wrote to {', '.join(wrote)}: the service needs WRITE on "
                "each (docs/security.md lists every ACL it needs)"
            ) from exc
