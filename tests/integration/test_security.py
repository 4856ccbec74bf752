"""`sfa run` on a broker that authenticates and authorises (tests/integration/secure_broker.py):
SCRAM and TLS through `KAFKA_*` variables alone, a wrong password or an untrusted CA
as one line at start with the secret nowhere, and least privilege: the ACLs listed in
docs/security.md are enough for the exactly-once path through a restart, and a missing
WRITE on the output topic commits nothing and is one clear line.

The service runs as a real `sfa` subprocess whose only configuration is its environment;
every test has its own uuid-prefixed topics, group, transactional id and ACLs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AclBinding, AclOperation, ResourceType

from service.ownership import owner
from tests.integration.kafka_io import comparable
from tests.integration.launcher import Launcher, SfaProcess
from tests.integration.secure_broker import Acl, SecureBroker, secure_broker
from tests.integration.test_service import (
    _values,
    expected,  # noqa: F401  (fixture)
    market,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.integration

__all__ = ["secure_broker"]  # the session fixture, re-exported for pytest

SFA = Path(sys.executable).with_name("sfa")
BAD = [b"{nope", orjson.dumps({"date": "2020-01-02", "close": 1.0})]  # two dead letters
ANONYMOUS = "User:ANONYMOUS"  # a TLS client without a certificate
SERVICE = "User:sfa"


# --- one test's names, grants and service -------------------------------------------


@dataclass
class Names:
    """Topics, group and transactional id of one test, all under one uuid prefix."""

    prefix: str = field(default_factory=lambda: f"sec-{uuid.uuid4().hex[:10]}-")

    def __post_init__(self) -> None:
        self.input = self.prefix + "bars"
        self.output = self.prefix + "results"
        self.dlq = self.prefix + "dlq"
        self.state = self.prefix + "state"
        self.repartition = self.prefix + "repartition"
        self.group = self.prefix + "group"
        self.transactional_id = self.prefix + "tx"

    @property
    def topics(self) -> list[str]:
        return [self.input, self.output, self.dlq, self.state, self.repartition]


def least_privilege(n: Names, write_output: bool = True) -> list[Acl]:
    """Exactly the ACLs docs/security.md lists for a service whose topics exist already.
    READ and WRITE imply DESCRIBE; no cluster-level right (IdempotentWrite is implied by
    WRITE on a topic since Kafka 2.8), no CREATE, no DESCRIBE_CONFIGS."""
    acls = [
        Acl(ResourceType.TOPIC, n.input, AclOperation.READ),
        Acl(ResourceType.TOPIC, n.dlq, AclOperation.WRITE),
        Acl(ResourceType.TOPIC, n.state, AclOperation.WRITE),
        Acl(ResourceType.TOPIC, n.state, AclOperation.READ),  # restore after a restart
        Acl(ResourceType.TOPIC, n.repartition, AclOperation.READ),  # forwarded bars (SPEC 7)
        Acl(ResourceType.TOPIC, n.repartition, AclOperation.WRITE),
        Acl(ResourceType.GROUP, n.group, AclOperation.READ),
        Acl(ResourceType.TRANSACTIONAL_ID, n.transactional_id, AclOperation.WRITE),
    ]
    if write_output:
        acls.append(Acl(ResourceType.TOPIC, n.output, AclOperation.WRITE))
    else:  # still visible (the start-up check describes it), just not writable
        acls.append(Acl(ResourceType.TOPIC, n.output, AclOperation.DESCRIBE))
    return acls


def create_service_topics(broker: SecureBroker, n: Names) -> None:
    """As the administrator, shaped as the service would make them (docs/security.md)."""
    broker.create_topics([n.input, n.output, n.dlq], partitions=2)
    broker.create_topics([n.repartition], partitions=2, **{"retention.ms": "3600000"})
    broker.create_topics(
        [n.state], partitions=2, **{"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    )


def everything_under(prefix: str) -> list[Acl]:
    """Broad rights on the test's own prefix, CREATE included: the service makes its topics."""
    return [
        Acl(kind, prefix, AclOperation.ALL, prefixed=True)
        for kind in (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID)
    ]


@pytest.fixture()
def names(secure_broker: SecureBroker) -> Iterator[Names]:
    n = Names()
    yield n
    secure_broker.delete_topics(n.topics)


