"""Environment -> one frozen Settings object, read once at start (SPEC 9).

Each field names its environment variable in `alias` and says what it means in
`description`: `service.configdoc` renders both (docs/configuration.md, `sfa run --help`),
so the reference cannot drift from the code. A bad value raises `ConfigError` with one line
naming the variable, so the CLI can print it and exit 2.

Any other `KAFKA_SOME_PROPERTY` is passed to librdkafka as `some.property` (whether
librdkafka accepts it is checked by `service.kafka.config.check_client_configs`), except
the service-link variables Kubernetes injects for a Service whose name starts with
`kafka` (`KAFKA_SERVICE_HOST`, `KAFKA_PORT_9092_TCP_ADDR`, ...), which are no properties.
Values whose key looks secret are kept as `SecretStr`, composite values (an OAuth config
string) with their secret parts masked, and every secret is registered with
`service.secrets`, so no rendering, log line or error shows them.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from service import secrets
from service.calendar import FIRST_YEAR, LAST_BAR_YEAR
from service.engine.types import EngineParams
from service.errors import ConfigError

__all__ = ["MaskedSecret", "Settings", "is_service_link", "kafka_variable", "load_settings"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?(?:e\d+)?)\s*(b|[kmgtp]i?b?)?$", re.IGNORECASE)
_SCHEDULER_RE = re.compile(
    r"^(?:(?:tcp|tls|ws|wss|ucx)://)?(?P<host>\[[0-9a-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})/?$",
    re.IGNORECASE,
)
_BOOTSTRAP_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(?P<port>\d{1,5})$")
_LISTEN_RE = re.compile(r"^(?P<host>\[[0-9a-f:.]+\]|[A-Za-z0-9_.\-]*):(?P<port>\d{1,5})$")
# Kubernetes service links for a Service named kafka (or kafka-anything): KAFKA_SERVICE_HOST,
# KAFKA_SERVICE_PORT[_NAME], KAFKA_PORT, KAFKA_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR].
_SERVICE_LINK_RE = re.compile(
    r"^KAFKA_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)$"
)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_MIN_MEMORY = 100 * 10**6  # a Dask worker takes about this much before any work
_MAX_SHOWN = 60  # characters of a rejected value quoted back


def _duration_seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError("expected a duration such as 60, 60s, 500ms or 2m")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def _port_ok(text: str) -> bool:
    return 0 <= int(text) <= 65535


def is_service_link(variable: str) -> bool:
    """A variable Kubernetes injects for a Service, not a librdkafka property."""
    return bool(_SERVICE_LINK_RE.match(variable))


class MaskedSecret(SecretStr):
    """A composite value (`clientId=x clientSecret=y`) that renders with only its secret
    parts masked, so logs still show the harmless parts an operator needs to debug."""

    def __init__(self, secret_value: str, shown: str) -> None:
        super().__init__(secret_value)
        self._shown = shown

    def _display(self) -> str:
        return self._shown


def _env(
    alias: str, default: Any, description: str, *, allowed: str | None = None, **kwargs: Any
) -> Any:
    """A field read from `alias`; `description` (and `allowed`, when constraints do not say
    it) are the configuration reference's text."""
    extra: dict[str, Any] | None = {"allowed": allowed} if allowed else None
    return Field(default, alias=alias, description=description, json_schema_extra=extra, **kwargs)


