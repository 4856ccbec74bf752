"""service.kafka against a real broker: group membership, backpressure, transactions, restore."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from service.batches import Batch
from service.kafka.admin import ensure_topics
from service.kafka.consumer import BatchConsumer
from service.kafka.errors import MissingTopicError
from service.kafka.message import KafkaOrigin
from service.kafka.producer import AtLeastOnceProducer, TransactionalProducer
from service.kafka.restore import read_state_by_partition
from service.run.core import RunCore
from service.run.events import (
    Assigned,
    Instruction,
    Lost,
    Pause,
    Restore,
    Restored,
    Resume,
    Revoked,
    StepDone,
)
from service.settings import KafkaSettings, load_settings
from tests.integration.conftest import NewTopicFactory
from tests.integration.topics import delete_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TP = tuple[str, int]


class Recorder:
    """A PartitionListener that remembers what it was told."""

    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.events: list[tuple[str, list[TP]]] = []

    def on_assigned(self, partitions: list[TP]) -> None:
        self.events.append(("assigned", partitions))
        self.assigned.update(partitions)

    def on_revoked(self, partitions: list[TP]) -> None:
        self.events.append(("revoked", partitions))
        self.assigned.difference_update(partitions)

    def on_lost(self, partitions: list[TP]) -> None:
        self.events.append(("lost", partitions))
        self.assigned.difference_update(partitions)


class CoreDriver:
    """The rebalance half of `sfa run`'s shell, on a real consumer: librdkafka's
    callbacks go to a `RunCore`, whose pauses and resumes are carried out right there
    (on the consumer's thread, inside the callback) and whose restores read nothing."""

    def __init__(self, twins: tuple[str, str]) -> None:
        self.core = RunCore(twins, max_inflight=4)
        for step in ("listen", "reach", "topics", "dask", "producer", "subscribe"):
            self.core.handle(StepDone(step))
        self.consumer: BatchConsumer | None = None
        self.resumed: list[frozenset[TP]] = []

    @property
    def assigned(self) -> set[TP]:
        """The partitions of the pairs the core processes."""
        return {(t, p) for p in self.core.active for t in self.core.twins}

    def on_assigned(self, partitions: list[TP]) -> None:
        self._carry_out(self.core.handle(Assigned(frozenset(partitions))))

    def on_revoked(self, partitions: list[TP]) -> None:
        self._carry_out(self.core.handle(Revoked(frozenset(partitions))))

    def on_lost(self, partitions: list[TP]) -> None:
        self._carry_out(self.core.handle(Lost(frozenset(partitions))))

    def _carry_out(self, instructions: list[Instruction]) -> None:
        assert self.consumer is not None
        for ins in instructions:
            if isinstance(ins, Pause):
                self.consumer.pause(ins.partitions)
            elif isinstance(ins, Resume):
                self.resumed.append(ins.partitions)
                self.consumer.resume(ins.partitions)
            elif isinstance(ins, Restore):
                self._carry_out(self.core.handle(Restored(ins.token)))


@pytest.fixture()
def settings(kafka_bootstrap: str, group_id: str) -> KafkaSettings:
    return load_settings(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_GROUP_ID": group_id,
            "SFA_INSTANCE_ID": f"test-{uuid.uuid4().hex[:8]}",
        }
    ).kafka


@pytest.fixture()
def consumers() -> Iterator[list[BatchConsumer]]:
    made: list[BatchConsumer] = []
    yield made
    for consumer in made:
        consumer.close()