@pytest.fixture()
def grant(secure_broker: SecureBroker) -> Iterator[Callable[[str, list[Acl]], list[AclBinding]]]:
    """`grant(principal, acls)`; everything granted is revoked after the test."""
    granted: list[AclBinding] = []

    def make(principal: str, acls: list[Acl]) -> list[AclBinding]:
        bindings = secure_broker.grant(principal, acls)
        granted.extend(bindings)
        return bindings

    yield make
    secure_broker.revoke(granted)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(n: Names, kafka: dict[str, str], **extra: str) -> dict[str, str]:
    """The service's whole configuration: no KAFKA_* inherited from the test's own shell
    (CI sets KAFKA_BOOTSTRAP_SERVERS to the plaintext broker)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return {
        **inherited,
        **kafka,
        "SFA_INPUT_TOPIC": n.input,
        "SFA_OUTPUT_TOPIC": n.output,
        "SFA_DLQ_TOPIC": n.dlq,
        "SFA_STATE_TOPIC": n.state,
        "SFA_REPARTITION_TOPIC": n.repartition,
        "KAFKA_GROUP_ID": n.group,
        "SFA_TRANSACTIONAL_ID": n.transactional_id,
        "SFA_METRICS_PORT": "0",
        "SFA_BATCH_MAX_MESSAGES": "2000",
        "SFA_BATCH_MAX_WAIT_MS": "200",
        "DASK_ENABLE_DISTRIBUTED": "false",  # Dask is not what is tested here
        **extra,
    }


#: `services(env) -> SfaProcess`: `sfa run` started as the installed `sfa` script.
Services = Callable[[dict[str, str]], SfaProcess]


@pytest.fixture()
def services(sfa_run: Launcher) -> Services:
    """`sfa run` through the shared launcher, as the installed `sfa` script: the way an
    operator starts it, configured by its environment alone."""
    return lambda env: sfa_run(env, executable=(str(SFA),))


# --- Kafka as the test sees it (admin and producer users) ---------------------------


def produce(broker: SecureBroker, topic: str, values: list[bytes]) -> None:
    """As the `producer` user (WRITE on the input only), keyed by symbol."""
    producer = Producer({**broker.sasl_config("producer"), "linger.ms": 20})
    for value in values:
        try:
            key = orjson.loads(value).get("symbol", "").encode()
        except (orjson.JSONDecodeError, AttributeError):
            key = None
        # On the owner partition, as `sfa produce` sends it: nothing is forwarded, so the
        # whole input committed means the whole work done.
        partition = owner(key.decode(), 2) if key else 0
        producer.produce(topic, value, key=key, partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0


def read_committed(broker: SecureBroker, topic: str) -> list[Message]:
    """Everything a read_committed reader (admin) sees, to the end offsets at the start."""
    consumer = Consumer(broker.read_committed_config())
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        out: list[Message] = []
        done = {p for p, high in ends.items() if high == 0}
        deadline = time.monotonic() + 30
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            out.extend(m for m in consumer.consume(1000, 0.2) if m.error() is None)
            for tp in consumer.position(parts):
                if tp.offset >= ends[tp.partition]:
                    done.add(tp.partition)
        return out
    finally:
        consumer.close()


def end_offsets(broker: SecureBroker, topic: str) -> dict[int, int]:
    consumer = Consumer({**broker.sasl_config("admin"), "group.id": f"ends-{uuid.uuid4()}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


def wait_done(broker: SecureBroker, service: SfaProcess, n: Names, timeout: float = 120) -> None:
    """Until the group has committed the whole input."""
    ends = end_offsets(broker, n.input)
    deadline = time.monotonic() + timeout
    while broker.committed_offsets(n.group, n.input) != ends:
        service.check_alive()
        assert time.monotonic() < deadline, "the service did not commit the whole input in time"
        time.sleep(0.5)


def assert_once_and_as_replayed(
    broker: SecureBroker, n: Names, replayed: dict[str, dict[str, Any]]
) -> None:
    seen: list[tuple[str, bytes]] = []
    last: dict[str, dict[str, Any]] = {}
    for msg in read_committed(broker, n.output):
        result = orjson.loads(msg.value() or b"")
        seen.append((result["symbol"], orjson.dumps(result["input"])))
        last[result["symbol"]] = result
    assert len(seen) == len(set(seen)), "duplicate (symbol, input) among committed results"
    assert {s: comparable(r) for s, r in last.items()} == {
        s: comparable(r) for s, r in replayed.items()
    }


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


# --- connecting: SCRAM and TLS ------------------------------------------------------


@pytest.mark.parametrize("how", ["scram", "tls"])
def test_exactly_once_over_scram_and_tls_from_kafka_variables_alone(
    how: str,
    secure_broker: SecureBroker,
    names: Names,
    grant: Callable[[str, list[Acl]], list[AclBinding]],
    services: Services,
    market: Path,  # noqa: F811  (fixture)
    expected: dict[str, dict[str, Any]],  # noqa: F811  (fixture)
) -> None:
    """The service creates its own topics here (CREATE under its prefix) and must see
    every batch once; the SCRAM password shows in no log line (debug included) and in
    no metric."""
    if how == "scram":
        kafka = secure_broker.as_env(secure_broker.sasl_config("sfa"))
        principal, secret = SERVICE, secure_broker.passwords["sfa"]
    else:  # TLS needs no secret on the client side: the CA file is public
        kafka = secure_broker.as_env(secure_broker.ssl_config())
        principal, secret = ANONYMOUS, None
    grant(principal, everything_under(names.prefix))
    grant("User:producer", [Acl(ResourceType.TOPIC, names.input, AclOperation.WRITE)])
    secure_broker.create_topics([names.input], partitions=2)
    values = _values(market)
    produce(secure_broker, names.input, values[:500] + BAD + values[500:])

    port = _free_port()
    service = services(service_env(names, kafka, SFA_METRICS_PORT=str(port), SFA_LOG_LEVEL="DEBUG"))
    wait_done(secure_broker, service, names)
    metrics = scrape(port)
    assert "sfa_results_produced_total" in metrics
    assert service.stop(60)[0] == 0

    assert_once_and_as_replayed(secure_broker, names, expected)
    assert len(read_committed(secure_broker, names.dlq)) == len(BAD)
    if secret is not None:
        assert secret not in service.text()
        assert secret not in metrics


# --- failing at start: a wrong password, an untrusted CA ----------------------------


def _other_ca(directory: Path) -> Path:
    """A CA of the test's own: it never signed the broker's certificate."""
    key, cert = directory / "other-ca.key", directory / "other-ca.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=not-the-sfa-dev-ca", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert


@pytest.mark.parametrize("how", ["wrong-password", "untrusted-ca"])
def test_a_wrong_password_or_an_untrusted_ca_is_one_line_at_start(
    how: str, secure_broker: SecureBroker, names: Names, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    if how == "wrong-password":
        kafka = secure_broker.as_env(secure_broker.sasl_config("sfa", password=wrong))
        bootstrap, cause = secure_broker.sasl_bootstrap, "Authentication failed"
    else:
        kafka = secure_broker.as_env(secure_broker.ssl_config(str(_other_ca(tmp_path))))
        bootstrap, cause = secure_broker.ssl_bootstrap, "certificate verify failed"
    started = time.monotonic()
    done = subprocess.run(
        [str(SFA), "run"],
        env=service_env(names, kafka),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    last = done.stderr.strip().splitlines()[-1]
    assert f"cannot reach Kafka at {bootstrap}" in last, last
    assert cause in last, last
    for line in done.stderr.strip().splitlines()[:-1]:
        orjson.loads(line)  # everything before the one error line is the JSON log
    for secret in (wrong, *secure_broker.passwords.values()):
        assert secret not in out
    assert took < 15, f"took {took:.1f} s"  # the issue: about 10 s


# --- least privilege ----------------------------------------------------------------


def test_the_documented_acls_are_enough_for_exactly_once_through_a_restart(
    secure_broker: SecureBroker,
    names: Names,
    grant: Callable[[str, list[Acl]], list[AclBinding]],
    services: Services,
    market: Path,  # noqa: F811  (fixture)
    expected: dict[str, dict[str, Any]],  # noqa: F811  (fixture)
) -> None:
    """Topics made by the administrator, the service granted exactly least_privilege():
    the second run must restore the state the first committed (READ on the state topic)
    to end with what replay gives."""
    create_service_topics(secure_broker, names)
    grant(SERVICE, least_privilege(names))
    grant("User:producer", [Acl(ResourceType.TOPIC, names.input, AclOperation.WRITE)])
    env = service_env(names, secure_broker.as_env(secure_broker.sasl_config("sfa")))
    values = _values(market)
    half = len(values) // 2

    produce(secure_broker, names.input, values[:half] + BAD)
    first = services(env)
    wait_done(secure_broker, first, names)
    assert first.stop(60)[0] == 0
    produce(secure_broker, names.input, values[half:])
    second = services(env)
    wait_done(secure_broker, second, names)
    assert second.stop(60)[0] == 0

    assert_once_and_as_replayed(secure_broker, names, expected)
    assert len(read_committed(secure_broker, names.dlq)) == len(BAD)
    assert "state restored" in second.text()


def test_the_documented_acls_restore_without_an_authorization_complaint(
    secure_broker: SecureBroker,
    names: Names,
    grant: Callable[[str, list[Acl]], list[AclBinding]],
    services: Services,
    market: Path,  # noqa: F811  (fixture)
) -> None:
    """Least privilege must not cost log noise: an operator who sees "authorization
    failed" goes looking for a missing ACL that is not missing."""
    create_service_topics(secure_broker, names)
    grant(SERVICE, least_privilege(names))
    grant("User:producer", [Acl(ResourceType.TOPIC, names.input, AclOperation.WRITE)])
    env = service_env(names, secure_broker.as_env(secure_broker.sasl_config("sfa")))
    produce(secure_broker, names.input, _values(market)[:300])
    first = services(env)
    wait_done(secure_broker, first, names)
    assert first.stop(60)[0] == 0
    second = services(env)
    deadline = time.monotonic() + 60
    while "state restored" not in second.text():
        second.check_alive()
        assert time.monotonic() < deadline, "no restore"
        time.sleep(0.2)
    assert second.stop(60)[0] == 0

    complaints = [
        line
        for line in first.text().splitlines() + second.text().splitlines()
        if "AUTHORIZATION_FAILED" in line or "authorization failed" in line.lower()
    ]
    assert complaints == []


