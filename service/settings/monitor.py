"""The monitoring part: where /metrics, /healthz and /readyz listen, when health calls a
stall, the progress line's interval and the log level."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from service.settings.fields import Duration, Part, env

__all__ = ["MonitorSettings"]


class MonitorSettings(Part):
    """HTTP endpoints, health and logs (SPEC 10)."""

    metrics_port: int = env(
        "SFA_METRICS_PORT",
        8000,
        "Port of /metrics, /healthz and /readyz; 0 turns the endpoint off.",
        ge=0,
        le=65535,
    )
    metrics_address: str = env(
        "SFA_METRICS_ADDRESS",
        "127.0.0.1",
        "Interface the metrics port binds: loopback by default, so a laptop run exposes "
        "nothing; the image sets 0.0.0.0 so Prometheus and probes reach it from outside.",
        min_length=1,
        pattern=r"^[A-Za-z0-9.:_-]+$",
        allowed="an IP address or host name",
    )
    stall_seconds: Duration = env(
        "SFA_STALL_SECONDS",
        120.0,
        "/healthz fails when lag waits and no batch finished for this long.",
        gt=0,
        le=86_400,
    )
    progress_seconds: float = env(
        "SFA_PROGRESS_SECONDS",
        30.0,
        "Interval of the INFO progress line (bars/s, lag, batches, fallback); 0: none.",
        ge=0,
        le=86_400,
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = env(
        "SFA_LOG_LEVEL", "INFO", "Log level, in any case (info, INFO; WARN means WARNING)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        level = value.strip().upper()
        return "WARNING" if level == "WARN" else level
