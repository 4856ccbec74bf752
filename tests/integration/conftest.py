"""Fixtures for tests against a real Kafka broker (no mocks anywhere).

The broker is shared by the whole session: `KAFKA_BOOTSTRAP_SERVERS` when set
(CI starts one with `make kafka-up`), otherwise `scripts/kafka.sh up` starts the
project's own one-node KRaft broker and the session stops it again at the end
(set `SFA_KAFKA_KEEP=1` to keep it running for the next run). Isolation comes
from names, not from brokers: every test gets uuid-named topics and groups.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["NewTopicFactory", "group_id", "kafka_admin", "kafka_bootstrap", "new_topic"]

_REPO = Path(__file__).resolve().parents[2]
_SCRIPT = _REPO / "scripts" / "kafka.sh"

NewTopicFactory = Callable[..., str]


def _script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=_REPO,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a broker that answers; started here only when needed."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
        return
    port = os.environ.get("KAFKA_PORT", "9092")
    was_running = _script("status", 30).returncode == 0
    up = _script("up", 900)
    if up.returncode != 0:
        pytest.fail(f"could not start the Kafka broker:\n{up.stderr[-3000:]}", pytrace=False)
    yield f"127.0.0.1:{port}"
    if not was_running and os.environ.get("SFA_KAFKA_KEEP", "") not in ("1", "true", "yes"):
        _script("down", 120)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


def _wait_for_topic(admin: AdminClient, name: str, partitions: int, timeout_s: float) -> None:
    """CreateTopics returns before every partition has a leader; producing earlier can fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} not ready after {timeout_s} s")
        time.sleep(0.05)


@pytest.fixture()
def new_topic(kafka_admin: AdminClient) -> Iterator[NewTopicFactory]:
    """Factory: `new_topic(partitions=1, config=None, prefix="t") -> name`; deleted afterwards."""
    created: list[str] = []

    def make(partitions: int = 1, config: dict[str, str] | None = None, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        spec = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        kafka_admin.create_topics([spec], operation_timeout=30)[name].result(timeout=30)
        created.append(name)
        _wait_for_topic(kafka_admin, name, partitions, 30)
        return name

    yield make
    if created:
        futures = kafka_admin.delete_topics(created, operation_timeout=10)
        for future in futures.values():
            # Best effort: a leftover uuid-named topic harms nobody.
            with contextlib.suppress(KafkaException, TimeoutError):
                future.result(timeout=15)


#: `service_topics(partitions) -> names`: an input topic made now, plus the names of
#: the output, dead-letter, state topics and group a service run will create and use.
ServiceTopicsFactory = Callable[[int], dict[str, str]]


@pytest.fixture()
def service_topics(
    new_topic: NewTopicFactory, kafka_admin: AdminClient
) -> Iterator[ServiceTopicsFactory]:
    """Everything the service creates for itself (output, dead letters, state and the
    `<group>-repartition` topic) is deleted afterwards, best effort."""
    made: list[str] = []

    def make(partitions: int) -> dict[str, str]:
        tag = uuid.uuid4().hex[:10]
        names = {
            "input": new_topic(partitions=partitions, prefix="bars"),
            "output": f"out-{tag}",
            "dlq": f"dlq-{tag}",
            "state": f"state-{tag}",
            "group": f"g-{tag}",
        }
        made.extend([names["output"], names["dlq"], names["state"], f"g-{tag}-repartition"])
        return names

    yield make
    existing = set(kafka_admin.list_topics(timeout=10).topics)
    doomed = [name for name in made if name in existing]
    if doomed:
        for future in kafka_admin.delete_topics(doomed, operation_timeout=10).values():
            with contextlib.suppress(KafkaException, TimeoutError):
                future.result(timeout=15)


@pytest.fixture()
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"
