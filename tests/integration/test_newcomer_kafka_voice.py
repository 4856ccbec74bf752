"""One voice for Kafka and configuration failures: every command that talks to Kafka
(`topics`, `tail`, `produce`, `run`) turns a bad `KAFKA_*` property, an unreachable
broker, a broker without its port and a missing topic into the same last line and the
same exit code, as a newcomer typing them one after the other would meet them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

COMMANDS = ["topics create", "tail {topic} --timeout 1", "produce {bars}", "run"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once closed


def _sfa(command: str, tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    bars = tmp_path / "bars.jsonl"
    bars.write_text('{"symbol":"A.SH","date":"2020-01-02","close":1}\n')
    topic = env.get("SFA_INPUT_TOPIC", "stock-bars")
    args = command.format(topic=topic, bars=bars).split()
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={
            **os.environ,
            "SFA_METRICS_PORT": "0",
            "SFA_KAFKA_CONNECT_SECONDS": "1",  # the unreachable cases wait this long
            "DASK_ENABLE_DISTRIBUTED": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.returncode, done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_kafka_property_is_one_line_exit_2(
    kafka_bootstrap: str, command: str, tmp_path: Path
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_FOO_BAR": "1"}
    code, last = _sfa(command, tmp_path, env)
    assert (code, last) == (
        2,
        'sfa: configuration error: KAFKA_FOO_BAR: No such configuration property: "foo.bar"',
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_broker_is_one_line_with_a_hint_exit_1(command: str, tmp_path: Path) -> None:
    where = f"127.0.0.1:{_closed_port()}"
    code, last = _sfa(command, tmp_path, {"KAFKA_BOOTSTRAP_SERVERS": where})
    assert code == 1
    assert last.startswith(f"sfa: cannot reach Kafka at {where} (KAFKA_BOOTSTRAP_SERVERS): ")
    assert "Connection refused" in last and last.endswith("; is a broker running there?")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_broker_without_its_port_is_refused_exit_2(command: str, tmp_path: Path) -> None:
    code, last = _sfa(command, tmp_path, {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1"})
    assert code == 2
    assert last == (
        "sfa: configuration error: KAFKA_BOOTSTRAP_SERVERS: every broker needs its port: "
        "host:port[,host:port...], such as 127.0.0.1:9092 (got '127.0.0.1')"
    )


@pytest.mark.parametrize("command", ["tail {topic} --timeout 1", "produce {bars}", "run"])
def test_a_missing_topic_is_one_line_naming_sfa_topics_create_exit_1(
    kafka_bootstrap: str, command: str, tmp_path: Path
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SFA_INPUT_TOPIC": missing,
        "KAFKA_GROUP_ID": f"g-{missing}",
    }
    code, last = _sfa(command, tmp_path, env)
    named = "SFA_INPUT_TOPIC: " if command == "run" else ""
    assert (code, last) == (
        1,
        f"sfa: {named}topic '{missing}' does not exist on {kafka_bootstrap} "
        "(create it with: sfa topics create)",
    )
