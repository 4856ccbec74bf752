"""The Kafka sink's delivery order (SPEC 7), with recording fakes for producer and consumer.

What the broker then does with those calls (transactions, fencing, offsets) is tested
against the real broker in tests/integration; here only the order is at stake.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from service.batches import Batch, BatchOutput, Forward
from service.decode.types import Reject
from service.kafka.message import KafkaOrigin
from service.kafka.sink import KafkaSink, SinkTopics
from tests.unit.fakes import CallLog, FakeConsumer, FakeProducer

TOPICS = SinkTopics(output="out", dlq="dlq", state="state", repartition="rep")
STATE_PARTITIONS = {b"s:A": 1, b"s:B": 0}


def _output(origin: KafkaOrigin | None = None) -> BatchOutput[KafkaOrigin]:
    origin = origin or KafkaOrigin("bars", [0, 1, 0], [10, 20, 11], [0, 0, 0])
    batch = Batch.of_values([b'{"a":1}', b"{bad", b'{"b":1}'], origin)
    return BatchOutput(
        seq=0,
        batch=batch,
        results=[("A", b"result-A"), ("B", b"result-B")],
        rejects=[Reject(1, None, "invalid_json", b"{bad")],
        state_records=[(b"s:A", b"state-A"), (b"s:B", b"state-B")],
        n_bars=2,
        statuses=Counter({"ok": 2}),
        executed_by=frozenset({"local"}),
        analysed=2,
        timings={},
    )


def _records(log: CallLog) -> list[tuple[str, ...]]:
    return [(c[1], c[2]) for c in log if c[0] == "produce"]


def _names(log: CallLog) -> list[str]:
    return [c[0] for c in log]


def test_exactly_once_sends_the_offsets_inside_the_transaction() -> None:
    log: CallLog = []
    producer, consumer = FakeProducer(log), FakeConsumer(log)
    committed: list[BatchOutput] = []
    sink = KafkaSink.exactly_once(
        producer,
        consumer,
        TOPICS,
        state_partition=STATE_PARTITIONS.get,
        on_committed=committed.append,
    )
    out = _output()
    asyncio.run(sink.write(out))
    assert _names(log) == ["begin", "produce", "produce", "produce", "produce", "produce", "commit"]
    assert _records(log) == [
        ("out", b"result-A"),
        ("out", b"result-B"),
        ("dlq", b"{bad"),
        ("state", b"state-A"),
        ("state", b"state-B"),
    ]
    # offsets = last offset + 1 per partition, with the consumer's group metadata
    assert log[-1] == ("commit", {("bars", 0): 12, ("bars", 1): 21}, FakeConsumer.GROUP_METADATA)
    assert "commit_offsets" not in _names(log)  # the consumer never commits on its own
    assert committed == [out]


def test_records_carry_keys_headers_and_state_partitions() -> None:
    log: CallLog = []
    sink = KafkaSink.exactly_once(
        FakeProducer(log), FakeConsumer(log), TOPICS, state_partition=STATE_PARTITIONS.get
    )
    sink.write_blocking(_output())
    produced = [c for c in log if c[0] == "produce"]
    assert [c[3] for c in produced[:2]] == [b"A", b"B"]  # results keyed by symbol
    headers = dict(produced[2][4])
    assert headers["sfa.reason"] == b"invalid_json"
    # the rejected message was message 1: partition 1, offset 20
    assert (headers["sfa.source.partition"], headers["sfa.source.offset"]) == (b"1", b"20")
    assert [(c[3], c[5]) for c in produced[3:]] == [(b"s:A", 1), (b"s:B", 0)]


def test_at_least_once_flushes_and_verifies_before_it_commits() -> None:
    log: CallLog = []
    sink = KafkaSink.at_least_once(
        FakeProducer(log), FakeConsumer(log), TOPICS, state_partition=STATE_PARTITIONS.get
    )
    sink.write_blocking(_output())
    names = _names(log)
    assert "begin" not in names and "commit" not in names
    assert names[-2:] == ["flush_and_verify", "commit_offsets"]
    assert all(n == "produce" for n in names[:-2])
    assert log[-1] == ("commit_offsets", {("bars", 0): 12, ("bars", 1): 21})


def test_at_least_once_commits_nothing_when_delivery_fails() -> None:
    log: CallLog = []
    committed: list[BatchOutput] = []
    failing = FakeProducer(log, fail_on="flush_and_verify", error=RuntimeError("not delivered"))
    sink = KafkaSink.at_least_once(
        failing,
        FakeConsumer(log),
        TOPICS,
        state_partition=STATE_PARTITIONS.get,
        on_committed=committed.append,
    )
    with pytest.raises(RuntimeError, match="not delivered"):
        asyncio.run(sink.write(_output()))
    assert "commit_offsets" not in _names(log)
    assert committed == []


def test_exactly_once_reports_nothing_when_the_commit_fails() -> None:
    log: CallLog = []
    committed: list[BatchOutput] = []
    sink = KafkaSink.exactly_once(
        FakeProducer(log, fail_on="commit"),
        FakeConsumer(log),
        TOPICS,
        state_partition=STATE_PARTITIONS.get,
        on_committed=committed.append,
    )
    with pytest.raises(RuntimeError):
        asyncio.run(sink.write(_output()))
    assert committed == []


def test_the_blocking_part_runs_where_the_service_says() -> None:
    log: CallLog = []
    ran: list[str] = []

    async def producer_thread(fn: object) -> None:
        ran.append("producer thread")
        assert callable(fn)
        fn()

    sink = KafkaSink.exactly_once(
        FakeProducer(log),
        FakeConsumer(log),
        TOPICS,
        state_partition=STATE_PARTITIONS.get,
        run=producer_thread,
    )
    asyncio.run(sink.write(_output()))
    assert ran == ["producer thread"] and _names(log)[-1] == "commit"


def test_a_dead_letter_keeps_its_source_messages_key() -> None:
    log: CallLog = []
    sink = KafkaSink.exactly_once(
        FakeProducer(log), FakeConsumer(log), TOPICS, state_partition=STATE_PARTITIONS.get
    )
    origin = KafkaOrigin("bars", [0, 1, 0], [10, 20, 11], [0, 0, 0], keys=[b"A", b"B.SH", None])
    sink.write_blocking(_output(origin))
    [dead] = [c for c in log if c[0] == "produce" and c[1] == "dlq"]
    assert dead[3] == b"B.SH"  # message 1 was rejected; its key was B.SH


def test_fencing_is_classified_as_its_own_fatal_error() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from service.kafka.errors import FencedError, KafkaFatalError, classify

    for code in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
        error = classify(KafkaException(KafkaError(code, "fenced", fatal=True)), "commit")
        assert isinstance(error, FencedError) and isinstance(error, KafkaFatalError)
    other = classify(KafkaException(KafkaError(KafkaError._STATE, "x", fatal=True)), "commit")
    assert not isinstance(other, FencedError)


def test_a_refused_permission_is_fatal_even_when_librdkafka_says_abort() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from service.kafka.errors import AbortableError, AuthorizationError, classify

    refused = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "refused", txn_requires_abort=True)
    assert isinstance(classify(KafkaException(refused), "commit"), AuthorizationError)
    for code in (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        assert isinstance(classify(KafkaException(KafkaError(code)), "x"), AuthorizationError)
    # the same abortable verdict for any other code still means "abort and retry"
    other = KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)
    assert type(classify(KafkaException(other), "commit")) is AbortableError


def test_a_leader_election_is_transient_even_unmarked() -> None:
    """A watermark query right after a topic is created can meet NOT_LEADER_FOR_PARTITION
    with librdkafka's retriable flag unset: waiting fixes it, dying does not."""
    from confluent_kafka import KafkaError, KafkaException

    from service.kafka.errors import KafkaRetriableError, classify

    for code in (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE):
        error = classify(KafkaException(KafkaError(code)), "read end offsets")
        assert isinstance(error, KafkaRetriableError)
    unknown = classify(KafkaException(KafkaError(KafkaError.INVALID_CONFIG)), "x")
    assert not isinstance(unknown, KafkaRetriableError)


