"""librdkafka configuration for every client the service makes, in one place.

Each config is built in three layers: our defaults (shared by every client, then the
client's own), the user's KAFKA_* passthrough (which may override a default), then
what correctness needs (which nothing overrides). Secrets arrive as `SecretStr` in the
settings and are unwrapped here only, at the last moment, so no rendering of the
settings (repr, logs, errors) can show them.

A `KAFKA_*` property that librdkafka says is for the other kind of client (a consumer's
`fetch.min.bytes`, a producer's `linger.ms`) goes to the clients that use it only:
given to all, every other client logged a CONFWARN line at start. librdkafka itself
tells which kind a property is (`_scope`), so no table of its properties is kept here.

`check_client_configs` builds every client once, without brokers, before anything starts:
librdkafka checks names, values and their combinations when a client is created, so an
unknown `KAFKA_*` property or a bad value becomes one line naming the variable (exit 2)
instead of a traceback from deep inside start-up.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, Producer
from pydantic import SecretStr

from service.errors import ConfigError
from service.kafka.clientlog import with_logger
from service.settings import KafkaSettings, kafka_variable

__all__ = [
    "admin_config",
    "check_client_configs",
    "client_config",
    "consumer_config",
    "producer_config",
    "restore_config",
]


def _shared_defaults(settings: KafkaSettings, client: str) -> dict[str, Any]:
    return {
        "client.id": f"{client}-{settings.instance_id}",
        # librdkafka 2.16 "re-bootstraps" when every broker connection is lost; after a
        # one-broker outage its transaction coordinator then stayed unknown and
        # send_offsets_to_transaction blocked past its own timeout, wedging the service,
        # and consumers retried every ~50 ms (tests/integration/test_broker_drill.py).
        # Reconnecting to the known brokers recovers within seconds. Override with
        # KAFKA_METADATA_RECOVERY_STRATEGY=rebootstrap.
        "metadata.recovery.strategy": "none",
    }


Kind = Literal["consumer", "producer"]


def _passthrough(settings: KafkaSettings, kind: Kind | None = None) -> dict[str, Any]:
    """Bootstrap plus every KAFKA_* property, secrets unwrapped; for a `kind` of client,
    without the properties librdkafka would ignore (and warn about) in it."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    for key, value in settings.kafka_extra.items():
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if kind is None or _scope(key, str(plain)) in (None, kind):
            conf[key] = plain
    return conf


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_IGNORED_RE = re.compile(r"is a (consumer|producer) property and will be ignored")


@functools.cache
def _scope(key: str, value: str) -> Kind | None:
    """The one kind of client `key` is for, as librdkafka warns when the other kind is
    given it; None when both use it (or the value is bad: the check reports that)."""
    for make in (Producer, Consumer):
        collect = _Collect()
        quiet = logging.getLogger(f"service.kafka.librdkafka.scope.{make.__name__}")
        quiet.propagate = False
        quiet.addHandler(collect)
        try:
            conf: dict[str, Any] = {key: value, "logger": quiet}
            if make is Consumer:
                conf["group.id"] = "sfa-scope-check"
            client = make(conf)
            client.poll(0)  # the log callback runs on poll
            close = getattr(client, "close", None)
            if callable(close):
                close()
        except (KafkaException, ValueError, TypeError):
            return None
        finally:
            quiet.removeHandler(collect)
        for message in collect.messages:
            found = _IGNORED_RE.search(message)
            if found:
                return "consumer" if found.group(1) == "consumer" else "producer"
    return None


def client_config(
    settings: KafkaSettings,
    client: str = "sfa",
    defaults: dict[str, Any] | None = None,
    kind: Kind | None = None,
) -> dict[str, Any]:
    """Shared defaults, then `defaults`, then the user's passthrough (the properties a
    `kind` of client uses); with our logger."""
    conf = _shared_defaults(settings, client)
    conf.update(defaults or {})
    conf.update(_passthrough(settings, kind))
    return with_logger(conf)


