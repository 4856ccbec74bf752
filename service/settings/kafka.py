"""The Kafka part: brokers, group, topics, delivery guarantee, instance identity, and
every other `KAFKA_*` variable as a librdkafka property.

`KAFKA_SOME_PROPERTY` reaches librdkafka as `some.property` (whether librdkafka accepts
it is checked by `service.kafka.config.check_client_configs`), except the service-link
variables Kubernetes injects for a Service whose name starts with `kafka`
(`KAFKA_SERVICE_HOST`, `KAFKA_PORT_9092_TCP_ADDR`, ...), which are no properties. Values
whose key looks secret are kept as `SecretStr`, composite values (an OAuth config string)
with their secret parts masked.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from service import secrets
from service.settings.fields import MaskedSecret, Part, env, environ

__all__ = ["KafkaSettings", "is_service_link", "kafka_variable"]

_BOOTSTRAP_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(?P<port>\d{1,5})$")
# Kubernetes service links for a Service named kafka (or kafka-anything): KAFKA_SERVICE_HOST,
# KAFKA_SERVICE_PORT[_NAME], KAFKA_PORT, KAFKA_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR].
_SERVICE_LINK_RE = re.compile(
    r"^KAFKA_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)$"
)


def is_service_link(variable: str) -> bool:
    """A variable Kubernetes injects for a Service, not a librdkafka property."""
    return bool(_SERVICE_LINK_RE.match(variable))


def kafka_variable(prop: str) -> str:
    """The environment variable a librdkafka property came from (`sasl.password` ->
    `KAFKA_SASL_PASSWORD`)."""
    return "KAFKA_" + prop.upper().replace(".", "_")


class _Passthrough(PydanticBaseSettingsSource):
    """Every `KAFKA_*` variable no field owns, as librdkafka properties; service links
    apart (the service logs them at DEBUG)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole answer is in __call__

    def __call__(self) -> dict[str, Any]:
        own = {f.alias for f in self.settings_cls.model_fields.values() if f.alias}
        extra: dict[str, str] = {}
        ignored: list[str] = []
        for key, value in environ().items():
            if not key.startswith("KAFKA_") or key in own:
                continue
            if is_service_link(key):
                ignored.append(key)
            elif value != "":
                extra[key[len("KAFKA_") :].lower().replace("_", ".")] = value
        return {"kafka_extra": extra, "kafka_ignored": tuple(sorted(ignored))}