def _forwarding_output() -> BatchOutput:
    origin = KafkaOrigin(
        "bars", [0, 2, 1], [10, 5, 11], [100, 200, 300], topics=["bars", "rep", "bars"]
    )
    out = _output(origin)
    out.forwards = [Forward(3, b"C", b'{"symbol":"C"}', 100, 1), Forward(0, None, b"{}", 300, 2)]
    return out


def test_forwarded_records_go_in_the_transaction_with_their_timestamps() -> None:
    log: CallLog = []
    sink = KafkaSink.exactly_once(
        FakeProducer(log), FakeConsumer(log), TOPICS, state_partition=STATE_PARTITIONS.get
    )
    sink.write_blocking(_forwarding_output())
    assert log[0] == ("begin",)
    forwarded = [c for c in log if c[0] == "produce" and c[1] == "rep"]
    assert forwarded == [
        ("produce", "rep", b'{"symbol":"C"}', b"C", (), 3, 100),
        ("produce", "rep", b"{}", None, (), 0, 300),
    ]
    # both topics' offsets commit in the same transaction
    assert log[-1] == (
        "commit",
        {("bars", 0): 11, ("rep", 2): 6, ("bars", 1): 12},
        FakeConsumer.GROUP_METADATA,
    )
    dead = [c for c in log if c[0] == "produce" and c[1] == "dlq"]
    assert dict(dead[0][4])["sfa.source.topic"] == b"rep"  # message 1 came from "rep"


def test_at_least_once_flushes_forwarded_bars_before_committing() -> None:
    log: CallLog = []
    sink = KafkaSink.at_least_once(
        FakeProducer(log), FakeConsumer(log), TOPICS, state_partition=STATE_PARTITIONS.get
    )
    sink.write_blocking(_forwarding_output())
    names = _names(log)
    last_forward = max(i for i, c in enumerate(log) if c[0] == "produce" and c[1] == "rep")
    assert last_forward < names.index("flush_and_verify") < names.index("commit_offsets")


def test_forwards_without_a_repartition_topic_are_refused() -> None:
    log: CallLog = []
    topics = SinkTopics(output="out", dlq="dlq", state="state")
    sink = KafkaSink.exactly_once(
        FakeProducer(log), FakeConsumer(log), topics, state_partition=STATE_PARTITIONS.get
    )
    with pytest.raises(TypeError):
        sink.write_blocking(_forwarding_output())
    assert log == []
