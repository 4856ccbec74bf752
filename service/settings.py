"""Environment -> one frozen Settings object, read once at start (SPEC 9).

Each field names its environment variable in `alias`. A bad value raises
`ConfigError` with one line naming the variable, so the CLI can print it and exit 2.
Any other `KAFKA_SOME_PROPERTY` is passed to librdkafka as `some.property`;
values whose key looks secret (password, secret, key, token, ...) are kept as
`SecretStr`, so no rendering of the settings (repr, model_dump, logs) shows them.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from service.calendar import FIRST_YEAR, LAST_BAR_YEAR
from service.engine.types import EngineParams
from service.errors import ConfigError

__all__ = ["Settings", "load_settings"]

_SECRET_RE = re.compile(r"password|secret|key|token|credential|jaas", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def _duration_seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError("expected a duration such as 60, 60s, 500ms or 2m")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


class Settings(BaseModel):
    """Every knob of the service, replay and the compat API."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    # --- Kafka ---
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_group_id: str = Field("sfa-service", alias="KAFKA_GROUP_ID", min_length=1)
    input_topic: str = Field("stock-bars", alias="SFA_INPUT_TOPIC", min_length=1)
    output_topic: str = Field("sfa-results", alias="SFA_OUTPUT_TOPIC", min_length=1)
    dlq_topic: str = Field("stock-bars-dlq", alias="SFA_DLQ_TOPIC", min_length=1)
    state_topic: str = Field("sfa-state", alias="SFA_STATE_TOPIC", min_length=1)
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once", alias="SFA_PROCESSING_GUARANTEE"
    )
    instance_id: str = Field(default_factory=socket.gethostname, alias="SFA_INSTANCE_ID")
    transactional_id: str | None = Field(None, alias="SFA_TRANSACTIONAL_ID")
    # Every other KAFKA_* variable, as librdkafka properties; secret-looking ones are
    # SecretStr, unwrapped only where a client config is built (service.kafka.config).
    kafka_extra: dict[str, str | SecretStr] = Field(default_factory=dict, alias="_kafka_extra")

    # --- batching and flow control ---
    batch_max_messages: int = Field(20_000, alias="SFA_BATCH_MAX_MESSAGES", ge=1, le=1_000_000)
    batch_max_wait_ms: int = Field(500, alias="SFA_BATCH_MAX_WAIT_MS", ge=1, le=600_000)
    max_inflight_batches: int = Field(4, alias="SFA_MAX_INFLIGHT_BATCHES", ge=1, le=1000)
    max_message_bytes: int = Field(1_048_576, alias="SFA_MAX_MESSAGE_BYTES", ge=64)
    # Helper processes that decode and validate batches beside the main thread;
    # unset: one when the machine has a spare core (service.decode.pool).
    decode_processes: int | None = Field(None, alias="SFA_DECODE_PROCESSES", ge=0, le=32)

    # --- engine ---
    window_days: int = Field(60, alias="SFA_WINDOW_DAYS", ge=1, le=175)
    min_years: int = Field(3, alias="SFA_MIN_YEARS", ge=1, le=199)
    min_bars_per_year: int = Field(10, alias="SFA_MIN_BARS_PER_YEAR", ge=2)
    alignment: Literal["trading", "calendar"] = Field("trading", alias="SFA_ALIGNMENT")
    years: frozenset[int] | None = Field(None, alias="SFA_YEARS")

    # --- metrics and health ---
    metrics_port: int = Field(8000, alias="SFA_METRICS_PORT", ge=0, le=65535)
    stall_seconds: float = Field(120.0, alias="SFA_STALL_SECONDS", gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="SFA_LOG_LEVEL")

    # --- Dask (the original system's names) ---
    dask_n_workers: int | None = Field(None, alias="DASK_N_WORKERS", ge=1, le=256)
    dask_threads_per_worker: int = Field(1, alias="DASK_THREADS_PER_WORKER", ge=1, le=256)
    dask_memory_limit: str = Field("2GB", alias="DASK_MEMORY_LIMIT", min_length=1)
    dask_chunk_size: int = Field(100, alias="DASK_CHUNK_SIZE", ge=1, le=100_000)
    dask_enable_distributed: bool = Field(True, alias="DASK_ENABLE_DISTRIBUTED")
    dask_scheduler_address: str | None = Field(None, alias="DASK_SCHEDULER_ADDRESS")
    dask_memory_target_fraction: float = Field(0.6, alias="DASK_MEMORY_TARGET_FRACTION", gt=0, le=1)
    dask_memory_spill_fraction: float = Field(0.7, alias="DASK_MEMORY_SPILL_FRACTION", gt=0, le=1)
    dask_memory_pause_fraction: float = Field(0.8, alias="DASK_MEMORY_PAUSE_FRACTION", gt=0, le=1)
    dask_memory_terminate_fraction: float = Field(
        0.95, alias="DASK_MEMORY_TERMINATE_FRACTION", gt=0, le=1
    )
    dask_connect_timeout: float = Field(60.0, alias="DASK_CONNECT_TIMEOUT", gt=0)
    # distributed asserts on TCP timeouts under ~10 s ("Timeout too low").
    dask_tcp_timeout: float = Field(60.0, alias="DASK_TCP_TIMEOUT", ge=11)
    # LocalCluster workers as processes (true) or threads in this process (false). Unset:
    # processes for `sfa run` on machines with more than two cores; threads otherwise and
    # for `sfa replay`, whose main thread is the bottleneck: on two cores, worker
    # processes beside the broker and the decoder cost more CPU than they give (measured
    # with make bench / make bench-kafka).
    dask_processes: bool | None = Field(None, alias="SFA_DASK_PROCESSES")
    dask_fallback: Literal["local", "fail"] = Field("local", alias="SFA_DASK_FALLBACK")
    dask_task_retries: int = Field(2, alias="SFA_DASK_TASK_RETRIES", ge=0, le=20)
    # After a fallback, how often to look for the cluster again (0: never).
    dask_reconnect_seconds: float = Field(30.0, alias="SFA_DASK_RECONNECT_SECONDS", ge=0)

    @field_validator("kafka_extra", mode="before")
    @classmethod
    def _wrap_secrets(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            k: SecretStr(v) if isinstance(v, str) and _SECRET_RE.search(k) else v
            for k, v in value.items()
        }

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

    @field_validator("dask_connect_timeout", "dask_tcp_timeout", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> float:
        return _duration_seconds(value)

    @field_validator("dask_scheduler_address", "transactional_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("alignment", "processing_guarantee", "dask_fallback", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

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
    def effective_transactional_id(self) -> str:
        """Stable across restarts of one instance, so a restarted producer fences its zombie."""
        return self.transactional_id or f"{self.kafka_group_id}-{self.instance_id}"

    def redacted(self) -> dict[str, Any]:
        """For logs: every field, secrets as ***."""
        data = self.model_dump()
        data["kafka_extra"] = {
            k: ("***" if isinstance(v, SecretStr) else v) for k, v in self.kafka_extra.items()
        }
        return data


# Env names the Settings model owns; every other KAFKA_* is librdkafka passthrough.
_OWN_KAFKA = {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_GROUP_ID", "KAFKA_PORT"}


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the environment (or `env`), apply CLI `overrides` (field names), validate.

    Empty variables count as unset, so `SFA_YEARS=` means no filter.
    """
    env = os.environ if env is None else env
    aliases = {f.alias: name for name, f in Settings.model_fields.items() if f.alias}
    data: dict[str, Any] = {}
    for alias, name in aliases.items():
        raw = env.get(alias)
        if raw is not None and raw.strip() != "":
            data[name] = raw.strip()
    extra = {
        key[len("KAFKA_") :].lower().replace("_", "."): value
        for key, value in env.items()
        if key.startswith("KAFKA_") and key not in _OWN_KAFKA and value != ""
    }
    data["kafka_extra"] = extra
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate({_alias_of(k): v for k, v in data.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        info = Settings.model_fields.get(field)
        variable = (info.alias if info is not None else None) or field
        shown = "***" if _SECRET_RE.search(variable) else repr(err.get("input"))
        raise ConfigError(f"{variable}: {err['msg']} (got {shown})") from None


def _alias_of(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    return field.alias if field is not None and field.alias else field_name
