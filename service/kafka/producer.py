"""Output producers for the two delivery modes (SPEC 7).

`TransactionalProducer` (exactly-once): a batch's results, dead letters, state
records and consumed offsets commit together or not at all. Its
transactional.id is stable per instance, so a restarted instance fences its
own zombie, and `commit` passes the consumer's group metadata so a member
that lost its partitions cannot commit either.

`AtLeastOnceProducer`: the caller flushes and verifies delivery before it
commits offsets, so a crash repeats output but never loses it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from service.kafka.config import producer_config
from service.kafka.errors import (
    AbortableError,
    AuthorizationError,
    DeliveryError,
    KafkaFatalError,
    KafkaRetriableError,
    classify,
)
from service.kafka.message import TopicPartitionKey
from service.settings import KafkaSettings

__all__ = [
    "AtLeastOnceProducer",
    "DeliveryCallback",
    "HeaderList",
    "RecordRefused",
    "TransactionalProducer",
]

log = logging.getLogger(__name__)

HeaderList = list[tuple[str, str | bytes | None]]
#: Called once per record with librdkafka's error (None: delivered) and the message.
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class RecordRefused(KafkaFatalError):
    """This one record can never be sent (larger than the producer or topic allows);
    the others may be. A `KafkaFatalError`, so callers that knew only that still stop."""


# How long produce() keeps polling for queue space before calling it a broker problem.
_ENQUEUE_TIMEOUT_S = 60.0


class _BaseProducer:
    def __init__(self, conf: dict[str, Any]) -> None:
        self._producer = Producer(conf)
        self._on_delivery: Callable[[KafkaError | None, Message], None] | None = None

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: HeaderList | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Enqueue one record; when the local queue is full, serve deliveries and retry.

        `on_delivery` replaces the producer's own callback for this record (to know
        which record failed). `timestamp_ms` is the record's event time (SPEC 1: it
        decides which correction wins); None lets the client stamp it. A record too
        large to send raises `RecordRefused`.
        """
        kwargs: dict[str, Any] = {"value": value, "key": key}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        elif self._on_delivery is not None:
            kwargs["on_delivery"] = self._on_delivery
        deadline = time.monotonic() + _ENQUEUE_TIMEOUT_S
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise KafkaRetriableError(
                        f"produce to {topic}: local queue still full after {_ENQUEUE_TIMEOUT_S} s"
                    ) from None
                self._producer.poll(0.05)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    size = len(value or b"") + len(key or b"")
                    raise RecordRefused(f"record of {size} bytes is too large to send") from exc
                raise classify(exc, f"produce to {topic}") from exc
        self._producer.poll(0)

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued (bounded), then release the client."""
        self._producer.flush(timeout_s)


class TransactionalProducer(_BaseProducer):
    """Exactly-once output: `begin`, `produce`..., then `commit` (or `abort`)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str | None = None,
        init_timeout_s: float = 60.0,
    ) -> None:
        conf = producer_config(settings)
        conf["transactional.id"] = transactional_id or settings.effective_transactional_id
        super().__init__(conf)
        self.transactional_id = conf["transactional.id"]
        self._in_transaction = False
        # Fences any earlier producer with our id and finishes its open transaction.
        self._retrying(self._producer.init_transactions, "init transactions", init_timeout_s)

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    def begin(self) -> None:
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise classify(exc, "begin transaction") from exc
        self._in_transaction = True

    def commit(
        self,
        offsets: Mapping[TopicPartitionKey, int],
        group_metadata: object,
        timeout_s: float = 60.0,
    ) -> None:
        """Add the consumed next-offsets to the transaction and commit it.

        Raises `AbortableError` (call `abort`, rewind, retry) or `KafkaFatalError`
        (fenced, or the commit's outcome stayed unknown: restart, and the next
        `init_transactions` with our id settles it).
        """
        deadline = time.monotonic() + timeout_s
        if offsets:
            tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            self._retrying(
                lambda t: self._producer.send_offsets_to_transaction(tps, group_metadata, t),
                "send offsets to transaction",
                deadline - time.monotonic(),
                exhausted=AbortableError,
            )
        self._retrying(
            self._producer.commit_transaction,
            "commit transaction",
            deadline - time.monotonic(),
            exhausted=KafkaFatalError,
        )
        self._in_transaction = False

    def abort(self, timeout_s: float = 60.0) -> None:
        """Drop everything produced since `begin`; a no-op outside a transaction."""
        if not self._in_transaction:
            return
        self._retrying(self._producer.abort_transaction, "abort transaction", timeout_s)
        self._in_transaction = False

    def close(self, timeout_s: float = 30.0) -> None:
        """An open transaction is aborted, so readers are not held up until it times out."""
        try:
            self.abort(timeout_s)
        except (AbortableError, KafkaRetriableError, KafkaFatalError) as exc:
            log.warning("could not abort the open transaction at close: %s", exc)
        super().close(timeout_s)

    def _retrying(
        self,
        call: Callable[[float], None],
        doing: str,
        timeout_s: float,
        exhausted: type[AbortableError] | type[KafkaFatalError] | None = None,
    ) -> None:
        """librdkafka allows the same transactional call again after a retriable error."""
        deadline = time.monotonic() + max(timeout_s, 1.0)
        while True:
            try:
                call(max(deadline - time.monotonic(), 0.5))
                return
            except KafkaException as exc:
                error = classify(exc, doing)
                if not isinstance(error, KafkaRetriableError):
                    raise error from exc
                if time.monotonic() >= deadline:
                    raise (exhausted or KafkaRetriableError)(str(error)) from exc
                log.warning("%s; retrying", error)
                time.sleep(0.1)


