"""The authenticated dev broker for the security tests: SCRAM, TLS and ACLs, for real.

`scripts/kafka.sh up-secure` starts a second one-node broker beside the plaintext one
(which every other test shares and which is never touched here): SASL_PLAINTEXT with
SCRAM-SHA-512 users, one-way TLS with the script's own CA, and KRaft's
StandardAuthorizer denying whatever no ACL allows. The `secure_broker` fixture starts it
once per session and stops it at the end, unless it was already running or
`SFA_KAFKA_KEEP=1`. Users, passwords and the CA come from the node's `secure.env`, which
the script writes, so the test never hard-codes a secret the broker does not have.

Everything the tests do as the cluster's administrator (topics, ACLs, offsets) goes
through `SecureBroker`, so each test states only what the *service* user may do.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.integration.topics import create_topics, delete_topics

log = logging.getLogger(__name__)

__all__ = ["Acl", "SecureBroker", "secure_broker"]

_REPO = Path(__file__).resolve().parents[2]
_SCRIPT = _REPO / "scripts" / "kafka.sh"


def _node_dir() -> Path:
    """Where `kafka.sh` keeps the secure node (the same defaults as the script)."""
    explicit = os.environ.get("SFA_KAFKA_SECURE_NODE", "").strip()
    if explicit:
        return Path(explicit)
    home = Path(os.environ.get("SFA_KAFKA_HOME", "").strip() or _REPO / ".cache" / "kafka")
    return home / f"node-secure-{os.environ.get('SFA_KAFKA_SECURE_SASL_PORT', '19392')}"


def _script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=_REPO,
    )


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class Acl:
    """One ALLOW rule for a principal: `(resource type, name, operation)`, literal unless
    `prefixed`. The cluster resource is `Acl(ResourceType.BROKER, "kafka-cluster", ...)`."""

    resource: ResourceType
    name: str
    operation: AclOperation
    prefixed: bool = False

    def binding(self, principal: str) -> AclBinding:
        pattern = ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL
        return AclBinding(
            self.resource,
            self.name,
            pattern,
            principal,
            "*",
            self.operation,
            AclPermissionType.ALLOW,
        )


@dataclass(frozen=True)
class SecureBroker:
    sasl_bootstrap: str
    ssl_bootstrap: str
    ca_location: str
    passwords: dict[str, str]  # SCRAM user -> password
    broker_principal: str
    # group id -> a consumer that carries that id and never subscribes (committed_offsets)
    _offset_readers: dict[str, Consumer] = field(default_factory=dict, compare=False, repr=False)

    # --- client settings -------------------------------------------------------------

    def sasl_config(self, user: str, password: str | None = None) -> dict[str, Any]:
        """librdkafka properties for `user` over SCRAM (`password` overrides the real one)."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": self.passwords[user] if password is None else password,
        }

    def ssl_config(self, ca_location: str | None = None) -> dict[str, Any]:
        """One-way TLS: the client checks the broker against `ca_location` and sends no
        certificate, so the broker knows it as User:ANONYMOUS."""
        return {
            "bootstrap.servers": self.ssl_bootstrap,
            "security.protocol": "SSL",
            "ssl.ca.location": ca_location or self.ca_location,
        }

    @staticmethod
    def as_env(config: dict[str, Any]) -> dict[str, str]:
        """The same properties as the `KAFKA_*` variables `sfa run` reads."""
        return {"KAFKA_" + k.upper().replace(".", "_"): str(v) for k, v in config.items()}

    # --- administration (as the super user) ------------------------------------------

    @cached_property
    def admin(self) -> AdminClient:
        """One client for the session: a request's future dies with the client that made it."""
        return AdminClient(self.sasl_config("admin"))

    def create_topics(self, names: Iterable[str], partitions: int, **config: str) -> None:
        create_topics(self.admin, names, partitions, dict(config))

    def delete_topics(self, names: Iterable[str]) -> None:
        """Best effort: a leftover uuid-named topic harms nobody."""
        delete_topics(self.admin, names)

    def grant(self, principal: str, acls: Iterable[Acl]) -> list[AclBinding]:
        bindings = [acl.binding(principal) for acl in acls]
        for future in self.admin.create_acls(bindings, request_timeout=30).values():
            future.result(timeout=30)
        self._wait_acls(bindings, present=True)
        return bindings

    def revoke(self, bindings: Iterable[AclBinding]) -> None:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in bindings
        ]
        if not filters:
            return
        for future in self.admin.delete_acls(filters, request_timeout=30).values():
            future.result(timeout=30)
        self._wait_acls(list(bindings), present=False)

    def _wait_acls(self, bindings: list[AclBinding], present: bool) -> None:
        """CreateAcls returns once the controller has them; the broker's authorizer
        applies them from metadata a moment later."""
        admin = self.admin
        deadline = time.monotonic() + 30
        for binding in bindings:
            flt = AclBindingFilter(
                binding.restype,
                binding.name,
                binding.resource_pattern_type,
                binding.principal,
                binding.host,
                binding.operation,
                binding.permission_type,
            )
            while bool(admin.describe_acls(flt, request_timeout=10).result(timeout=10)) != present:
                assert time.monotonic() < deadline, f"ACL not {'applied' if present else 'gone'}"
                time.sleep(0.1)

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offset per partition (negative: none), read as admin.

        Read by a `Consumer` that carries the group's id and never subscribes, never by
        `AdminClient.list_consumer_group_offsets`: on a fresh broker that answers
        NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE, librdkafka dereferences a null group
        pointer on its admin thread and the whole process dies with SIGSEGV and no trace
        (librdkafka #5040). One reader per group is kept for the session, because waiting
        loops call this often and each new client pays a SCRAM handshake.
        """
        reader = self._offset_readers.get(group)
        if reader is None:
            reader = Consumer(
                {**self.sasl_config("admin"), "group.id": group, "enable.auto.commit": False}
            )
            self._offset_readers[group] = reader
        partitions = reader.list_topics(topic=topic, timeout=10).topics[topic].partitions
        wanted = [TopicPartition(topic, p) for p in partitions]
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = reader.committed(wanted, timeout=30)
                if any(tp.error is not None for tp in answer) and time.monotonic() < deadline:
                    # A reader whose coordinator connection failed (a SASL handshake cut
                    # short on a broker just started) answers errors, not offsets, for
                    # good: start a new one rather than report its -1001s as offsets.
                    log.info("offset reader for %s answered %s; new reader", group, answer)
                    reader.close()
                    reader = self._offset_readers[group] = Consumer(
                        {
                            **self.sasl_config("admin"),
                            "group.id": group,
                            "enable.auto.commit": False,
                        }
                    )
                    time.sleep(0.5)
                    continue
                return {tp.partition: tp.offset for tp in answer}
            except KafkaException as exc:
                # A broker started moments ago may still be loading the group's
                # coordinator: that passes, so ask again.
                code = exc.args[0].code() if exc.args else None
                if code not in _COORDINATOR_MOVING or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def close(self) -> None:
        """Close the offset readers (each holds a connection and a thread)."""
        for reader in self._offset_readers.values():
            reader.close()
        self._offset_readers.clear()

    def read_committed_config(self) -> dict[str, Any]:
        return {
            **self.sasl_config("admin"),
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }


_COORDINATOR_MOVING = (
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._TIMED_OUT,
)


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureBroker]:
    """The authenticated broker, started once per session when it is not running yet."""
    was_running = _script("status-secure", 30).returncode == 0
    up = _script("up-secure", 900)
    if up.returncode != 0:
        pytest.fail(f"could not start the secure Kafka broker:\n{up.stderr[-3000:]}", pytrace=False)
    env = _read_env(_node_dir() / "secure.env")
    users = ("admin", "sfa", "producer")
    broker = SecureBroker(
        sasl_bootstrap=env["SFA_SECURE_SASL_BOOTSTRAP"],
        ssl_bootstrap=env["SFA_SECURE_SSL_BOOTSTRAP"],
        ca_location=env["SFA_SECURE_CA_LOCATION"],
        passwords={u: env[f"SFA_SECURE_{u.upper()}_PASSWORD"] for u in users},
        broker_principal=env["SFA_SECURE_BROKER_PRINCIPAL"],
    )
    yield broker
    broker.close()
    if not was_running and os.environ.get("SFA_KAFKA_KEEP", "") not in ("1", "true", "yes"):
        _script("down-secure", 120)
