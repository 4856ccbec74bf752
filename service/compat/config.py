"""`ParallelProcessingConfig`: the original's Dask knobs, read from the service settings.

The knobs map one to one onto the DASK_* settings (SPEC 9), so a config built here and
the service's own compute read the same environment the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from service.compute.config import default_n_workers
from service.settings import DaskSettings, Settings, load_settings

__all__ = ["Execution", "ParallelProcessingConfig"]

Execution = Literal["auto", "remote", "local_cluster", "threads", "sequential"]

#: ParallelProcessingConfig knob -> Settings field (the DASK_* variable it comes from).
_KNOBS = {
    "n_workers": "dask_n_workers",
    "threads_per_worker": "dask_threads_per_worker",
    "memory_limit": "dask_memory_limit",
    "chunk_size": "dask_chunk_size",
    "enable_distributed": "dask_enable_distributed",
    "scheduler_address": "dask_scheduler_address",
}


@dataclass
class ParallelProcessingConfig:
    """The original knobs. `execution` is new: 'auto' follows the fallback chain from the
    knobs; another value starts the chain there (e.g. 'sequential' needs no Dask at all)."""

    n_workers: int = 4
    threads_per_worker: int = 2
    memory_limit: str = "2GB"
    chunk_size: int = 100
    enable_distributed: bool = False
    scheduler_address: str | None = None
    execution: Execution = "auto"
    settings: DaskSettings | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("n_workers", "threads_per_worker", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ParallelProcessingConfig:
        """Read DASK_* (and the memory/timeouts they imply) via `load_settings`."""
        return cls.from_settings(load_settings(env))

    @classmethod
    def from_settings(
        cls, settings: Settings | DaskSettings | None = None
    ) -> ParallelProcessingConfig:
        """The original's constructor: the knobs of `settings` (the whole settings or their
        Dask part), or of the environment when none are given (what the original's
        `get_settings()` read)."""
        whole = settings if settings is not None else load_settings()
        s = whole.dask if isinstance(whole, Settings) else whole
        knobs = {knob: getattr(s, name) for knob, name in _KNOBS.items()}
        return cls(**{**knobs, "n_workers": s.dask_n_workers or default_n_workers()}, settings=s)

    def to_settings(self) -> DaskSettings:
        """The Dask settings these knobs mean; fractions/timeouts from env if read there."""
        base = self.settings if self.settings is not None else load_settings({}).dask
        update = {name: getattr(self, knob) for knob, name in _KNOBS.items()}
        return base.model_copy(
            update={**update, "dask_scheduler_address": self.scheduler_address or None}
        )
