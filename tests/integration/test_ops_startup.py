"""Start-up as an operator meets it, against the real broker: an unreachable broker is
one line with librdkafka's reason, signals are honoured at every moment, /readyz says
why it is not ready, configuration that librdkafka or Dask would choke on fails at
start, dead letters keep their key, and a fenced instance says what to change."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from tests.integration.conftest import ServiceTopicsFactory
from tests.integration.kafka_io import produce_keyed, read_committed
from tests.integration.launcher import Launcher, SfaProcess
from tests.integration.test_service_ops import _cli, _env, _free_port, _get

pytestmark = pytest.mark.integration

SECRET = f"oauth-{uuid.uuid4().hex}"


def _closed_port() -> int:
    return _free_port()  # nothing listens there once the probe socket is closed


def _base(bootstrap: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SFA_METRICS_PORT": "0",
        "DASK_ENABLE_DISTRIBUTED": "false",
        "SFA_INPUT_TOPIC": f"missing-{uuid.uuid4().hex[:8]}",
        **extra,
    }


def _assert_one_line_error(stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, last
    for line in stderr.strip().splitlines()[:-1]:
        json.loads(line)  # everything before the error line is the JSON log
    return last


@pytest.fixture()
def topics(service_topics: ServiceTopicsFactory) -> dict[str, str]:
    return service_topics(2)


# --- unreachable brokers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({}, "Connection refused"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "SSL handshake failed"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": "sfa",
                "KAFKA_SASL_PASSWORD": SECRET,
            },
            "SASL",
        ),
    ],
)
def test_an_unreachable_broker_is_one_line_with_librdkafkas_reason(
    kafka_bootstrap: str, extra: dict[str, str], reason: str
) -> None:
    # Refused: a closed port. TLS and SASL: the real broker, which speaks plaintext only.
    bootstrap = f"127.0.0.1:{_closed_port()}" if not extra else kafka_bootstrap
    started = time.monotonic()
    done = _cli("run", env=_base(bootstrap, **extra), timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1
    _assert_one_line_error(done.stderr, "cannot reach Kafka at", bootstrap, reason)
    assert SECRET not in done.stderr
    assert took < 20, f"took {took:.1f} s"  # about 10 s: SFA_KAFKA_CONNECT_SECONDS


# --- signals --------------------------------------------------------------------------


def _start_unreachable(sfa_run: Launcher, tmp_path: Path, port: int) -> SfaProcess:
    env = _base(
        f"127.0.0.1:{_closed_port()}",
        SFA_KAFKA_CONNECT_SECONDS="300",
        SFA_METRICS_PORT=str(port),
    )
    return sfa_run(env, log_path=tmp_path / "run.log")


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_stops_at_once_and_readyz_said_why(
    tmp_path: Path, sfa_run: Launcher, number: signal.Signals
) -> None:
    port = _free_port()
    service = _start_unreachable(sfa_run, tmp_path, port)
    try:
        _wait_for("/readyz", lambda: "connecting to Kafka" in _get(port, "/readyz")[1])
        status, text = _get(port, "/readyz")
        body = json.loads(text)
        assert status == 503 and body["status"] == "not_ready"
        assert body["reason"].startswith("connecting to Kafka at 127.0.0.1:")
        assert body["stage"] == body["reason"]
        assert _get(port, "/healthz")[0] == 200  # starting is not stalled
        started = time.monotonic()
        service.proc.send_signal(number)
        code = service.proc.wait(30)
        took = time.monotonic() - started
    finally:
        service.close()
    assert code == 0
    assert took < 10, f"took {took:.1f} s to honour {number.name}"
    text = service.log_path.read_text()
    assert "Traceback" not in text
    assert service.records()[-1]["msg"] == "stopped"


def test_a_second_signal_exits_at_once_with_one_line_and_no_traceback(
    tmp_path: Path, sfa_run: Launcher
) -> None:
    port = _free_port()
    service = _start_unreachable(sfa_run, tmp_path, port)
    try:
        _wait_for("/readyz", lambda: _get(port, "/readyz")[0] == 503)
        # The first signal starts a shutdown; a second one, right behind it, ends it now.
        service.proc.send_signal(signal.SIGINT)
        service.proc.send_signal(signal.SIGINT)
        code = service.proc.wait(30)
    finally:
        service.close()
    assert code in (0, 128 + signal.SIGINT)  # 0 when the first won the race to the end
    text = service.log_path.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    for line in text.strip().splitlines():
        if not line.startswith("{"):
            assert line == "sfa: second signal (SIGINT): exiting now"


# --- configuration that fails at start ------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KAFKA_NOT_A_PROPERTY", "1"),
        ("KAFKA_SECURITY_PROTOCOL", "bogus"),
        ("DASK_MEMORY_LIMIT", "banana"),
        ("DASK_MEMORY_LIMIT", "-5GB"),
        ("DASK_SCHEDULER_ADDRESS", "garbage"),
        ("DASK_MEMORY_PAUSE_FRACTION", "0.5"),
        ("SFA_BATCH_MAX_MESSAGES", "9" * 40),
        ("KAFKA_GROUP_ID", ""),
    ],
)
def test_a_bad_value_exits_2_in_one_line_before_anything_starts(
    kafka_bootstrap: str, variable: str, value: str
) -> None:
    env = _base(kafka_bootstrap, KAFKA_SASL_PASSWORD=SECRET, **{variable: value})
    env["KAFKA_SERVICE_HOST"] = "10.96.0.12"  # a service link is never the culprit
    done = _cli("run", env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"sfa: configuration error: {variable}: ")
    assert SECRET not in done.stderr and "coroutine" not in done.stderr


def test_a_refused_scheduler_port_fails_fast(kafka_bootstrap: str, topics: dict[str, str]) -> None:
    address = f"tcp://127.0.0.1:{_closed_port()}"
    env = _env(
        kafka_bootstrap,
        topics,
        DASK_ENABLE_DISTRIBUTED="true",
        DASK_SCHEDULER_ADDRESS=address,
        SFA_DASK_FALLBACK="fail",
        DASK_CONNECT_TIMEOUT="60s",
    )
    started = time.monotonic()
    done = _cli("run", env=env, timeout=90)
    took = time.monotonic() - started
    assert done.returncode == 1
    _assert_one_line_error(done.stderr, address, "refused")
    assert took < 30, f"took {took:.1f} s, as if waiting out DASK_CONNECT_TIMEOUT"


# --- a run with Kubernetes' variables, secrets and bad records ------------------------


def _listening(pid: int) -> set[tuple[str, int]]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        (c.laddr.ip, c.laddr.port)
        for p in procs
        for c in p.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }


def test_service_links_are_ignored_dead_letters_keep_their_key_secrets_stay_masked(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, sfa_run: Launcher
) -> None:
    good = orjson.dumps({"symbol": "A.SH", "date": "2020-01-02", "close": 1.0})
    bad = orjson.dumps({"symbol": "B.SH", "date": "2020/01/02", "close": 1.0})
    produce_keyed(kafka_bootstrap, topics["input"], [good, bad, b"{not json"])
    port = _free_port()
    env = _env(
        kafka_bootstrap,
        topics,
        SFA_METRICS_PORT=str(port),
        SFA_LOG_LEVEL="debug",
        SFA_MAX_MESSAGE_BYTES="1048576",
        # What Kubernetes injects for a Service named kafka.
        KAFKA_SERVICE_HOST="10.96.0.12",
        KAFKA_SERVICE_PORT="9092",
        KAFKA_PORT="tcp://10.96.0.12:9092",
        KAFKA_PORT_9092_TCP="tcp://10.96.0.12:9092",
        KAFKA_PORT_9092_TCP_PROTO="tcp",
        KAFKA_PORT_9092_TCP_PORT="9092",
        KAFKA_PORT_9092_TCP_ADDR="10.96.0.12",
        # Harmless for a PLAINTEXT broker, and secret inside a composite value.
        KAFKA_SASL_OAUTHBEARER_CONFIG=f"clientId=sfa clientSecret={SECRET} scope=bars",
        # A LocalCluster (threads): it must not listen anywhere but on loopback.
        DASK_ENABLE_DISTRIBUTED="true",
        SFA_DASK_PROCESSES="false",
        DASK_N_WORKERS="1",
    )
    service = sfa_run(env, log_path=tmp_path / "run.log")
    try:
        deadline = time.monotonic() + 120

        def dead_letters() -> int:
            if not _dlq_exists(kafka_bootstrap, topics["dlq"]):
                return 0
            return len(read_committed(kafka_bootstrap, topics["dlq"], 30))

        while dead_letters() < 2:
            service.check_alive()
            assert time.monotonic() < deadline, "no dead letters"
            time.sleep(0.5)
        listening = _listening(service.proc.pid)
        code, _ = service.stop()
    finally:
        service.close()
    assert code == 0
    dead = read_committed(kafka_bootstrap, topics["dlq"])
    assert sorted(m.key() or b"" for m in dead) == [b"", b"B.SH"]  # unkeyed {not json stays so
    assert {ip for ip, p in listening if p != port} == {"127.0.0.1"}, listening
    text = service.log_path.read_text()
    assert SECRET not in text
    records = service.records()
    ignored = {
        r["msg"].split()[1].rstrip(":") for r in records if r["msg"].startswith("ignoring KAFKA_")
    }
    assert {"KAFKA_SERVICE_HOST", "KAFKA_PORT", "KAFKA_PORT_9092_TCP_ADDR"} <= ignored
    starting = next(r for r in records if r["msg"] == "starting")
    shown = starting["settings"]["kafka_extra"]["sasl.oauthbearer.config"]
    assert shown == "clientId=sfa clientSecret=*** scope=bars"
    # The first line names the native builds a core dump's backtrace needs.
    assert records[0]["msg"] == "starting"
    native = starting["native"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", native["librdkafka"]), native
    assert re.fullmatch(r"\d+\.\d+\.\d+[a-z]?", native["librdkafka_openssl"]), native


def _dlq_exists(bootstrap: str, topic: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return topic in admin.list_topics(timeout=10).topics


# --- fencing --------------------------------------------------------------------------


def test_a_fenced_instance_says_to_give_each_instance_its_own_id(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, sfa_run: Launcher
) -> None:
    env = _env(
        kafka_bootstrap,
        topics,
        SFA_INSTANCE_ID=f"same-{uuid.uuid4().hex[:6]}",
        SFA_BATCH_MAX_MESSAGES="50",
        SFA_BATCH_MAX_WAIT_MS="50",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_HEARTBEAT_INTERVAL_MS="1000",
    )
    bar = b'{"symbol":"%s","date":"2020-01-%02d","close":1.0}'
    values = [bar % (f"S{i % 40}".encode(), 2 + i % 20) for i in range(400)]
    produce_keyed(kafka_bootstrap, topics["input"], values)
    first = sfa_run(env, log_path=tmp_path / "first.log")
    second: SfaProcess | None = None
    try:
        _wait_for(
            "the first instance to commit",
            lambda: any(r["msg"] == "partitions assigned" for r in first.records()),
            120,
        )
        second = sfa_run(env, log_path=tmp_path / "second.log")
        deadline = time.monotonic() + 120
        while first.proc.poll() is None:
            produce_keyed(kafka_bootstrap, topics["input"], values[:50])
            assert time.monotonic() < deadline, "the first instance was never fenced"
            time.sleep(0.5)
    finally:
        first.close()
        if second is not None:
            second.close()
    assert first.proc.returncode == 3
    last = first.records()[-1]
    assert last["level"] == "ERROR"
    assert "give each instance its own SFA_INSTANCE_ID" in last["msg"]
    assert "Traceback" not in first.log_path.read_text()


def _impostor(bootstrap: str, group: str, instance: str, topic: str) -> Consumer:
    """A bare consumer that joins `group` under `instance`, which fences whoever held it."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": instance,
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