def _produce(settings: KafkaSettings, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = AtLeastOnceProducer(settings)
    for i, value in enumerate(values):
        producer.produce(topic, value, key=b"k%d" % i, partition=partition)
    producer.flush_and_verify(10)
    producer.close()


Record = tuple[bytes, int, int]  # value, partition, offset


def _records(batch: Batch[KafkaOrigin] | None) -> list[Record]:
    """What a polled batch carried, message by message."""
    if batch is None:
        return []
    origin = batch.origin
    return list(zip(batch.messages(), origin.partitions, origin.offsets, strict=True))


def _poll_until(
    consumers: list[BatchConsumer],
    done: Callable[[list[Record]], bool],
    timeout_s: float = 20.0,
) -> list[Record]:
    """Poll every consumer (serving rebalances) until `done(records so far)`."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while not done(got):
        assert time.monotonic() < deadline, "condition not met in time"
        for consumer in consumers:
            got.extend(_records(consumer.poll_batch(500, 0.1)))
    return got


def _read_committed(bootstrap: str, topic: str, partitions: int = 1) -> list[bytes | None]:
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes | None] = []
    eofs: set[int] = set()
    deadline = time.monotonic() + 15
    while len(eofs) < partitions and time.monotonic() < deadline:
        for msg in reader.consume(100, 0.2):
            if msg.error() is None:
                values.append(msg.value())
            else:
                eofs.add(msg.partition() or 0)
    reader.close()
    return values


def test_subscribe_poll_commit_and_lag(
    settings: KafkaSettings, new_topic: NewTopicFactory, consumers: list[BatchConsumer]
) -> None:
    topic = new_topic(partitions=2)
    _produce(settings, topic, [b"a%d" % i for i in range(10)], partition=0)
    _produce(settings, topic, [b"b%d" % i for i in range(5)], partition=1)
    listener = Recorder()
    consumer = BatchConsumer(settings, listener=listener)
    consumers.append(consumer)
    consumer.subscribe([topic])
    got = _poll_until([consumer], lambda got: len(got) >= 15)
    assert sorted(value for value, _, _ in got) == sorted(
        [b"a%d" % i for i in range(10)] + [b"b%d" % i for i in range(5)]
    )
    assert listener.assigned == {(topic, 0), (topic, 1)}
    assert consumer.lag() == {(topic, 0): 0, (topic, 1): 0}
    assert consumer.committed() == {(topic, 0): None, (topic, 1): None}
    consumer.commit_offsets({(topic, 0): 10, (topic, 1): 5})
    assert consumer.committed() == {(topic, 0): 10, (topic, 1): 5}


def test_a_batch_closes_once_its_messages_stop_coming_not_at_the_wait(
    settings: KafkaSettings, new_topic: NewTopicFactory, consumers: list[BatchConsumer]
) -> None:
    """SFA_BATCH_MAX_WAIT_MS is the wait for the first message: five messages on a quiet
    topic come back in one batch long before a 20 s wait is up (an end-of-day snapshot
    paid the whole wait per hop before)."""
    topic = new_topic(partitions=1)
    consumer = BatchConsumer(settings)
    consumers.append(consumer)
    consumer.subscribe([topic])
    _poll_until([consumer], lambda _: bool(consumer.assignment()))
    _produce(settings, topic, [b"m%d" % i for i in range(5)])
    started = time.monotonic()
    batch = consumer.poll_batch(20_000, 20.0)
    took = time.monotonic() - started
    assert [value for value, _, _ in _records(batch)] == [b"m%d" % i for i in range(5)]
    assert took < 10.0, took  # closed by the quiet after the burst, not by the 20 s wait


def test_pause_stops_delivery_until_resume(
    settings: KafkaSettings, new_topic: NewTopicFactory, consumers: list[BatchConsumer]
) -> None:
    topic = new_topic(partitions=1)
    _produce(settings, topic, [b"x%d" % i for i in range(100)])
    consumer = BatchConsumer(settings)
    consumers.append(consumer)
    consumer.subscribe([topic])
    first: list[Record] = []
    deadline = time.monotonic() + 20
    while not first and time.monotonic() < deadline:
        first = _records(consumer.poll_batch(10, 0.2))
    assert len(first) == 10  # the rest is prefetched locally by now
    consumer.pause([(topic, 0)])
    held: list[Record] = []
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        held += _records(consumer.poll_batch(500, 0.1))
    assert held == []
    consumer.resume([(topic, 0)])
    rest: list[Record] = []
    deadline = time.monotonic() + 20
    while len(rest) < 90 and time.monotonic() < deadline:
        rest += _records(consumer.poll_batch(500, 0.1))
    assert [offset for _, _, offset in rest] == list(range(10, 100))


def test_transaction_commit_is_visible_abort_is_not_and_rewind(
    kafka_bootstrap: str,
    settings: KafkaSettings,
    new_topic: NewTopicFactory,
    consumers: list[BatchConsumer],
) -> None:
    source, sink = new_topic(partitions=1), new_topic(partitions=1)
    _produce(settings, source, [b"in%d" % i for i in range(6)])
    consumer = BatchConsumer(settings)
    consumers.append(consumer)
    consumer.subscribe([source])
    batch = _poll_until([consumer], lambda got: len(got) >= 6)
    producer = TransactionalProducer(settings)
    try:
        producer.begin()
        for value, _, _ in batch[:3]:
            producer.produce(sink, b"out-" + value, key=b"k")
        producer.commit({(source, 0): 3}, consumer.group_metadata())
        assert consumer.committed() == {(source, 0): 3}

        producer.begin()
        producer.produce(sink, b"doomed", key=b"k")
        producer.abort()
        assert not producer.in_transaction
    finally:
        producer.close()
    assert _read_committed(kafka_bootstrap, sink) == [b"out-in0", b"out-in1", b"out-in2"]

    # After an abort the service re-reads from the committed offset.
    consumer.rewind_to_committed()
    again = _poll_until([consumer], lambda got: len(got) >= 3)
    assert [offset for _, _, offset in again] == [3, 4, 5]


def _member(settings: KafkaSettings, name: str) -> KafkaSettings:
    """Another instance of the same group: static members need their own instance ids."""
    return settings.model_copy(update={"instance_id": f"{settings.instance_id}-{name}"})


def test_two_members_split_four_partitions(
    settings: KafkaSettings, new_topic: NewTopicFactory, consumers: list[BatchConsumer]
) -> None:
    topic = new_topic(partitions=4)
    first, second = Recorder(), Recorder()
    consumers.append(BatchConsumer(_member(settings, "a"), listener=first))
    consumers[0].subscribe([topic])
    _poll_until(consumers[:1], lambda _: len(first.assigned) == 4)
    consumers.append(BatchConsumer(_member(settings, "b"), listener=second))
    consumers[1].subscribe([topic])
    _poll_until(consumers, lambda _: len(first.assigned) == len(second.assigned) == 2, 40)
    assert first.assigned.isdisjoint(second.assigned)
    assert first.assigned | second.assigned == {(topic, p) for p in range(4)}
    # Eager range: the first member gave all four up, then got its two back.
    assert [kind for kind, _ in first.events] == ["assigned", "revoked", "assigned"]
    assert set(consumers[0].assignment()) == first.assigned


def _driven(settings: KafkaSettings, twins: tuple[str, str]) -> tuple[BatchConsumer, CoreDriver]:
    driver = CoreDriver(twins)
    consumer = BatchConsumer(settings, listener=driver)
    driver.consumer = consumer
    return consumer, driver


def test_twins_are_held_and_processed_in_pairs(
    settings: KafkaSettings, new_topic: NewTopicFactory, consumers: list[BatchConsumer]
) -> None:
    """SPEC 7: input p and repartition p on one member, through a rebalance; a member
    subscribed to the input alone (an old version) gets lone twins, which the core keeps
    paused instead of processing them apart from their pair."""
    source, repartition = new_topic(partitions=4), new_topic(partitions=4)
    twins = (source, repartition)
    drivers: list[CoreDriver] = []
    for name, topics in (("a", list(twins)), ("b", list(twins))):
        consumer, driver = _driven(_member(settings, name), twins)
        consumers.append(consumer)
        drivers.append(driver)
        consumer.subscribe(topics)
        _poll_until(consumers, lambda _: len(drivers[0].assigned) == 8 // len(drivers), 40)
    first, second = drivers
    _poll_until(consumers, lambda _: len(first.assigned) == len(second.assigned) == 4, 40)
    for driver in drivers:
        numbers = {p for _, p in driver.assigned}
        assert driver.assigned == {(t, p) for t in twins for p in numbers}
        for resumed in driver.resumed:  # only whole pairs ever fetch
            assert resumed == {(t, p) for t in twins for p in {p for _, p in resumed}}
    # An input-only member joins: range splits the input three ways, the repartition
    # topic two ways, so some twins are apart. Only pairs are processed, lone ones paused.
    consumer, third = _driven(_member(settings, "c"), twins)
    consumers.append(consumer)
    drivers.append(third)
    consumer.subscribe([source])
    _poll_until(consumers, lambda _: len(consumers[2].assignment()) >= 1, 40)
    time.sleep(1.0)
    _poll_until(consumers, lambda _: True)  # the rebalance settles
    # Produced only now: a record read before the rebalance was read off a pair, which
    # was right then (CI once caught exactly that and called it a lone-twin read).
    _produce(settings, source, [b"x%d" % i for i in range(8)], partition=0)
    _produce(settings, source, [b"y%d" % i for i in range(8)], partition=3)
    time.sleep(1.0)
    got = _poll_until(consumers, lambda _: True)
    for driver, member in zip(drivers, consumers, strict=True):
        held = set(member.assignment())
        pairs = {p for t, p in held if t == source and (repartition, p) in held}
        assert driver.assigned == {(t, p) for t in twins for p in pairs}
    assert consumers[2].assignment() and not third.assigned  # it holds lone twins only
    processed = first.assigned | second.assigned | third.assigned
    read = {(source, p) for _, p, _ in got}
    assert read <= processed  # nothing was read off a lone twin


def test_ensure_topics_shapes_and_is_idempotent(
    settings: KafkaSettings, new_topic: NewTopicFactory, kafka_admin: AdminClient
) -> None:
    source = new_topic(partitions=3)
    suffix = uuid.uuid4().hex[:8]
    names = (f"out-{suffix}", f"dlq-{suffix}", f"state-{suffix}")
    try:
        assert ensure_topics(settings, source, *names) == 3
        assert ensure_topics(settings, source, *names) == 3  # second start: nothing to do
        meta = kafka_admin.list_topics(timeout=10).topics
        assert [len(meta[n].partitions) for n in names] == [3, 3, 3]
        resource = ConfigResource(ConfigResource.Type.TOPIC, names[2])
        config = kafka_admin.describe_configs([resource])[resource].result(timeout=10)
        assert config["cleanup.policy"].value == "compact"
        with pytest.raises(MissingTopicError, match="SFA_INPUT_TOPIC"):
            ensure_topics(settings, f"missing-{suffix}", *names)
    finally:
        delete_topics(kafka_admin, names)


def test_read_state_by_partition_after_transactions(
    settings: KafkaSettings, new_topic: NewTopicFactory
) -> None:
    state = new_topic(partitions=2, config={"cleanup.policy": "compact"})
    producer = TransactionalProducer(settings)
    try:
        producer.begin()
        producer.produce(state, b"v1", key=b"k1", partition=0)
        producer.produce(state, b"v2", key=b"k2", partition=0)
        producer.produce(state, b"other", key=b"k9", partition=1)
        producer.commit({}, None)
        producer.begin()
        producer.produce(state, b"bad", key=b"k1", partition=0)
        producer.abort()
        producer.begin()
        producer.produce(state, b"v1b", key=b"k1", partition=0)
        producer.produce(state, None, key=b"k2", partition=0)
        producer.commit({}, None)
    finally:
        producer.close()

    # Another writer's transaction is still open: restore must not wait for it
    # (a read_committed reader ends at the last stable offset).
    pending = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "transactional.id": f"open-{uuid.uuid4().hex[:8]}",
        }
    )
    pending.init_transactions(30)
    pending.begin_transaction()
    pending.produce(state, b"uncommitted", key=b"k1", partition=0)
    pending.flush(10)
    try:
        started = time.monotonic()
        records = read_state_by_partition(settings, state, [0], timeout_s=20)[0]
        assert time.monotonic() - started < 10
    finally:
        pending.abort_transaction(30)

    assert records == [(b"k1", b"v1"), (b"k2", b"v2"), (b"k1", b"v1b"), (b"k2", None)]
    assert read_state_by_partition(settings, state, [1], timeout_s=20) == {1: [(b"k9", b"other")]}
    assert read_state_by_partition(settings, state, [], timeout_s=20) == {}