REFUSED = "Topic authorization failed"  # librdkafka's text for the broker's refusal


def _start_without_output_write(
    broker: SecureBroker,
    n: Names,
    grant: Callable[[str, list[Acl]], list[AclBinding]],
    services: Services,
    bars: Path,
) -> SfaProcess:
    """Everything least_privilege() grants except WRITE on the output topic, and input."""
    create_service_topics(broker, n)
    grant(SERVICE, least_privilege(n, write_output=False))
    grant("User:producer", [Acl(ResourceType.TOPIC, n.input, AclOperation.WRITE)])
    produce(broker, n.input, _values(bars)[:300] + BAD)
    return services(service_env(n, broker.as_env(broker.sasl_config("sfa"))))


def _wait_for_refusal(service: SfaProcess, timeout: float = 60) -> float:
    """Until the broker has refused the service's first transaction; when that happened."""
    deadline = time.monotonic() + timeout
    while REFUSED not in service.text():
        assert time.monotonic() < deadline, f"never refused:\n{service.text()[-3000:]}"
        assert service.proc.poll() is None or REFUSED in service.text(), service.text()[-3000:]
        time.sleep(0.2)
    return time.monotonic()


def test_no_write_on_the_output_topic_commits_nothing(
    secure_broker: SecureBroker,
    names: Names,
    grant: Callable[[str, list[Acl]], list[AclBinding]],
    services: Services,
    market: Path,  # noqa: F811  (fixture)
) -> None:
    """No partial commit: not the dead letters or state of the refused batch, not its
    offsets, neither on the first attempt nor on any the service makes after it."""
    service = _start_without_output_write(secure_broker, names, grant, services, market)
    _wait_for_refusal(service)
    time.sleep(3)  # a retrying service tries again meanwhile; a stopping one stops
    service.close()

    assert read_committed(secure_broker, names.output) == []
    assert read_committed(secure_broker, names.state) == []
    assert read_committed(secure_broker, names.dlq) == []
    committed = secure_broker.committed_offsets(names.group, names.input)
    assert all(offset < 0 for offset in committed.values()), committed


def test_no_write_on_the_output_topic_is_one_clear_line(
    secure_broker: SecureBroker,
    names: Names,
    grant: Callable[[str, list[Acl]], list[AclBinding]],
    services: Services,
    market: Path,  # noqa: F811  (fixture)
) -> None:
    """Retrying cannot grant a permission: the service stops (non-zero) with one line
    that names the output topic and the missing WRITE."""
    service = _start_without_output_write(secure_broker, names, grant, services, market)
    refused_at = _wait_for_refusal(service)
    try:
        code: int | None = service.proc.wait(max(1.0, refused_at + 20 - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    log = service.text()
    service.close()

    assert code not in (0, None), f"still retrying 20 s after the refusal:\n{log[-2000:]}"
    complaints = [
        line
        for line in log.splitlines()
        if names.output in line and "authoriz" in line.lower() and "WRITE" in line
    ]
    assert len(complaints) == 1, log[-3000:]
