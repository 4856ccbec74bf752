"""Make sure the topics the service writes exist, shaped like its input.

The input topic belongs to upstream producers: it must exist (its partition
count is the unit of parallelism and of state ownership), and creating it
here would hide a mistyped SFA_INPUT_TOPIC. Output, dead-letter and state
topics belong to the service and are created with the input's partition
count, so partition N of the state topic holds exactly the symbols of input
partition N. The state topic is compacted: it is a changelog, and only each
key's latest record is needed to restore.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from service.kafka.config import admin_config
from service.kafka.errors import KafkaFatalError, MissingTopicError, classify
from service.settings import Settings

__all__ = ["ensure_topics", "partition_count"]

_STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(admin_config(settings))


def partition_count(admin: AdminClient, topic: str, timeout_s: float = 30.0) -> int | None:
    """Partitions of `topic`, or None when it does not exist."""
    try:
        meta = admin.list_topics(topic=topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise classify(exc, f"describe topic {topic}") from exc
    if meta is None:
        return None
    if meta.error is not None:
        if meta.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise classify(KafkaException(meta.error), f"describe topic {topic}")
        return None
    return len(meta.partitions)


def ensure_topics(
    settings: Settings,
    input_topic: str,
    output_topic: str,
    dlq_topic: str,
    state_topic: str,
    *,
    create_input: bool = False,
    timeout_s: float = 30.0,
) -> int:
    """Create missing output/DLQ/state topics; return the input's partition count.

    Safe when several instances start at once: "already exists" counts as
    success. `create_input=True` (demos, tests) creates a one-partition input.
    """
    admin = _admin(settings)
    partitions = partition_count(admin, input_topic, timeout_s)
    if partitions is None:
        if not create_input:
            raise MissingTopicError(
                f"SFA_INPUT_TOPIC: topic {input_topic!r} does not exist on "
                f"{settings.kafka_bootstrap_servers} (create it upstream first)"
            )
        _create(admin, [NewTopic(input_topic, num_partitions=1)], timeout_s)
        partitions = 1
    wanted = [
        NewTopic(name, num_partitions=partitions, config=config)
        for name, config in (
            (output_topic, {}),
            (dlq_topic, {}),
            (state_topic, dict(_STATE_TOPIC_CONFIG)),
        )
        if partition_count(admin, name, timeout_s) is None
    ]
    _create(admin, wanted, timeout_s)
    state_partitions = partition_count(admin, state_topic, timeout_s)
    if state_partitions != partitions:
        # State for input partition N must live in state partition N.
        raise KafkaFatalError(
            f"SFA_STATE_TOPIC: {state_topic!r} has {state_partitions} partitions, "
            f"input {input_topic!r} has {partitions}; they must match"
        )
    admin.poll(0)  # hand librdkafka's queued log lines (config warnings) to the logger
    return partitions


def _create(admin: AdminClient, topics: list[NewTopic], timeout_s: float) -> None:
    if not topics:
        return
    futures = admin.create_topics(topics, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise classify(exc, f"create topic {name}") from exc
    _wait_until_visible(admin, [t.topic for t in topics], timeout_s)


def _wait_until_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Creation returns before metadata has every leader; producing earlier fails."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        meta = admin.list_topics(timeout=timeout_s).topics
        pending = {
            name
            for name in pending
            if name not in meta
            or meta[name].error is not None
            or any(p.leader < 0 for p in meta[name].partitions.values())
        }
        if pending and time.monotonic() > deadline:
            raise KafkaFatalError(f"topics not ready after {timeout_s} s: {sorted(pending)}")
        if pending:
            time.sleep(0.05)
