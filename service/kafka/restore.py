"""Read state-changelog partitions back into memory when their input partitions arrive.

A separate consumer that never joins a group (assign, not subscribe): restoring must not
join or disturb the service's group, and it must not commit anything. It
reads `read_committed`, so records of aborted transactions never come back.

Where to stop: each partition's end offset is taken once at the start
(for a read_committed reader that is the last stable offset), and the
partition is done when the consumer's position reaches it. The last offsets
of a transactional topic are commit markers that are never delivered as
messages, so "I saw the message at end-1" would wait forever; the position
does move past markers, and the end-of-partition event confirms it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from service.kafka.config import restore_config
from service.kafka.errors import KafkaRetriableError, classify
from service.kafka.gather import gather
from service.settings import KafkaSettings

__all__ = ["read_state_by_partition"]

log = logging.getLogger(__name__)

_BATCH = 10_000


def read_state_by_partition(
    settings: KafkaSettings, state_topic: str, partitions: Sequence[int], timeout_s: float = 60.0
) -> dict[int, list[tuple[bytes, bytes | None]]]:
    """Every committed `(key, value)` of the listed partitions, oldest first, kept apart
    per partition: `sfa run` loads only the partitions it still holds when the read ends
    (a rebalance may come meanwhile).

    `value` is None for a tombstone (the key was deleted). Records without a key carry
    no state and are skipped. Raises `KafkaRetriableError` when the partitions cannot be
    read to their end within `timeout_s`.
    """
    records: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in partitions}
    if not partitions:
        return records
    consumer = Consumer(restore_config(settings))
    try:
        for p, key, value in _read(consumer, state_topic, sorted(set(partitions)), timeout_s):
            records[p].append((key, value))
    finally:
        consumer.close()
    return records


def _watermarks(consumer: Consumer, topic: str, p: int, deadline: float) -> tuple[int, int]:
    """Retries transient refusals until `deadline`: a state topic created a moment ago
    can still be electing its leader (NOT_LEADER_FOR_PARTITION), which is no reason to
    stop the instance."""
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=max(deadline - time.monotonic(), 1.0)
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = classify(exc, f"read end offsets of {topic}[{p}]")
            if not isinstance(error, KafkaRetriableError) or time.monotonic() > deadline:
                raise error from exc
            log.info("%s; retrying", error)
            time.sleep(0.2)


def _consume_of(consumer: Consumer) -> Callable[[int, float], list[Message]]:
    def consume(n: int, timeout_s: float) -> list[Message]:
        messages: list[Message] = consumer.consume(num_messages=n, timeout=timeout_s)
        return messages

    return consume


def _read(
    consumer: Consumer, topic: str, partitions: list[int], timeout_s: float
) -> Iterator[tuple[int, bytes, bytes | None]]:
    deadline = time.monotonic() + timeout_s
    ends: dict[int, int] = {}
    for p in partitions:
        low, high = _watermarks(consumer, topic, p, deadline)
        if high > low:
            ends[p] = high
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    pending = dict(ends)
    count = 0
    while pending:
        if time.monotonic() > deadline:
            raise KafkaRetriableError(
                f"restore of {topic} partitions {sorted(pending)} not done after {timeout_s} s"
            )
        # `gather`: a consume(n, t) asked for more than is left waits out its whole t
        # (librdkafka's semantics), which cost 0.2 s a round, 2 s a restart (measured).
        for msg in gather(_consume_of(consumer), _BATCH, 0.2):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue  # the position check below decides
                if err.fatal():
                    raise classify(KafkaException(err), f"restore {topic}")
                log.warning("restore of %s: %s", topic, err)
                continue
            key = msg.key()
            if key is not None:
                count += 1
                yield msg.partition() or 0, key, msg.value()
        positions = consumer.position([TopicPartition(topic, p) for p in pending])
        for tp in positions:
            if tp.offset >= pending[tp.partition]:
                del pending[tp.partition]
    log.debug("restored %d records from %s partitions %s", count, topic, sorted(ends))