class KafkaSettings(Part):
    """What the Kafka clients, the topic checks and the instance's identity need."""

    kafka_bootstrap_servers: str = env(
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        "Kafka brokers to bootstrap from, host:port[,host:port...]; the port is required "
        "(librdkafka would take a bare host as host:9092).",
        min_length=1,
        not_empty=True,
    )
    kafka_group_id: str = env(
        "KAFKA_GROUP_ID",
        "sfa-service",
        "Consumer group: instances with the same group share the input's partitions.",
        min_length=1,
        not_empty=True,
    )
    kafka_connect_seconds: float = env(
        "SFA_KAFKA_CONNECT_SECONDS",
        10.0,
        "How long `sfa run` tries to reach the brokers at start before it exits with "
        "librdkafka's reason (refused, TLS handshake, authentication).",
        gt=0,
        le=3600,
    )
    input_topic: str = env(
        "SFA_INPUT_TOPIC",
        "stock-bars",
        "Topic of the input bars; must exist.",
        min_length=1,
        not_empty=True,
    )
    output_topic: str = env(
        "SFA_OUTPUT_TOPIC",
        "sfa-results",
        "Topic of the results (created when missing).",
        min_length=1,
        not_empty=True,
    )
    dlq_topic: str = env(
        "SFA_DLQ_TOPIC",
        "stock-bars-dlq",
        "Topic of the dead letters (created when missing).",
        min_length=1,
        not_empty=True,
    )
    state_topic: str = Field(
        default="sfa-service-state",
        alias="SFA_STATE_TOPIC",
        min_length=1,
        description="Compacted changelog of the per-symbol state (created when missing); "
        "unset: KAFKA_GROUP_ID-state, so two groups (two input topics, two deployments) "
        "never restore each other's symbols (0.1.0 and before: sfa-state; see above).",
        json_schema_extra={
            "default_text": "KAFKA_GROUP_ID-state",
            "allowed": "not empty",
            "not_empty": True,
        },
    )
    repartition_topic: str | None = env(
        "SFA_REPARTITION_TOPIC",
        None,
        "Topic that carries bars read off their owner partition to it (docs/ownership.md; created "
        "when missing); unset: KAFKA_GROUP_ID-repartition, because its offsets and its "
        "forwarded bars belong to one group (a second group sharing it would read them).",
        min_length=1,
        allowed="not empty",
    )
    partitioner: Literal["murmur2", "crc32"] = env(
        "SFA_PARTITIONER",
        "murmur2",
        "Which partition owns a symbol: murmur2 (the Java client's default, librdkafka's "
        "murmur2_random) or crc32 (librdkafka's default consistent_random); `sfa produce` "
        "partitions with it.",
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = env(
        "SFA_PROCESSING_GUARANTEE",
        "exactly_once",
        "exactly_once: output and offsets commit in one transaction; at_least_once: a "
        "crash may repeat output, never lose it.",
    )
    instance_id: str = Field(
        default_factory=socket.gethostname,
        alias="SFA_INSTANCE_ID",
        min_length=1,
        description="This instance's name (client ids, transactional id, static group "
        "membership); give every instance of a group its own. Unset: the host name, and "
        "with an SFA_METRICS_PORT other than 8000 and 0, host-PORT, so a second instance "
        "on one machine needs only its own SFA_METRICS_PORT.",
        json_schema_extra={
            "default_text": "the host name (host-PORT for another SFA_METRICS_PORT)",
            "allowed": "not empty",
            "not_empty": True,
        },
    )
    transactional_id: str | None = env(
        "SFA_TRANSACTIONAL_ID",
        None,
        "Transactional id of the exactly-once producer; unset: KAFKA_GROUP_ID-SFA_INSTANCE_ID.",
        allowed="any text",
    )
    # Every other KAFKA_* variable, as librdkafka properties; secret-looking ones are
    # SecretStr, unwrapped only where a client config is built (service.kafka.config).
    kafka_extra: dict[str, str | SecretStr] = Field(default_factory=dict, alias="_kafka_extra")
    # Service-link variables seen and ignored, logged at DEBUG by the service.
    kafka_ignored: tuple[str, ...] = Field(default=(), alias="_kafka_ignored")

    @classmethod
    def extra_sources(
        cls, settings_cls: type[BaseSettings]
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_Passthrough(settings_cls),)

    @field_validator("kafka_extra", mode="before")
    @classmethod
    def _wrap_secrets(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        wrapped: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(item, str) or isinstance(item, SecretStr):
                wrapped[key] = item
            elif secrets.is_secret_name(key):
                wrapped[key] = SecretStr(item)
            else:
                shown, found = secrets.mask_composite(item)
                wrapped[key] = MaskedSecret(item, shown) if found else item
        return wrapped

    @field_validator("transactional_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        # librdkafka takes `host` alone as host:9092, so a forgotten port on a broker
        # listening elsewhere (9093 for TLS, a dev port) reads as "cannot reach" later.
        # The Java clients refuse it; so do we, before anything connects.
        for entry in value.split(","):
            address = entry.strip().rpartition("://")[2].rstrip("/")
            match = _BOOTSTRAP_RE.match(address)
            if not match or not 1 <= int(match.group("port")) <= 65535:
                raise ValueError(
                    "every broker needs its port: host:port[,host:port...], such as 127.0.0.1:9092"
                )
        return value

    @model_validator(mode="before")
    @classmethod
    def _state_topic_per_group(cls, data: Any) -> Any:
        """SFA_STATE_TOPIC defaults to `<KAFKA_GROUP_ID>-state` (SPEC 9), as the
        repartition topic's default is per group: one shared `sfa-state` let a run on
        another input restore hundreds of foreign symbols into the default service."""
        if not isinstance(data, dict) or data.get("SFA_STATE_TOPIC") or data.get("state_topic"):
            return data
        group = data.get("KAFKA_GROUP_ID") or data.get("kafka_group_id") or "sfa-service"
        return {**data, "SFA_STATE_TOPIC": f"{str(group).strip()}-state"}

    @property
    def effective_repartition_topic(self) -> str:
        """SFA_REPARTITION_TOPIC, else one per group (as Kafka Streams names its own)."""
        return self.repartition_topic or f"{self.kafka_group_id}-repartition"

    @property
    def effective_transactional_id(self) -> str:
        """Stable across restarts of one instance, so a restarted producer fences its zombie."""
        return self.transactional_id or f"{self.kafka_group_id}-{self.instance_id}"

    def redacted(self) -> dict[str, Any]:
        data = self.model_dump()
        data["kafka_extra"] = {
            k: (v._display() if isinstance(v, MaskedSecret) else secrets.MASK)
            if isinstance(v, SecretStr)
            else v
            for k, v in self.kafka_extra.items()
        }
        return data

    def secret_values(self) -> list[str]:
        found: list[str] = []
        for value in self.kafka_extra.values():
            if isinstance(value, MaskedSecret):
                found.extend(secrets.mask_composite(value.get_secret_value())[1])
            elif isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        found.extend(secrets.mask_composite(self.kafka_bootstrap_servers)[1])
        return found
