"""A consumer-group member that hands out batches and tells the service about rebalances.

The service never sees librdkafka: records come out as one `Batch`, partitions are
`(topic, partition)` tuples, offsets are plain ints (the next offset to read,
as Kafka commits them). Offsets are only committed on request: by the
transaction in exactly-once mode, or by `commit_offsets` after delivery in
at-least-once mode. Auto-commit stays off because it would commit batches
whose output was never written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from service.batches import Batch
from service.kafka.config import consumer_config
from service.kafka.contact import BrokerContact
from service.kafka.errors import classify
from service.kafka.gather import gather
from service.kafka.message import KafkaOrigin, MessageLike, TopicPartitionKey
from service.settings import KafkaSettings

__all__ = ["BatchConsumer", "PartitionListener", "only_partitions", "to_batch"]

log = logging.getLogger(__name__)

# How long `close` serves the revocation an unsubscribe starts before closing anyway.
_LEAVE_WAIT_S = 5.0


class PartitionListener(Protocol):
    """Told what librdkafka assigned, revoked or lost, synchronously, inside the rebalance.

    Only reported: what to do about it (pair twins, pause, restore, drain, drop) is
    decided by `service.run.core`. `on_assigned` runs after the partitions are assigned
    and before anything of theirs is fetched, so pausing them there is in time;
    `on_revoked` and `on_lost` run before another member may read them.
    """

    def on_assigned(self, partitions: list[TopicPartitionKey]) -> None: ...
    def on_revoked(self, partitions: list[TopicPartitionKey]) -> None: ...
    def on_lost(self, partitions: list[TopicPartitionKey]) -> None: ...


def to_batch(messages: Sequence[MessageLike]) -> Batch[KafkaOrigin]:
    """The records as one batch; librdkafka's `Message` goes no further than this.

    The consumer reads the input and the repartition topic (SPEC 7): each message's
    topic is kept when a batch holds both, and left out (`topics=None`) when it holds one.
    """
    values, partitions, offsets, stamps = [], [], [], []
    keys: list[bytes | None] = []
    topics: list[str] = []
    for m in messages:
        values.append(m.value() or b"")
        keys.append(m.key())
        partitions.append(m.partition() or 0)
        offsets.append(m.offset() or 0)
        stamps.append(m.timestamp()[1])
        topics.append(m.topic() or "")
    topic = topics[0]
    mixed = topics if topics.count(topic) != len(topics) else None
    origin = KafkaOrigin(topic, partitions, offsets, stamps, topics=mixed, keys=keys)
    return Batch.of_values(values, origin)


def only_partitions(
    batch: Batch[KafkaOrigin], keep: frozenset[TopicPartitionKey]
) -> Batch[KafkaOrigin]:
    """The batch's records of the `keep` partitions only (the rest came from partitions
    given up, or paused too late, while the batch was being polled)."""
    origin = batch.origin
    index = [
        i for i in range(batch.n_messages) if (origin.topic_of(i), origin.partitions[i]) in keep
    ]
    values = batch.messages()
    topics = [origin.topic_of(i) for i in index]
    topic = topics[0] if topics else origin.topic
    subset = KafkaOrigin(
        topic,
        [origin.partitions[i] for i in index],
        [origin.offsets[i] for i in index],
        [origin.timestamps_ms[i] for i in index],
        topics=topics if topics.count(topic) != len(topics) else None,
        keys=[origin.key_of(i) for i in index] if origin.keys is not None else None,
    )
    return Batch.of_values([values[i] for i in index], subset)


def _keys(partitions: Iterable[TopicPartition]) -> list[TopicPartitionKey]:
    return [(tp.topic, tp.partition) for tp in partitions]


class BatchConsumer:
    """`confluent_kafka.Consumer` as the service needs it: batches, backpressure, rewinds."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        listener: PartitionListener | None = None,
        group_id: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        conf = consumer_config(settings, group_id)
        # Statistics every second (unless KAFKA_STATISTICS_INTERVAL_MS says otherwise; 0
        # turns them and the check off): their per-connection receive times tell /healthz
        # when no broker has answered for SFA_STALL_SECONDS (service/kafka/contact.py).
        conf.setdefault("statistics.interval.ms", 1000)
        self.contact = BrokerContact()
        if int(conf["statistics.interval.ms"]) > 0:
            conf["stats_cb"] = self.contact.on_stats
        strategy = str(conf.get("partition.assignment.strategy", ""))
        self._incremental = "cooperative" in strategy or conf.get("group.protocol") == "consumer"
        self._consumer = Consumer(conf)
        self._listener = listener
        self._timeout_s = timeout_s
        self._group_meta: object | None = None
        self._closed = False
        self._last_lag: dict[TopicPartitionKey, int] = {}

    # --- membership ---

    def subscribe(self, topics: Sequence[str]) -> None:
        """Join the group; partitions arrive (and `on_assigned` runs) inside `poll_batch`."""
        self._consumer.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def assignment(self) -> list[TopicPartitionKey]:
        return _keys(self._consumer.assignment())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Assign here rather than after the callback returns, so the listener can pause
        # the new partitions before anything is fetched.
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if self._listener is not None and partitions:
            self._listener.on_assigned(_keys(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The library unassigns after we return.
        if self._listener is not None and partitions:
            self._listener.on_revoked(_keys(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._listener is not None and partitions:
            self._listener.on_lost(_keys(partitions))

    # --- reading ---

    def poll_batch(
        self,
        max_messages: int,
        timeout_s: float,
        *,
        between: Callable[[], None] | None = None,
        slice_s: float = 0.1,
    ) -> Batch[KafkaOrigin] | None:
        """Up to `max_messages` records as one `Batch`; None when nothing came within
        `timeout_s`. The batch closes once messages stop coming (`service.kafka.gather`):
        `timeout_s` is how long it waits for the first one, not how long it lasts.

        With `between`, the wait is cut into `slice_s` slices and `between` runs before
        each: pause, resume and seek take effect only between `consume` calls, and
        `sfa run` must not make a partition whose state just loaded wait a whole
        SFA_BATCH_MAX_WAIT_MS for its first fetch.

        Error events (a broker went away, a partition was deleted) are logged and
        skipped: librdkafka recovers from them itself, and a batch should not fail
        because of an event that carries no record. Fatal consumer errors raise.
        """
        messages = gather(self._consume, max_messages, timeout_s, between=between, slice_s=slice_s)
        self._last_lag = self.lag()  # for scrapes, which must never wait on this client
        if messages or self._group_meta is None:
            # Refreshed here, on the consumer's own thread: called from the producer's
            # thread it waits behind a running consume() (~190 ms a batch, measured).
            self._group_meta = self._consumer.consumer_group_metadata()
        good: list[MessageLike] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.fatal() or err.code() == KafkaError._FATAL:
                # A fatal consumer error (e.g. fenced: another member joined with our
                # group.instance.id) comes as a _FATAL event whose fatal() is False.
                raise classify(KafkaException(err), "consume")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error event: %s", err)
        return to_batch(good) if good else None

    def _consume(self, n: int, timeout_s: float) -> list[Message]:
        try:
            messages: list[Message] = self._consumer.consume(
                num_messages=n, timeout=max(timeout_s, 0.0)
            )
        except KafkaException as exc:
            raise classify(exc, "consume") from exc
        return messages

    def pause(self, p: Iterable[TopicPartitionKey]) -> None:
        """Stop fetching these (backpressure, restore, a lone twin) while still serving
        rebalances in `poll_batch`. Call it on the thread that polls: from any other
        thread it blocks while a rebalance callback runs."""
        tps = [TopicPartition(topic, n) for topic, n in sorted(p)]
        if tps:
            self._consumer.pause(tps)

    def resume(self, p: Iterable[TopicPartitionKey]) -> None:
        tps = [TopicPartition(topic, n) for topic, n in sorted(p)]
        if tps:
            self._consumer.resume(tps)

    # --- offsets ---

    def committed(
        self, partitions: Sequence[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, int | None]:
        """The group's committed next offset per partition (None when nothing is committed)."""
        tps = self._tps(partitions)
        if not tps:
            return {}
        try:
            result = self._consumer.committed(tps, timeout=self._timeout_s)
        except KafkaException as exc:
            raise classify(exc, "read committed offsets") from exc
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in result}

    def rewind_to_committed(self, partitions: Sequence[TopicPartitionKey] | None = None) -> None:
        """After an aborted transaction: read again from what the group last committed.

        Partitions without a committed offset go back to the beginning. Seeking
        also drops records librdkafka had already fetched past that point.
        """
        for (topic, partition), offset in self.committed(partitions).items():
            start = OFFSET_BEGINNING if offset is None else offset
            target = TopicPartition(topic, partition, start)
            try:
                self._consumer.seek(target)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._STATE:
                    raise classify(exc, f"seek {topic}[{partition}]") from exc
                # Not fetching yet (just assigned): it will start from the
                # committed offset anyway, which is where we wanted it.

    def commit_offsets(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        """At-least-once: synchronously commit next offsets, only after output was delivered."""
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise classify(exc, "commit offsets") from exc
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise classify(KafkaException(failed[0].error), f"commit offsets {failed[0]}")

    def group_metadata(self) -> object:
        """Opaque group identity for `TransactionalProducer.commit` (fences zombies, KIP-447).

        The value cached by the last `poll_batch`: a batch's messages and its generation
        come from that poll, and a rebalance since then drains in-flight batches first.
        """
        if self._group_meta is None:
            self._group_meta = self._consumer.consumer_group_metadata()
        return self._group_meta

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Records not yet handed out, per assigned partition, from cached fetch state.

        Cheap (no broker round trip), so metrics can call it at scrape time.
        Partitions not fetched yet are left out rather than guessed.
        """
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        lags: dict[TopicPartitionKey, int] = {}
        for tp in self._consumer.position(assigned):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or tp.offset < 0:
                continue
            lags[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        return lags

    def last_lag(self) -> dict[TopicPartitionKey, int]:
        """`lag()` as the last `poll_batch` left it; safe from any thread, never blocks.

        librdkafka serialises calls on one consumer handle, so `assignment()` from a
        scrape thread waits for the `consume` running on the consumer's thread (seconds
        with a long SFA_BATCH_MAX_WAIT_MS). The snapshot is at most one poll old, which
        is what a scrape interval can resolve anyway.
        """
        return self._last_lag

    def detach(self) -> None:
        """Stop telling the listener anything (a fenced consumer being replaced)."""
        self._listener = None

    def close(self) -> None:
        """Leave the group now (revocation callbacks run), so partitions move without waiting.

        librdkafka's `close` sends no LeaveGroup for a static member (group.instance.id):
        the broker would keep its partitions for the whole session timeout, waiting for
        it to come back. A graceful stop (SIGTERM) is a leave, so unsubscribe first, which
        does leave (measured: partitions move in ~1 s instead of 10 s); a crashed member
        never gets here, and its restart under the same id takes its partitions straight
        back, which is what static membership is for.
        """
        if not self._closed:
            self._closed = True
            self._last_lag = {}
            try:
                self._consumer.unsubscribe()
                deadline = time.monotonic() + _LEAVE_WAIT_S
                while self._consumer.assignment() and time.monotonic() < deadline:
                    self._consumer.poll(0.05)  # serves the revocation; records are dropped
            except (KafkaException, RuntimeError) as exc:
                log.debug("could not unsubscribe before closing: %s", exc)
            self._consumer.close()

    def _tps(self, partitions: Sequence[TopicPartitionKey] | None) -> list[TopicPartition]:
        if partitions is None:
            return [TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()]
        return [TopicPartition(t, p) for t, p in partitions]
