"""Make sure the topics the service writes exist, shaped like its input; and the
topic tools of the `sfa` command (`sfa topics create`, `sfa tail`, `sfa produce`).

The input topic belongs to upstream producers: it must exist (its partition
count is the unit of parallelism and of state ownership), and creating it
here would hide a mistyped SFA_INPUT_TOPIC. Output, dead-letter and state
topics belong to the service and are created with the input's partition
count, so partition N of the state topic holds exactly the symbols of input
partition N. The state topic is compacted: it is a changelog, and only each
key's latest record is needed to restore. The repartition topic (SPEC 7) carries
forwarded bars from the partition that read them to partition owner(s): same
partition count (its partition p travels with input partition p), and short
retention with delete cleanup, because a forwarded bar is read within moments by
the owner and then lives on in the state topic, never again here.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from service.errors import SfaError
from service.kafka.config import admin_config, restore_config
from service.kafka.errors import KafkaFatalError, MissingTopicError, classify
from service.settings import KafkaSettings

__all__ = [
    "TopicPlan",
    "TopicShape",
    "create_topics",
    "delete_topics",
    "ensure_topics",
    "missing_topic",
    "partition_count",
    "require_topic",
    "tail_records",
    "topic_plans",
]

_STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
# One day: far longer than a forwarded bar waits for its owner (seconds), short enough
# that a snapshot feed's forwarded copies never pile up.
_REPARTITION_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)}


def missing_topic(settings: KafkaSettings, topic: str, variable: str = "") -> MissingTopicError:
    """The one wording of a missing topic, whichever command meets it."""
    return MissingTopicError(
        f"{variable + ': ' if variable else ''}topic {topic!r} does not exist on "
        f"{settings.kafka_bootstrap_servers} (create it with: sfa topics create)"
    )


def _admin(settings: KafkaSettings) -> AdminClient:
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
    settings: KafkaSettings,
    input_topic: str,
    output_topic: str,
    dlq_topic: str,
    state_topic: str,
    *,
    repartition_topic: str | None = None,
    create_input: bool = False,
    timeout_s: float = 30.0,
) -> int:
    """Create missing output/DLQ/state (and repartition) topics; return the input's
    partition count. The state and repartition topics must have the input's count.

    Safe when several instances start at once: "already exists" counts as
    success. `create_input=True` (demos, tests) creates a one-partition input.
    """
    admin = _admin(settings)
    partitions = partition_count(admin, input_topic, timeout_s)
    if partitions is None:
        if not create_input:
            raise missing_topic(settings, input_topic, "SFA_INPUT_TOPIC")
        _create(admin, [NewTopic(input_topic, num_partitions=1)], timeout_s)
        partitions = 1
    wanted = [
        NewTopic(name, num_partitions=partitions, config=config)
        for name, config in (
            (output_topic, {}),
            (dlq_topic, {}),
            (state_topic, dict(_STATE_TOPIC_CONFIG)),
            *(
                [(repartition_topic, dict(_REPARTITION_TOPIC_CONFIG))]
                if repartition_topic is not None
                else []
            ),
        )
        if partition_count(admin, name, timeout_s) is None
    ]
    _create(admin, wanted, timeout_s)
    # State for input partition N lives in state partition N; bars input partition N
    # owns are forwarded to repartition partition N.
    shaped = [("SFA_STATE_TOPIC", state_topic)]
    if repartition_topic is not None:
        shaped.append(("SFA_REPARTITION_TOPIC", repartition_topic))
    for variable, name in shaped:
        have = partition_count(admin, name, timeout_s)
        if have != partitions:
            raise KafkaFatalError(
                f"{variable}: {name!r} has {have} partitions, "
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


# --- the `sfa` topic tools ---


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """A topic `sfa topics create` makes: its name, the variable naming it, its config."""

    name: str
    variable: str
    config: dict[str, str]


def topic_plans(settings: KafkaSettings, service_topics: bool) -> list[TopicPlan]:
    """The input topic, and with `service_topics` every one `sfa run` would create
    (output, dead letters, the compacted state topic, the repartition topic), shaped as
    `ensure_topics` does: an operator whose service may not create topics makes them
    all here, with the input's partition count."""
    plans = [TopicPlan(settings.input_topic, "SFA_INPUT_TOPIC", {})]
    if service_topics:
        plans += [
            TopicPlan(settings.output_topic, "SFA_OUTPUT_TOPIC", {}),
            TopicPlan(settings.dlq_topic, "SFA_DLQ_TOPIC", {}),
            TopicPlan(settings.state_topic, "SFA_STATE_TOPIC", dict(_STATE_TOPIC_CONFIG)),
            TopicPlan(
                settings.effective_repartition_topic,
                "SFA_REPARTITION_TOPIC",
                dict(_REPARTITION_TOPIC_CONFIG),
            ),
        ]
    return plans


