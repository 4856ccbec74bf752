"""The quickstart's topics and instances as a newcomer runs them, against the real broker:
internal topics named per group (SPEC 9), starting again clean with `sfa topics delete`,
and a second `sfa run` on the same machine with only its own `SFA_METRICS_PORT`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.launcher import Launcher
from tests.integration.test_service_ops import _free_port
from tests.integration.topics import delete_topics

pytestmark = pytest.mark.integration


def _sfa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def quickstart(kafka_bootstrap: str, kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    """The quickstart's environment with this test's own names; its topics deleted after."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_GROUP_ID": f"g-{tag}",
        "SFA_INPUT_TOPIC": f"in-{tag}",
        "SFA_OUTPUT_TOPIC": f"out-{tag}",
        "SFA_DLQ_TOPIC": f"dlq-{tag}",
    }
    yield env
    names = [f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"g-{tag}-state", f"g-{tag}-repartition"]
    delete_topics(kafka_admin, names)


def test_topics_are_per_group_and_delete_starts_again_clean(
    quickstart: dict[str, str], kafka_admin: AdminClient
) -> None:
    group = quickstart["KAFKA_GROUP_ID"]
    made = _sfa(quickstart, "topics", "create", "--partitions", "2", "--all")
    assert made.returncode == 0, made.stderr
    assert f"topics: {group}-state (SFA_STATE_TOPIC): created, 2 partition(s)" in made.stdout
    assert f"topics: {group}-repartition (SFA_REPARTITION_TOPIC): created, 2 partition(s)" in (
        made.stdout
    )
    ours = {quickstart[v] for v in ("SFA_INPUT_TOPIC", "SFA_OUTPUT_TOPIC", "SFA_DLQ_TOPIC")}
    ours |= {f"{group}-state", f"{group}-repartition"}

    asked = _sfa(quickstart, "topics", "delete", "--all")
    assert asked.returncode == 2
    assert asked.stderr.strip().endswith("; add --yes to delete them")
    assert ours <= set(kafka_admin.list_topics(timeout=10).topics)  # nothing deleted

    gone = _sfa(quickstart, "topics", "delete", "--all", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.count(": deleted") == 5
    assert not ours & set(kafka_admin.list_topics(timeout=10).topics)
    again = _sfa(quickstart, "topics", "create", "--partitions", "2", "--all")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": created") == 5


def test_a_second_instance_on_one_machine_needs_only_its_own_metrics_port(
    quickstart: dict[str, str], kafka_admin: AdminClient, tmp_path: Path, sfa_run: Launcher
) -> None:
    made = _sfa(quickstart, "topics", "create", "--partitions", "2")
    assert made.returncode == 0, made.stderr
    group = quickstart["KAFKA_GROUP_ID"]
    base = {**os.environ, **quickstart, "DASK_ENABLE_DISTRIBUTED": "false"}
    base.pop("SFA_INSTANCE_ID", None)
    first = sfa_run({**base, "SFA_METRICS_PORT": str(_free_port())}, log_path=tmp_path / "a.log")
    second = sfa_run({**base, "SFA_METRICS_PORT": str(_free_port())}, log_path=tmp_path / "b.log")
    try:
        deadline = time.monotonic() + 90
        while True:
            first.check_alive()  # a fenced instance exits 3
            second.check_alive()
            described = kafka_admin.describe_consumer_groups([group])[group].result(timeout=10)
            if len(described.members) == 2 and str(described.state).endswith("STABLE"):
                break
            assert time.monotonic() < deadline, "the two instances never shared the group"
            time.sleep(0.2)
        ids = {m.group_instance_id for m in described.members}
        assert len(ids) == 2
        assert first.stop()[0] == 0
        assert second.stop()[0] == 0
    finally:
        first.close()
        second.close()