def _fences(process: SfaProcess) -> int:
    return sum(r["msg"].startswith("consumer fenced, joining") for r in process.records())


def test_a_member_fenced_once_joins_again_and_fenced_twice_in_a_minute_exits_3(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, sfa_run: Launcher
) -> None:
    """A lone static member can fence itself after a coordinator stall (the frozen-broker
    drill met it). A member fenced once is not a duplicate instance: it joins again and
    goes on delivering; fenced again within a minute, it is one, and exits 3 saying so.
    The fence comes from a real second member with our group.instance.id."""
    instance = f"fence-{uuid.uuid4().hex[:6]}"
    env = _env(
        kafka_bootstrap,
        topics,
        SFA_INSTANCE_ID=instance,
        SFA_BATCH_MAX_MESSAGES="50",
        SFA_BATCH_MAX_WAIT_MS="50",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_HEARTBEAT_INTERVAL_MS="500",
    )
    bar = b'{"symbol":"%s","date":"2020-01-%02d","close":1.0}'
    produce_keyed(kafka_bootstrap, topics["input"], [bar % (b"BEFORE", 2 + i) for i in range(5)])
    service = sfa_run(env, log_path=tmp_path / "service.log")
    impostors: list[Consumer] = []
    try:
        _wait_for("a first result", lambda: _results_of(kafka_bootstrap, topics, b"BEFORE"), 120)
        impostors.append(_impostor(kafka_bootstrap, topics["group"], instance, topics["input"]))
        deadline = time.monotonic() + 60
        while _fences(service) < 1:
            service.check_alive()
            assert time.monotonic() < deadline, "the instance was never fenced"
            with contextlib.suppress(KafkaException):
                impostors[0].poll(0.2)  # joins; fenced in turn once the instance rejoins
        produce_keyed(kafka_bootstrap, topics["input"], [bar % (b"AFTER", 2 + i) for i in range(5)])
        _wait_for(
            "a result after the rejoin", lambda: _results_of(kafka_bootstrap, topics, b"AFTER"), 60
        )
        service.check_alive()
        # Within the minute: a second fence is another instance with our id.
        impostors.append(_impostor(kafka_bootstrap, topics["group"], instance, topics["input"]))
        deadline = time.monotonic() + 60
        while service.proc.poll() is None:
            assert time.monotonic() < deadline, "a second fence did not end the instance"
            with contextlib.suppress(KafkaException):
                impostors[1].poll(0.2)
    finally:
        service.close()
        for impostor in impostors:
            with contextlib.suppress(KafkaException, RuntimeError):
                impostor.close()
    assert service.proc.returncode == 3
    last = service.records()[-1]
    assert last["level"] == "ERROR" and "fenced out of the consumer group twice" in last["msg"]
    assert "Traceback" not in service.log_path.read_text()


def _results_of(bootstrap: str, topics: dict[str, str], symbol: bytes) -> bool:
    """Whether a result of `symbol` is visible; not yet while the output topic the
    service has just created still elects its leader (NOT_LEADER_FOR_PARTITION)."""
    try:
        messages = read_committed(bootstrap, topics["output"], timeout=5)
    except KafkaException as exc:
        if exc.args[0].retriable() or exc.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION:
            return False
        raise
    return any(m.key() == symbol for m in messages)


def test_help_lists_the_variables(kafka_bootstrap: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "SFA_PROGRESS_SECONDS" in done.stdout and "KAFKA_BOOTSTRAP_SERVERS" in done.stdout