def create_topics(
    settings: KafkaSettings,
    plans: list[TopicPlan],
    partitions: int,
    replication_factor: int | None = None,
    timeout_s: float = 10.0,
) -> list[tuple[str, str]]:
    """Create what is missing; `(name, "created" | "exists")` per plan, in order.

    Idempotent: a topic that exists with `partitions` partitions is fine; one with
    another count is one line naming it (partitions are never changed here: state
    ownership depends on the count).
    """
    admin = _admin(settings)
    found = {plan.name: partition_count(admin, plan.name, timeout_s) for plan in plans}
    for plan in plans:
        have = found[plan.name]
        if have is not None and have != partitions:
            raise SfaError(
                f"{plan.variable}: topic {plan.name!r} exists with {have} partition(s), "
                f"not {partitions}; delete it or ask for --partitions {have}"
            )
    missing = [
        NewTopic(
            plan.name,
            num_partitions=partitions,
            replication_factor=replication_factor or -1,  # -1: the broker's default
            config=plan.config,
        )
        for plan in plans
        if found[plan.name] is None
    ]
    _create(admin, missing, timeout_s)
    return [(plan.name, "exists" if found[plan.name] else "created") for plan in plans]


def delete_topics(
    settings: KafkaSettings, plans: list[TopicPlan], timeout_s: float = 30.0
) -> list[tuple[str, str]]:
    """Delete the planned topics; `(name, "deleted" | "absent")` per plan, in order.
    Returns once the broker no longer lists them, so `sfa topics create` may follow at
    once (a topic still being deleted cannot be created again)."""
    admin = _admin(settings)
    found = {plan.name: partition_count(admin, plan.name, timeout_s) for plan in plans}
    doomed = [plan.name for plan in plans if found[plan.name] is not None]
    if doomed:
        futures = admin.delete_topics(doomed, operation_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise classify(exc, f"delete topic {name}") from exc
        deadline = time.monotonic() + timeout_s
        while any(partition_count(admin, name, timeout_s) is not None for name in doomed):
            if time.monotonic() > deadline:
                raise KafkaFatalError(f"topics still listed after {timeout_s} s: {doomed}")
            time.sleep(0.1)
    return [(plan.name, "deleted" if found[plan.name] else "absent") for plan in plans]


@dataclass(frozen=True, slots=True)
class TopicShape:
    """What a writer needs to know of a topic: partitions, and the record size it takes."""

    partitions: int
    max_message_bytes: int | None  # None: not allowed to describe it


def require_topic(settings: KafkaSettings, topic: str, timeout_s: float = 10.0) -> TopicShape:
    """Check `topic` exists before writing to it (librdkafka would wait for it for
    `message.timeout.ms`); return its partition count and `max.message.bytes`."""
    admin = _admin(settings)
    partitions = partition_count(admin, topic, timeout_s)
    if partitions is None:
        raise missing_topic(settings, topic)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout_s)[resource]
        value = entries.result(timeout=timeout_s).get("max.message.bytes")
    except (KafkaException, TimeoutError):
        return TopicShape(partitions, None)  # the broker will still say per record
    limit = int(value.value) if value is not None and value.value else None
    return TopicShape(partitions, limit)


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


def _headers(msg: Message) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for header in msg.headers() or []:
        name, data = header[0], header[1]
        out[str(name)] = data if isinstance(data, str) else _text(data)
    return out


def _value(data: bytes | None) -> Any:
    """A JSON value as itself (embedded as is), anything else as text."""
    if data is None:
        return None
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return _text(data)
    return orjson.Fragment(data)


def tail_records(
    settings: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
    decode: Callable[[bytes], Any] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> Iterator[bytes]:
    """Committed records of `topic` (read_committed: an aborted transaction's output
    never shows), one JSON object each: key, partition, offset, timestamp (ms),
    value (JSON embedded as is, else text), headers (a name -> text object; a
    repeated name keeps its last value). Stops after `max_records`, or after
    `idle_timeout_s` without a record, or once `stopped()` (asked between polls: Ctrl-C);
    no group is joined and nothing is committed. `decode`, when given, renders a value it
    can read (wire-format Avro) and returns None for the rest, which are shown as usual.
    """
    admin = _admin(settings)
    partitions = partition_count(admin, topic, 10.0)
    if partitions is None:
        raise missing_topic(settings, topic)
    conf = restore_config(settings)
    conf["enable.partition.eof"] = False
    consumer = Consumer(conf)
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    try:
        consumer.assign([TopicPartition(topic, p, start) for p in range(partitions)])
        seen = 0
        last = time.monotonic()
        while (max_records is None or seen < max_records) and not stopped():
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last >= idle_timeout_s:
                    return
                continue
            if msg.error() is not None:
                raise classify(KafkaException(msg.error()), f"read {topic}")
            last = time.monotonic()
            seen += 1
            data = msg.value()
            decoded = decode(data) if decode is not None and data is not None else None
            yield orjson.dumps(
                {
                    "key": _text(msg.key()),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp": msg.timestamp()[1],
                    "value": _value(data) if decoded is None else decoded,
                    "headers": _headers(msg),
                },
                default=str,
            )
    finally:
        consumer.close()
