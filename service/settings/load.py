"""The whole configuration: one part per concern, read together by `load_settings`.

Only the CLI entry points and the wiring of `sfa run` and replay hold the composite; every
other module takes the part it needs. Field names are unique across the parts, so the CLI's
overrides (by field name) find their part, and `redacted()` stays one flat mapping.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from service import secrets
from service.errors import ConfigError
from service.settings.batching import BatchSettings
from service.settings.compute import DaskSettings
from service.settings.engine import EngineSettings
from service.settings.fields import Part, reading
from service.settings.kafka import KafkaSettings, kafka_variable
from service.settings.monitor import MonitorSettings
from service.settings.registry import RegistrySettings

__all__ = ["PARTS", "Settings", "load_settings"]

_MAX_SHOWN = 60  # characters of a rejected value quoted back


class Settings(BaseModel):
    """Every knob of the service, replay and the compat API, by concern."""

    model_config = ConfigDict(frozen=True)

    kafka: KafkaSettings
    batching: BatchSettings
    registry: RegistrySettings
    engine: EngineSettings
    monitor: MonitorSettings
    dask: DaskSettings

    def parts(self) -> list[Part]:
        return [getattr(self, name) for name in PARTS]

    def redacted(self) -> dict[str, Any]:
        """For logs: every field of every part, secrets as *** (composite values with
        their secret parts masked)."""
        return {k: v for part in self.parts() for k, v in part.redacted().items()}

    def secret_values(self) -> list[str]:
        """Every secret in clear: the values `service.secrets.mask` must hide."""
        return [value for part in self.parts() for value in part.secret_values()]


# In the order of the configuration reference.
PARTS: dict[str, type[Part]] = {
    "kafka": KafkaSettings,
    "batching": BatchSettings,
    "registry": RegistrySettings,
    "engine": EngineSettings,
    "monitor": MonitorSettings,
    "dask": DaskSettings,
}


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the environment (or `env`), apply CLI `overrides` (field names), validate.

    Empty variables count as unset (`SFA_YEARS=` means no filter), except the fields
    marked not_empty, which must be unset or hold a value. A bad value is a `ConfigError`
    of one line naming the variable.
    """
    env = os.environ if env is None else env
    given: dict[str, dict[str, Any]] = {name: {} for name in PARTS}
    for field, value in overrides.items():
        owner = next((n for n, part in PARTS.items() if field in part.model_fields), None)
        if owner is None:
            raise ConfigError(f"{field}: no such setting")
        if value is not None:
            given[owner][field] = value
    instance = _instance_per_port(env, given)
    if instance is not None:
        given["kafka"]["instance_id"] = instance
    with reading(env):
        built = {name: _build(part, given[name]) for name, part in PARTS.items()}
    settings = Settings.model_validate(built)
    secrets.register(settings.secret_values())
    return settings


def _instance_per_port(env: Mapping[str, str], given: dict[str, dict[str, Any]]) -> str | None:
    """Two instances on one machine share the host name, so the second fenced the
    first (exit 3); they cannot share a metrics port either, so the port they must
    differ in anyway tells them apart. Stable across restarts (same port, same id),
    which the transactional id and static membership need; 8000 keeps the plain
    host name, as before, for one instance per host (containers)."""
    if env.get("SFA_INSTANCE_ID", "").strip() or "instance_id" in given["kafka"]:
        return None
    port = str(given["monitor"].get("metrics_port", env.get("SFA_METRICS_PORT", "8000"))).strip()
    if port in ("8000", "0") or not port.isdigit():
        return None
    return f"{socket.gethostname()}-{int(port)}"


def _build(part: type[Part], given: dict[str, Any]) -> Part:
    try:
        return part(**given)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, part)) from None


def _one_line(exc: ValidationError, part: type[Part]) -> str:
    err = exc.errors()[0]
    if not err["loc"]:  # a model-level check: its message names the variables itself
        return str(err["msg"]).removeprefix("Value error, ")
    field = str(err["loc"][0])
    info = part.model_fields.get(field)
    variable = (info.alias if info is not None else None) or field
    if variable in ("_kafka_extra", "kafka_extra") and len(err["loc"]) > 1:
        variable = kafka_variable(str(err["loc"][1]))
    raw = err.get("input")
    shown = repr(raw if not isinstance(raw, str) or len(raw) <= _MAX_SHOWN else raw[:_MAX_SHOWN])
    if isinstance(raw, str) and len(raw) > _MAX_SHOWN:
        shown = f"{shown[:-1]}...' ({len(raw)} characters)"
    if secrets.is_secret_name(variable):
        shown = secrets.MASK
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{variable}: {message} (got {shown})"