def consumer_config(settings: KafkaSettings, group_id: str | None = None) -> dict[str, Any]:
    """The group member: read committed, sticky assignment, offsets only on request."""
    conf = client_config(
        settings,
        kind="consumer",
        defaults={
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            # Range: partition p of the input and of the repartition topic (same
            # partition count, same members) go to the same member, which SPEC 7
            # needs; see docs/ownership.md for why it stays correct through
            # rebalances, and why not cooperative-sticky.
            "partition.assignment.strategy": "range",
        },
    )
    user = _passthrough(settings)
    if conf.get("group.protocol") == "consumer":
        conf.pop("partition.assignment.strategy", None)  # the broker assigns (KIP-848)
        # ... with its range assignor, which co-partitions like the client-side one.
        conf.setdefault("group.remote.assignor", "range")
    else:
        # A member that dies without leaving holds its partitions for the session
        # timeout: 10 s instead of librdkafka's 45 s (SIGKILL -> resumed within 15 s,
        # measured in docs/ownership.md); a 1 s heartbeat tells the others of a
        # rebalance within a second. (KIP-848 sets both on the broker.)
        for key, value in (("session.timeout.ms", 10_000), ("heartbeat.interval.ms", 1_000)):
            if key not in user:
                conf[key] = value
    # Static membership (KIP-345): an instance restarted under the same SFA_INSTANCE_ID
    # within the session timeout takes its partitions back with no rebalance at all.
    # A graceful stop still leaves at once (`BatchConsumer.close` unsubscribes first).
    if "group.instance.id" not in user:
        conf["group.instance.id"] = settings.instance_id
    conf["group.id"] = group_id or settings.kafka_group_id
    # Auto-commit would commit batches whose output was never written.
    conf["enable.auto.commit"] = False
    conf["enable.auto.offset.store"] = False
    return conf


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """Output: a short linger and lz4 for batch bursts; idempotent, acks=all always."""
    conf = client_config(
        settings,
        kind="producer",
        defaults={
            # A batch is produced in one burst; a short linger fills Kafka batches
            # without adding noticeable latency to the commit that follows.
            "linger.ms": 10,
            "compression.type": "lz4",
        },
    )
    # Retries must neither duplicate nor reorder output: idempotence is
    # required by transactions and cheap insurance for at-least-once.
    conf["enable.idempotence"] = True
    conf["acks"] = "all"
    return conf


def restore_config(settings: KafkaSettings) -> dict[str, Any]:
    """The state reader: assign, never subscribe; read committed; never commit."""
    conf = client_config(settings, client="sfa-restore", kind="consumer")
    conf.update(
        {
            # librdkafka insists on a group.id. assign() never joins the group and nothing
            # is committed, but librdkafka still looks up its coordinator: the service's
            # own group is the one its ACLs allow, where a made-up name would be refused
            # (GROUP_AUTHORIZATION_FAILED in the log) on a least-privilege cluster.
            "group.id": settings.kafka_group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    conf.pop("group.protocol", None)
    conf.pop("partition.assignment.strategy", None)
    return conf


def admin_config(settings: KafkaSettings) -> dict[str, Any]:
    # An AdminClient is a producer instance to librdkafka: the same properties apply.
    return client_config(settings, client="sfa-admin", kind="producer")


_SILENT = logging.getLogger("service.kafka.librdkafka.config_check")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False
_PROPERTY_RE = re.compile(r'property "?([a-z0-9._]+)"?')


def check_client_configs(settings: KafkaSettings) -> None:
    """Create (and drop) every client the service will create, with no brokers to reach.

    Raises `ConfigError` naming the `KAFKA_*` variable librdkafka rejected.
    """
    producer = producer_config(settings)
    if settings.processing_guarantee == "exactly_once":
        producer["transactional.id"] = settings.effective_transactional_id
    clients: list[tuple[Callable[[dict[str, Any]], object], dict[str, Any]]] = [
        (Consumer, consumer_config(settings)),
        (Producer, producer),
        (Consumer, restore_config(settings)),
        (Producer, admin_config(settings)),
    ]
    for make, conf in clients:
        reason = _rejected(make, conf)
        if reason is not None:
            raise ConfigError(f"{_culprit(settings, reason)}: {reason}")


def _rejected(make: Callable[[dict[str, Any]], object], conf: dict[str, Any]) -> str | None:
    """librdkafka's reason for refusing `conf`, or None; never connects to anything."""
    offline = {k: v for k, v in conf.items() if k != "bootstrap.servers"}
    offline["logger"] = _SILENT  # the real clients log the same warnings once
    if make is Consumer:
        offline.setdefault("group.id", "sfa-config-check")
    try:
        client = make(offline)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        return str(err.str() if hasattr(err, "str") else err).strip()
    close = getattr(client, "close", None)
    if callable(close):
        close()
    return None


def _culprit(settings: KafkaSettings, reason: str) -> str:
    """The variable behind a rejection: the user property librdkafka names (or whose value it
    quotes), else the first user property refused on its own (librdkafka may name an alias,
    e.g. queue.buffering.max.ms for linger.ms), else all the user's properties."""
    extra = _passthrough(settings)
    extra.pop("bootstrap.servers", None)
    for prop in _PROPERTY_RE.findall(reason):
        if prop in extra:
            return kafka_variable(prop)
    for prop, value in extra.items():
        if prop in reason or (len(str(value)) > 2 and str(value) in reason):
            return kafka_variable(prop)
    for prop, value in extra.items():
        if _rejected(Producer, {prop: value}) is not None:
            return kafka_variable(prop)
    return ", ".join(kafka_variable(p) for p in extra) or "KAFKA_*"