class AtLeastOnceProducer(_BaseProducer):
    """Plain idempotent producer that remembers failed deliveries until verified.

    `max_message_bytes` (the target topic's `max.message.bytes`, for `sfa produce`)
    caps both the record and the batch size: a record over it is refused at
    `produce` (`RecordRefused`) instead of failing at the broker together with the
    batch it shared, and no batch of small records grows past what the topic takes.
    """

    _FRAMING_BYTES = 128  # record batch (61) and record headers, with room to spare

    def __init__(self, settings: KafkaSettings, max_message_bytes: int | None = None) -> None:
        conf = producer_config(settings)
        if max_message_bytes is not None:
            limit = max(1000, max_message_bytes - self._FRAMING_BYTES)  # librdkafka's minimum
            conf["message.max.bytes"] = min(int(conf.get("message.max.bytes", limit)), limit)
            conf["batch.size"] = min(int(conf.get("batch.size", limit)), limit)
        super().__init__(conf)
        self._failures: list[str] = []
        self._failed = 0
        self._refused: set[str] = set()
        self._on_delivery = self._record_delivery

    def _record_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed += 1
            if len(self._failures) < 5:
                self._failures.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                self._refused.add(str(msg.topic()))

    def flush_and_verify(self, timeout_s: float = 60.0) -> None:
        """Block until every queued record is acknowledged; raise if any was not.

        Only after this returns may the consumed offsets be committed.
        """
        remaining = self._producer.flush(timeout_s)
        failed, failures, refused = self._failed, self._failures, self._refused
        self._failed, self._failures, self._refused = 0, [], set()
        if refused:  # retrying cannot grant a permission
            raise AuthorizationError(
                f"not authorized to write to {', '.join(sorted(refused))}: the service "
                "needs WRITE on it (docs/security.md lists every ACL it needs)"
            )
        if failed:
            raise DeliveryError(f"{failed} record(s) not delivered, e.g. {'; '.join(failures)}")
        if remaining:
            raise DeliveryError(f"{remaining} record(s) still unacknowledged after {timeout_s} s")
