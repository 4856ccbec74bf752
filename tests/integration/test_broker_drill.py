"""Failure drill: the broker is SIGKILLed under a running `sfa run` and comes back.

The drill gets a broker of its own (another port, another data directory), so killing
it cannot disturb the session's shared broker. What must hold: the service rides out
the outage (librdkafka reconnects; an in-flight transaction that fails is aborted and
its batches replayed), and the committed output is still exactly once and equal to
`sfa replay` of the same input.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration.kafka_io import produce_keyed
from tests.integration.launcher import Launcher
from tests.integration.test_service import (
    _assert_once_and_as_replayed,
    _env,
    _stop,
    _values,
    expected,  # noqa: F401  (fixture)
    market,  # noqa: F401  (fixture)
)
from tests.integration.topics import create_topics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "kafka.sh"


def _two_free_ports() -> int:
    """A port whose successor is free too (the broker's controller listener)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two adjacent free ports")


class Broker:
    """A one-node broker of this test's own, started by the project's script."""

    def __init__(self, home: Path) -> None:
        self.port = _two_free_ports()
        self.home = home
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "SFA_KAFKA_HOME": str(home),
            "SFA_KAFKA_HEAP": "-Xms128m -Xmx512m",
        }

    def script(self, command: str) -> None:
        done = subprocess.run(
            ["bash", str(SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    def kill(self) -> None:
        pid = int((self.home / f"node-{self.port}" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError(f"broker {pid} survived SIGKILL")


@pytest.fixture()
def broker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Broker]:
    """Started after the session broker, so the jars are already in the shared cache."""
    home = tmp_path / "kafka"
    home.mkdir()
    shared_libs = REPO / ".cache" / "kafka" / "libs"
    if shared_libs.is_dir():
        (home / "libs").symlink_to(shared_libs)  # no second Maven fetch
    b = Broker(home)
    b.script("up")
    try:
        yield b
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=b.env, capture_output=True, timeout=120)
        shutil.rmtree(home / f"node-{b.port}", ignore_errors=True)


def _progress(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(committed offsets, end offsets) summed over the input's partitions; (-1, 0)
    while the broker is still finding its feet (a just-restarted broker answers
    NOT_COORDINATOR for a while)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        committed = consumer.committed(parts, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        return sum(max(tp.offset, 0) for tp in committed), sum(ends)
    except KafkaException:
        return -1, 0
    finally:
        consumer.close()


def _base_env(bootstrap: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SFA_METRICS_PORT": "0",
        "SFA_BATCH_MAX_WAIT_MS": "200",
        "SFA_MAX_MESSAGE_BYTES": "1000",
    }


def test_the_service_rides_out_a_killed_broker(
    broker: Broker,
    tmp_path: Path,
    market: Path,  # noqa: F811
    expected: dict[str, dict],  # noqa: F811
    sfa_run: Launcher,
) -> None:
    names = {
        "input": f"in-{uuid.uuid4().hex[:8]}",
        "output": f"out-{uuid.uuid4().hex[:8]}",
        "dlq": f"dlq-{uuid.uuid4().hex[:8]}",
        "state": f"state-{uuid.uuid4().hex[:8]}",
        "group": f"g-{uuid.uuid4().hex[:8]}",
    }
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create_topics(admin, [names["input"]], 3)
    values = _values(market)
    half = len(values) // 2
    produce_keyed(broker.bootstrap, names["input"], values[:half])
    env = _env(
        names,
        SFA_BATCH_MAX_MESSAGES="500",
        DASK_ENABLE_DISTRIBUTED="false",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_HEARTBEAT_INTERVAL_MS="1000",
    )
    proc = sfa_run({**os.environ, **_base_env(broker.bootstrap), **env})
    group, topic = names["group"], names["input"]
    proc.wait_for(
        "half the input committed",
        lambda: _progress(broker.bootstrap, group, topic)[0] >= half,
        120,
        poll=0.5,
    )

    broker.kill()
    time.sleep(3)  # the service notices: connections refused, requests time out
    proc.check_alive()  # the service did not die with the broker
    broker.script("up")  # same data directory: topics, offsets, transactions recover
    produce_keyed(broker.bootstrap, names["input"], values[half:])

    total = len(values)
    everything = (total, total)
    bootstrap = broker.bootstrap
    proc.wait_for(
        "the whole input committed",
        lambda: _progress(bootstrap, group, topic) == everything,
        180,
        poll=0.5,
    )
    assert _stop(proc) == 0
    _assert_once_and_as_replayed(broker.bootstrap, names["output"], expected)
