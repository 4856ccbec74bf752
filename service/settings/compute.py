"""The Dask part: the cluster the analyses run on, under the original system's DASK_*
names (SPEC 8), and what happens when it is unreachable."""

from __future__ import annotations

import itertools
import re
from typing import Any, Literal

from pydantic import field_validator, model_validator

from service import secrets
from service.settings.fields import Duration, Part, check_memory_limit, env

__all__ = ["DaskSettings"]

_SCHEDULER_RE = re.compile(
    r"^(?:(?:tcp|tls|ws|wss|ucx)://)?(?P<host>\[[0-9a-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})/?$",
    re.IGNORECASE,
)
_LISTEN_RE = re.compile(r"^(?P<host>\[[0-9a-f:.]+\]|[A-Za-z0-9_.\-]*):(?P<port>\d{1,5})$")


class DaskSettings(Part):
    """LocalCluster or scheduler, worker memory, timeouts, retries and the fallback."""

    dask_n_workers: int | None = env(
        "DASK_N_WORKERS",
        None,
        "LocalCluster workers; unset: one per usable core, at most 4.",
        ge=1,
        le=256,
    )
    dask_threads_per_worker: int = env(
        "DASK_THREADS_PER_WORKER", 1, "Threads per LocalCluster worker.", ge=1, le=256
    )
    dask_memory_limit: str = env(
        "DASK_MEMORY_LIMIT",
        "2GB",
        "Memory per LocalCluster worker process (a threaded worker has none): auto, or a size"
        " of at least 100MB (2GB, 512MiB, 2e9).",
        min_length=1,
        allowed="`auto`, or a size >= 100MB",
    )
    dask_chunk_size: int = env("DASK_CHUNK_SIZE", 100, "Symbols per Dask task.", ge=1, le=100_000)
    dask_enable_distributed: bool = env(
        "DASK_ENABLE_DISTRIBUTED",
        True,
        "false: analyse in this process, no Dask cluster.",
    )
    dask_scheduler_address: str | None = env(
        "DASK_SCHEDULER_ADDRESS",
        None,
        "A running scheduler, [tcp|tls]://host:port; unset: a LocalCluster.",
        allowed="[tcp/tls]://host:port",
    )
    dask_memory_target_fraction: float = env(
        "DASK_MEMORY_TARGET_FRACTION",
        0.6,
        "Worker memory fraction where spilling to disk starts; <= the spill fraction.",
        gt=0,
        le=1,
    )
    dask_memory_spill_fraction: float = env(
        "DASK_MEMORY_SPILL_FRACTION",
        0.7,
        "Process memory fraction where spilling starts; <= the pause fraction.",
        gt=0,
        le=1,
    )
    dask_memory_pause_fraction: float = env(
        "DASK_MEMORY_PAUSE_FRACTION",
        0.8,
        "Memory fraction where a worker pauses; <= the terminate fraction.",
        gt=0,
        le=1,
    )
    dask_memory_terminate_fraction: float = env(
        "DASK_MEMORY_TERMINATE_FRACTION",
        0.95,
        "Memory fraction where the nanny restarts a worker.",
        gt=0,
        le=1,
    )
    dask_connect_timeout: Duration = env(
        "DASK_CONNECT_TIMEOUT",
        60.0,
        "Dask connect timeout (60, 60s, 500ms, 2m); a refused port fails at once.",
        gt=0,
        le=86_400,
    )
    dask_tcp_timeout: Duration = env(
        "DASK_TCP_TIMEOUT",
        60.0,
        "Dask comm timeout; distributed refuses less than about 10 s.",
        ge=11,
        le=86_400,
    )
    dask_processes: bool | None = env(
        "SFA_DASK_PROCESSES",
        None,
        "LocalCluster workers as processes (true) or threads (false); unset: processes "
        "for sfa run on more than two cores, else threads.",
    )
    dask_dashboard_address: str | None = env(
        "SFA_DASK_DASHBOARD_ADDRESS",
        None,
        "Where the LocalCluster's dashboard listens ([host]:port, e.g. 127.0.0.1:8787); "
        "unset: no dashboard.",
        allowed="[host]:port",
    )
    dask_fallback: Literal["local", "fail"] = env(
        "SFA_DASK_FALLBACK",
        "local",
        "Dask unreachable, at start or later: compute in-process (local, with a WARNING) "
        "or exit (fail: the batch in flight does not commit).",
    )
    dask_task_retries: int = env(
        "SFA_DASK_TASK_RETRIES", 2, "Retries of a Dask task on a lost worker.", ge=0, le=20
    )
    dask_reconnect_seconds: float = env(
        "SFA_DASK_RECONNECT_SECONDS",
        30.0,
        "After a fallback, how often to look for the cluster again; 0: never.",
        ge=0,
        le=86_400,
    )
    dask_adapt_min: int | None = env(
        "SFA_DASK_ADAPT_MIN",
        None,
        "Fewest workers of an adaptive LocalCluster (needs SFA_DASK_ADAPT_MAX); unset: 1; "
        "0 lets an idle cluster stop every worker.",
        ge=0,
        le=256,
    )
    dask_adapt_max: int | None = env(
        "SFA_DASK_ADAPT_MAX",
        None,
        "Most workers of an adaptive LocalCluster: set, the cluster grows with queued work "
        "and shrinks when idle (DASK_N_WORKERS is then ignored); unset: a fixed size.",
        ge=1,
        le=256,
    )

    @field_validator("dask_scheduler_address", "dask_dashboard_address", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("dask_fallback", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("dask_memory_limit")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        return check_memory_limit(value)

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

    @field_validator("dask_dashboard_address")
    @classmethod
    def _check_dashboard(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        match = _LISTEN_RE.match(text)
        if not match or not 0 <= int(match.group("port")) <= 65535:
            raise ValueError("expected [host]:port such as 127.0.0.1:8787 or :8787")
        return text

    @model_validator(mode="after")
    def _fractions_ordered(self) -> DaskSettings:
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
    def _adapt_range(self) -> DaskSettings:
        low, high = self.dask_adapt_min, self.dask_adapt_max
        if low is not None and high is None:
            raise ValueError(
                "SFA_DASK_ADAPT_MIN: needs SFA_DASK_ADAPT_MAX (unset, the cluster has a fixed "
                "size: DASK_N_WORKERS)"
            )
        if low is not None and high is not None and low > high:
            raise ValueError(f"SFA_DASK_ADAPT_MIN: {low} is above SFA_DASK_ADAPT_MAX ({high})")
        return self

    def secret_values(self) -> list[str]:
        return secrets.mask_composite(self.dask_scheduler_address or "")[1]
