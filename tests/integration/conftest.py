"""Fixtures for tests against a real Kafka broker (no mocks anywhere).

The broker is shared by the whole session: `KAFKA_BOOTSTRAP_SERVERS` when set
(CI starts one with `make kafka-up`), otherwise `scripts/kafka.sh up` starts the
project's own one-node KRaft broker and the session stops it again at the end
(set `SFA_KAFKA_KEEP=1` to keep it running for the next run). Isolation comes
from names, not from brokers: every test gets uuid-named topics and groups, made
and removed through tests/integration/topics.py. Every `sfa run` a test starts goes
through the `sfa_run` fixture (tests/integration/launcher.py), which kills what a
failed test left running.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration import registry
from tests.integration.launcher import Launcher, launched
from tests.integration.topics import create_topics, delete_topics, service_names

__all__ = [
    "NewTopicFactory",
    "ServiceTopicsFactory",
    "group_id",
    "kafka_admin",
    "kafka_bootstrap",
    "new_topic",
    "service_topics",
    "sfa_run",
]

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


def pytest_collection_finish(session: pytest.Session) -> None:
    """The schema registry takes half a minute to start: begun now when a collected test
    needs it, the tests before it hide the wait (tests/integration/registry.py)."""
    registry.start_early(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    registry.finish_early()


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


@pytest.fixture()
def new_topic(kafka_admin: AdminClient) -> Iterator[NewTopicFactory]:
    """Factory: `new_topic(partitions=1, config=None, prefix="t") -> name`, created with
    a leader on every partition; deleted afterwards."""
    created: list[str] = []

    def make(partitions: int = 1, config: dict[str, str] | None = None, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        created.append(name)
        create_topics(kafka_admin, [name], partitions, config)
        return name

    yield make
    delete_topics(kafka_admin, created)


#: `service_topics(partitions) -> names`: an input topic made now, plus the names of
#: the output, dead-letter, state topics and group a service run will create and use.
ServiceTopicsFactory = Callable[[int], dict[str, str]]


@pytest.fixture()
def service_topics(kafka_admin: AdminClient) -> Iterator[ServiceTopicsFactory]:
    """The input is made here; everything the service creates for itself (output, dead
    letters, state and the `<group>-repartition` topic) is deleted afterwards too."""
    made: list[str] = []

    def make(partitions: int) -> dict[str, str]:
        names = service_names()
        made.extend([*(names[k] for k in ("input", "output", "dlq", "state"))])
        made.append(f"{names['group']}-repartition")
        create_topics(kafka_admin, [names["input"]], partitions)
        return names

    yield make
    delete_topics(kafka_admin, made)


@pytest.fixture()
def sfa_run(tmp_path: Path) -> Iterator[Launcher]:
    """Factory: `sfa_run(env, **options) -> SfaProcess` (tests/integration/launcher.py);
    every process still running at teardown is killed."""
    yield from launched(tmp_path)


@pytest.fixture()
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"