class Settings(BaseModel):
    """Every knob of the service, replay and the compat API."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="forbid", allow_inf_nan=False
    )

    # --- Kafka ---
    kafka_bootstrap_servers: str = _env(
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        "Kafka brokers to bootstrap from, host:port[,host:port...]; the port is required "
        "(librdkafka would take a bare host as host:9092).",
        min_length=1,
    )
    kafka_group_id: str = _env(
        "KAFKA_GROUP_ID",
        "sfa-service",
        "Consumer group: instances with the same group share the input's partitions.",
        min_length=1,
    )
    kafka_connect_seconds: float = _env(
        "SFA_KAFKA_CONNECT_SECONDS",
        10.0,
        "How long `sfa run` tries to reach the brokers at start before it exits with "
        "librdkafka's reason (refused, TLS handshake, authentication).",
        gt=0,
        le=3600,
    )
    input_topic: str = _env(
        "SFA_INPUT_TOPIC", "stock-bars", "Topic of the input bars; must exist.", min_length=1
    )
    output_topic: str = _env(
        "SFA_OUTPUT_TOPIC",
        "sfa-results",
        "Topic of the results (created when missing).",
        min_length=1,
    )
    dlq_topic: str = _env(
        "SFA_DLQ_TOPIC",
        "stock-bars-dlq",
        "Topic of the dead letters (created when missing).",
        min_length=1,
    )
    state_topic: str = Field(
        "sfa-service-state",
        alias="SFA_STATE_TOPIC",
        min_length=1,
        description="Compacted changelog of the per-symbol state (created when missing); "
        "unset: KAFKA_GROUP_ID-state, so two groups (two input topics, two deployments) "
        "never restore each other's symbols (0.1.0 and before: sfa-state; see above).",
        json_schema_extra={"default_text": "KAFKA_GROUP_ID-state", "allowed": "not empty"},
    )
    repartition_topic: str | None = _env(
        "SFA_REPARTITION_TOPIC",
        None,
        "Topic that carries bars read off their owner partition to it (docs/ownership.md; created "
        "when missing); unset: KAFKA_GROUP_ID-repartition, because its offsets and its "
        "forwarded bars belong to one group (a second group sharing it would read them).",
        min_length=1,
        allowed="not empty",
    )
    partitioner: Literal["murmur2", "crc32"] = _env(
        "SFA_PARTITIONER",
        "murmur2",
        "Which partition owns a symbol: murmur2 (the Java client's default, librdkafka's "
        "murmur2_random) or crc32 (librdkafka's default consistent_random); `sfa produce` "
        "partitions with it.",
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = _env(
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
        },
    )
    transactional_id: str | None = _env(
        "SFA_TRANSACTIONAL_ID",
        None,
        "Transactional id of the exactly-once producer; unset: KAFKA_GROUP_ID-SFA_INSTANCE_ID.",
        allowed="any text",
    )
    # Every other KAFKA_* variable, as librdkafka properties; secret-looking ones are
    # SecretStr, unwrapped only where a client config is built (service.kafka.config).
    kafka_extra: dict[str, str | SecretStr] = Field(default_factory=dict, alias="_kafka_extra")
    # Service-link variables seen and ignored, logged at DEBUG by the service.
    kafka_ignored: tuple[str, ...] = Field((), alias="_kafka_ignored")

    # --- batching and flow control ---
    batch_max_messages: int = _env(
        "SFA_BATCH_MAX_MESSAGES", 20_000, "Messages per batch at most.", ge=1, le=1_000_000
    )
    batch_max_wait_ms: int = _env(
        "SFA_BATCH_MAX_WAIT_MS",
        500,
        "How long a batch waits for its first message, in ms.",
        ge=1,
        le=600_000,
    )
    max_inflight_batches: int = _env(
        "SFA_MAX_INFLIGHT_BATCHES",
        4,
        "Batches consumed but not yet committed at most; then fetching pauses.",
        ge=1,
        le=1000,
    )
    max_message_bytes: int = _env(
        "SFA_MAX_MESSAGE_BYTES",
        1_048_576,
        "Larger messages are dead letters (reason too_large).",
        ge=64,
        le=1_000_000_000,
    )
    decode_processes: int | None = _env(
        "SFA_DECODE_PROCESSES",
        None,
        "Helper processes that decode batches; unset: one when the machine has a spare core.",
        ge=0,
        le=32,
    )

    # --- input formats and the schema registry ---
    input_format: Literal["auto", "json", "avro", "protobuf", "jsonschema"] = _env(
        "SFA_INPUT_FORMAT",
        "auto",
        "auto: a message starting with byte 0 is the Confluent wire format (schema id, "
        "then Avro, Protobuf or JSON Schema, as the registry says), any other is JSON; "
        "json: JSON only (byte 0 is invalid_json); avro, protobuf, jsonschema: every "
        "message is the wire format with a schema of that kind (anything else is "
        "invalid_avro, invalid_protobuf, invalid_json_schema).",
    )
    schema_registry_url: str | None = _env(
        "SFA_SCHEMA_REGISTRY_URL",
        None,
        "Base URL of a Confluent-compatible schema registry (Apicurio: "
        "http://host:port/apis/ccompat/v7); needed for wire-format input; unset with "
        "auto: JSON only.",
        pattern=r"^https?://\S+$",
        allowed="http(s)://host[:port][/path]",
    )
    schema_registry_user: str | None = _env(
        "SFA_SCHEMA_REGISTRY_USER",
        None,
        "Basic-auth user for the schema registry; unset: no authentication.",
        allowed="any text",
    )
    schema_registry_password: SecretStr | None = _env(
        "SFA_SCHEMA_REGISTRY_PASSWORD",
        None,
        "Basic-auth password for the schema registry (a secret: masked everywhere).",
        allowed="any text",
    )
    schema_registry_connect_seconds: float = _env(
        "SFA_SCHEMA_REGISTRY_CONNECT_SECONDS",
        10.0,
        "How long `sfa run` tries to reach the schema registry at start before it exits "
        "with the reason; later outages are retried with backoff for as long as they last.",
        gt=0,
        le=3600,
    )

    # --- engine ---
    window_days: int = _env(
        "SFA_WINDOW_DAYS", 60, "Days on each side of the Spring Festival.", ge=1, le=175
    )
    min_years: int = _env(
        "SFA_MIN_YEARS",
        3,
        "Years with enough bars a pattern needs; fewer: insufficient_history.",
        ge=1,
        le=199,
    )
    min_bars_per_year: int = _env(
        "SFA_MIN_BARS_PER_YEAR", 10, "Bars a year's window needs to count.", ge=2, le=351
    )
    alignment: Literal["trading", "calendar"] = _env(
        "SFA_ALIGNMENT", "trading", "Count window days as trading days or calendar days."
    )
    years: frozenset[int] | None = _env(
        "SFA_YEARS",
        None,
        f"Comma-separated years ({FIRST_YEAR}..{LAST_BAR_YEAR}) the pattern uses; "
        "unset: every year.",
        allowed="comma-separated years 1901..2099",
    )

    # --- metrics, health and logs ---
    metrics_port: int = _env(
        "SFA_METRICS_PORT",
        8000,
        "Port of /metrics, /healthz and /readyz; 0 turns the endpoint off.",
        ge=0,
        le=65535,
    )
    metrics_address: str = _env(
        "SFA_METRICS_ADDRESS",
        "127.0.0.1",
        "Interface the metrics port binds: loopback by default, so a laptop run exposes "
        "nothing; the image sets 0.0.0.0 so Prometheus and probes reach it from outside.",
        min_length=1,
        pattern=r"^[A-Za-z0-9.:_-]+$",
        allowed="an IP address or host name",
    )
    stall_seconds: float = _env(
        "SFA_STALL_SECONDS",
        120.0,
        "/healthz fails when lag waits and no batch finished for this long.",
        gt=0,
        le=86_400,
    )
    progress_seconds: float = _env(
        "SFA_PROGRESS_SECONDS",
        30.0,
        "Interval of the INFO progress line (bars/s, lag, batches, fallback); 0: none.",
        ge=0,
        le=86_400,
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = _env(
        "SFA_LOG_LEVEL", "INFO", "Log level, in any case (info, INFO; WARN means WARNING)."
    )

    # --- Dask (the original system's names) ---
    dask_n_workers: int | None = _env(
        "DASK_N_WORKERS",
        None,
        "LocalCluster workers; unset: one per usable core, at most 4.",
        ge=1,
        le=256,
    )
    dask_threads_per_worker: int = _env(
        "DASK_THREADS_PER_WORKER", 1, "Threads per LocalCluster worker.", ge=1, le=256
    )
    dask_memory_limit: str = _env(
        "DASK_MEMORY_LIMIT",
        "2GB",
        "Memory per LocalCluster worker: auto, or a size of at least 100MB (2GB, 512MiB, 2e9).",
        min_length=1,
        allowed="`auto`, or a size >= 100MB",
    )
    dask_chunk_size: int = _env("DASK_CHUNK_SIZE", 100, "Symbols per Dask task.", ge=1, le=100_000)
    dask_enable_distributed: bool = _env(
        "DASK_ENABLE_DISTRIBUTED",
        True,
        "false: analyse in this process, no Dask cluster.",
    )
    dask_scheduler_address: str | None = _env(
        "DASK_SCHEDULER_ADDRESS",
        None,
        "A running scheduler, [tcp|tls]://host:port; unset: a LocalCluster.",
        allowed="[tcp/tls]://host:port",
    )
    dask_memory_target_fraction: float = _env(
        "DASK_MEMORY_TARGET_FRACTION",
        0.6,
        "Worker memory fraction where spilling to disk starts; <= the spill fraction.",
        gt=0,
        le=1,
    )
    dask_memory_spill_fraction: float = _env(
        "DASK_MEMORY_SPILL_FRACTION",
        0.7,
        "Process memory fraction where spilling starts; <= the pause fraction.",
        gt=0,
        le=1,
    )
    dask_memory_pause_fraction: float = _env(
        "DASK_MEMORY_PAUSE_FRACTION",
        0.8,
        "Memory fraction where a worker pauses; <= the terminate fraction.",
        gt=0,
        le=1,
    )
    dask_memory_terminate_fraction: float = _env(
        "DASK_MEMORY_TERMINATE_FRACTION",
        0.95,
        "Memory fraction where the nanny restarts a worker.",
        gt=0,
        le=1,
    )
    dask_connect_timeout: float = _env(
        "DASK_CONNECT_TIMEOUT",
        60.0,
        "Dask connect timeout (60, 60s, 500ms, 2m); a refused port fails at once.",
        gt=0,
        le=86_400,
    )
    dask_tcp_timeout: float = _env(
        "DASK_TCP_TIMEOUT",
        60.0,
        "Dask comm timeout; distributed refuses less than about 10 s.",
        ge=11,
        le=86_400,
    )
    dask_processes: bool | None = _env(
        "SFA_DASK_PROCESSES",
        None,
        "LocalCluster workers as processes (true) or threads (false); unset: processes "
        "for sfa run on more than two cores, else threads.",
    )
    dask_dashboard_address: str | None = _env(
        "SFA_DASK_DASHBOARD_ADDRESS",
        None,
        "Where the LocalCluster's dashboard listens ([host]:port, e.g. 127.0.0.1:8787); "
        "unset: no dashboard.",
        allowed="[host]:port",
    )
    dask_fallback: Literal["local", "fail"] = _env(
        "SFA_DASK_FALLBACK",
        "local",
        "Dask unreachable, at start or later: compute in-process (local, with a WARNING) "
        "or exit (fail: the batch in flight does not commit).",
    )
    dask_task_retries: int = _env(
        "SFA_DASK_TASK_RETRIES", 2, "Retries of a Dask task on a lost worker.", ge=0, le=20
    )
    dask_reconnect_seconds: float = _env(
        "SFA_DASK_RECONNECT_SECONDS",
        30.0,
        "After a fallback, how often to look for the cluster again; 0: never.",
        ge=0,
        le=86_400,
    )
    dask_adapt_min: int | None = _env(
        "SFA_DASK_ADAPT_MIN",
        None,
        "Fewest workers of an adaptive LocalCluster (needs SFA_DASK_ADAPT_MAX); unset: 1; "
        "0 lets an idle cluster stop every worker.",
        ge=0,
        le=256,
    )
    dask_adapt_max: int | None = _env(
        "SFA_DASK_ADAPT_MAX",
        None,
        "Most workers of an adaptive LocalCluster: set, the cluster grows with queued work "
        "and shrinks when idle (DASK_N_WORKERS is then ignored); unset: a fixed size.",
        ge=1,
        le=256,
    )

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

    @field_validator("years", mode="before")
    @classmethod
    def _parse_years(cls, value: Any) -> Any:
        if value is None or isinstance(value, frozenset | set | list | tuple):
            return value
        text = str(value).strip()
        if not text:
            return None
        try:
            years = frozenset(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ValueError("expected comma-separated years such as 2019,2020,2021") from None
        if any(not FIRST_YEAR <= y <= LAST_BAR_YEAR for y in years):
            raise ValueError(f"years must lie in {FIRST_YEAR}..{LAST_BAR_YEAR}")
        return years

    @field_validator("dask_connect_timeout", "dask_tcp_timeout", "stall_seconds", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> float:
        return _duration_seconds(value)

    @field_validator(
        "dask_scheduler_address",
        "transactional_id",
        "dask_dashboard_address",
        "schema_registry_url",
        "schema_registry_user",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "alignment", "processing_guarantee", "dask_fallback", "input_format", mode="before"
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        level = value.strip().upper()
        return "WARNING" if level == "WARN" else level

    @field_validator("dask_memory_limit")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        text = value.strip()
        if text.lower() == "auto":
            return "auto"
        if text.startswith("-"):
            raise ValueError("must be positive: auto or a size such as 2GB")
        match = _SIZE_RE.match(text)
        if not match:
            raise ValueError("expected auto or a size such as 2GB, 512MiB or 2e9 (bytes)")
        unit = (match.group(2) or "").lower()
        factor = _UNITS[unit[:1]] if "i" not in unit else 1024 ** ("kmgtp".index(unit[0]) + 1)
        if float(match.group(1)) * factor < _MIN_MEMORY:
            raise ValueError("must be at least 100MB: a Dask worker needs that much to start")
        return text

    @field_validator("dask_scheduler_address")
    @classmethod
    def _check_scheduler(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if text.lower().startswith("inproc://"):
            return text
        match = _SCHEDULER_RE.match(text)
        if not match or not 1 <= int(match.group("port")) <= 65535:
            raise ValueError("expected a scheduler address such as tcp://10.0.0.5:8786")
        return text

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

    @model_validator(mode="before")
    @classmethod
    def _instance_per_port(cls, data: Any) -> Any:
        """Two instances on one machine share the host name, so the second fenced the
        first (exit 3); they cannot share a metrics port either, so the port they must
        differ in anyway tells them apart. Stable across restarts (same port, same id),
        which the transactional id and static membership need; 8000 keeps the plain
        host name, as before, for one instance per host (containers)."""
        if not isinstance(data, dict) or data.get("SFA_INSTANCE_ID") or data.get("instance_id"):
            return data
        port = str(data.get("SFA_METRICS_PORT", data.get("metrics_port", "8000"))).strip()
        if port in ("8000", "0") or not port.isdigit():
            return data
        return {**data, "SFA_INSTANCE_ID": f"{socket.gethostname()}-{int(port)}"}

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

    @field_validator("dask_dashboard_address")
    @classmethod
    def _check_dashboard(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        match = _LISTEN_RE.match(text)
        if not match or not _port_ok(match.group("port")):
            raise ValueError("expected [host]:port such as 127.0.0.1:8787 or :8787")
        return text

    @model_validator(mode="after")
    def _fractions_ordered(self) -> Settings:
        chain = [
            ("DASK_MEMORY_TARGET_FRACTION", self.dask_memory_target_fraction),
            ("DASK_MEMORY_SPILL_FRACTION", self.dask_memory_spill_fraction),
            ("DASK_MEMORY_PAUSE_FRACTION", self.dask_memory_pause_fraction),
            ("DASK_MEMORY_TERMINATE_FRACTION", self.dask_memory_terminate_fraction),
        ]
        for (low_name, low), (high_name, high) in itertools.pairwise(chain):
            if high < low:
                raise ValueError(
                    f"{high_name}: {high} is below {low_name} ({low}); the fractions must "
                    "be ordered target <= spill <= pause <= terminate"
                )
        return self

    @model_validator(mode="after")
    def _registry_needed(self) -> Settings:
        if self.input_format not in ("auto", "json") and self.schema_registry_url is None:
            raise ValueError(
                f"SFA_SCHEMA_REGISTRY_URL: must be set when SFA_INPUT_FORMAT is "
                f"{self.input_format} (the schemas come from the registry)"
            )
        return self

    @model_validator(mode="after")
    def _adapt_range(self) -> Settings:
        low, high = self.dask_adapt_min, self.dask_adapt_max
        if low is not None and high is None:
            raise ValueError(
                "SFA_DASK_ADAPT_MIN: needs SFA_DASK_ADAPT_MAX (unset, the cluster has a fixed "
                "size: DASK_N_WORKERS)"
            )
        if low is not None and high is not None and low > high:
            raise ValueError(f"SFA_DASK_ADAPT_MIN: {low} is above SFA_DASK_ADAPT_MAX ({high})")
        return self

    @model_validator(mode="after")
    def _enough_years(self) -> Settings:
        """A filter with fewer years than SFA_MIN_YEARS makes every result
        insufficient_history, silently; that is never what was meant."""
        if self.years is not None and len(self.years) < self.min_years:
            raise ValueError(
                f"SFA_YEARS: {len(self.years)} year(s), fewer than SFA_MIN_YEARS "
                f"({self.min_years}), so no symbol could ever have a pattern; name more years "
                "or lower SFA_MIN_YEARS"
            )
        return self

    # --- derived views ---

    def engine_params(self) -> EngineParams:
        return EngineParams(
            window_days=self.window_days,
            min_years=self.min_years,
            min_bars_per_year=self.min_bars_per_year,
            alignment=self.alignment,
            years=self.years,
        )

    @property
    def effective_repartition_topic(self) -> str:
        """SFA_REPARTITION_TOPIC, else one per group (as Kafka Streams names its own)."""
        return self.repartition_topic or f"{self.kafka_group_id}-repartition"

    @property
    def effective_transactional_id(self) -> str:
        """Stable across restarts of one instance, so a restarted producer fences its zombie."""
        return self.transactional_id or f"{self.kafka_group_id}-{self.instance_id}"

    def redacted(self) -> dict[str, Any]:
        """For logs: every field, secrets as *** (composite values with their secret parts
        masked)."""
        data = self.model_dump()
        data["kafka_extra"] = {
            k: (v._display() if isinstance(v, MaskedSecret) else secrets.MASK)
            if isinstance(v, SecretStr)
            else v
            for k, v in self.kafka_extra.items()
        }
        if self.schema_registry_password is not None:
            data["schema_registry_password"] = secrets.MASK
        if self.schema_registry_url is not None:
            data["schema_registry_url"] = secrets.mask_composite(self.schema_registry_url)[0]
        return data

    def secret_values(self) -> list[str]:
        """Every secret in clear: the values `service.secrets.mask` must hide."""
        found: list[str] = []
        for value in self.kafka_extra.values():
            if isinstance(value, MaskedSecret):
                found.extend(secrets.mask_composite(value.get_secret_value())[1])
            elif isinstance(value, SecretStr):
                found.append(value.get_secret_value())
        if self.schema_registry_password is not None:
            found.append(self.schema_registry_password.get_secret_value())
        for text in (
            self.kafka_bootstrap_servers,
            self.dask_scheduler_address or "",
            self.schema_registry_url or "",
        ):
            found.extend(secrets.mask_composite(text)[1])
        return found


# Env names the Settings model owns; every other KAFKA_* is librdkafka passthrough.
_OWN_KAFKA = {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_GROUP_ID"}
# Names that decide what is read, written and owned: an empty one is a templating mistake,
# and falling back to the default could join someone else's group.
_NOT_EMPTY = {
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_GROUP_ID",
    "SFA_INPUT_TOPIC",
    "SFA_OUTPUT_TOPIC",
    "SFA_DLQ_TOPIC",
    "SFA_STATE_TOPIC",
    "SFA_INSTANCE_ID",
}


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the environment (or `env`), apply CLI `overrides` (field names), validate.

    Empty variables count as unset (`SFA_YEARS=` means no filter), except the names in
    `_NOT_EMPTY`, which must be unset or hold a value.
    """
    env = os.environ if env is None else env
    aliases = {f.alias: name for name, f in Settings.model_fields.items() if f.alias}
    data: dict[str, Any] = {}
    for alias, name in aliases.items():
        raw = env.get(alias)
        if raw is None:
            continue
        if raw.strip() == "":
            if alias in _NOT_EMPTY:
                raise ConfigError(f"{alias}: must not be empty (unset it to use the default)")
            continue
        data[name] = raw.strip()
    extra: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in env.items():
        if not key.startswith("KAFKA_") or key in _OWN_KAFKA:
            continue
        if is_service_link(key):
            ignored.append(key)
        elif value != "":
            extra[key[len("KAFKA_") :].lower().replace("_", ".")] = value
    data["kafka_extra"] = extra
    data["kafka_ignored"] = tuple(sorted(ignored))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = Settings.model_validate({_alias_of(k): v for k, v in data.items()})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    secrets.register(settings.secret_values())
    return settings


def kafka_variable(prop: str) -> str:
    """The environment variable a librdkafka property came from (`sasl.password` ->
    `KAFKA_SASL_PASSWORD`)."""
    return "KAFKA_" + prop.upper().replace(".", "_")


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    if not err["loc"]:  # a model-level check: its message names the variables itself
        return str(err["msg"]).removeprefix("Value error, ")
    field = str(err["loc"][0])
    info = Settings.model_fields.get(field)
    variable = (info.alias if info is not None else None) or field
    if variable == "_kafka_extra" and len(err["loc"]) > 1:
        variable = kafka_variable(str(err["loc"][1]))
    raw = err.get("input")
    shown = repr(raw if not isinstance(raw, str) or len(raw) <= _MAX_SHOWN else raw[:_MAX_SHOWN])
    if isinstance(raw, str) and len(raw) > _MAX_SHOWN:
        shown = f"{shown[:-1]}...' ({len(raw)} characters)"
    if secrets.is_secret_name(variable):
        shown = secrets.MASK
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{variable}: {message} (got {shown})"


def _alias_of(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    return field.alias if field is not None and field.alias else field_name
