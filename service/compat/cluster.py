"""The original's Dask helpers: `DaskResourceManager` and two module functions.

The manager opens the service's compute session (`service.compute.sync.open_sync`), so
it follows the same logged fallback chain (remote -> local cluster -> threads ->
sequential) as every batch analysis, instead of the original's silent switch to
sequential work. As in the original, a local cluster is `n_workers` worker processes
whatever `enable_distributed` says (the original connected to a scheduler with it and
started a LocalCluster otherwise); threads and then sequential work only follow when
that cluster cannot start. Dask itself is only called in `service.compute`.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd

from service.compat.config import ParallelProcessingConfig
from service.compute.compat import (
    apply_dask_config,
    cluster_info,
    collect_garbage,
    to_dask_dataframe,
)
from service.compute.sync import SyncCompute, SyncMode, open_sync
from service.settings import DaskSettings, Settings, load_settings

__all__ = [
    "DaskResourceManager",
    "create_dask_dataframe_from_stock_data",
    "optimize_dask_config_for_spring_festival_analysis",
]

log = logging.getLogger(__name__)

#: Frames per partition of `create_dask_dataframe_from_stock_data` (the original's 100).
_FRAMES_PER_PARTITION = 100


class DaskResourceManager:
    """`with DaskResourceManager(config) as rm:` -- `rm.client` is a Client, or None when
    the session fell back to sequential work; `rm.mode` and `rm.fallback_reason` say
    which step of the chain was had and why the earlier ones were not.

    Nested `with` blocks (or an explicit `start_cluster()`) share one session; it closes
    when the block that opened it ends, or on `shutdown_cluster()`. Attributes the
    manager lacks are looked up on the client, because this API used to return the
    Client itself from `with` (`rm.wait_for_workers(...)` keeps working).
    """

    def __init__(self, config: ParallelProcessingConfig | None = None) -> None:
        self.config = config if config is not None else ParallelProcessingConfig()
        self.client: Any = None
        #: Runs chunks on whatever was had; None outside a session.
        self.compute: SyncCompute | None = None
        self.mode: str | None = None
        self.fallback_reason: str | None = None
        self._session: AbstractContextManager[SyncCompute] | None = None
        self._opened_by_block: list[bool] = []

    def start_cluster(self) -> Any:
        """Open the session (once) and return its Client, or None when sequential.

        The chain: the scheduler at `scheduler_address` when one is set, then a
        LocalCluster of `n_workers` processes x `threads_per_worker` threads with
        `memory_limit` each (the original's cluster, `enable_distributed` or not), then
        one in-process worker with threads, then sequential work. Every step down is a
        WARNING in the log and lands in `mode` / `fallback_reason`.
        """
        if self.compute is not None:
            return self.client
        execution = self.config.execution
        start: SyncMode | None = None if execution == "auto" else execution
        # The service reads DASK_ENABLE_DISTRIBUTED=false as "no cluster"; the original
        # started its LocalCluster then too, so this API always has it in the chain.
        settings = self.config.to_settings().model_copy(update={"dask_enable_distributed": True})
        session = open_sync(settings, start)
        compute = session.__enter__()
        self._session, self.compute, self.client = session, compute, compute.client
        self.mode, self.fallback_reason = compute.mode, compute.fallback_reason
        # Each step down was already a WARNING of its own (service.compute.sync).
        log.info(
            "Dask session open: mode=%s, fallback_reason=%s", compute.mode, compute.fallback_reason
        )
        return self.client

    def shutdown_cluster(self) -> None:
        """Close the session: the client, and the cluster if this session started one."""
        session, self._session = self._session, None
        self.compute = self.client = None
        if session is not None:
            session.__exit__(None, None, None)

    def get_cluster_info(self) -> dict[str, Any]:
        """status ('connected' / 'not_connected' / 'error'), workers, memory (bytes) and
        cores, plus the session's mode and fallback reason."""
        info: dict[str, Any]
        if self.client is None:
            info = {"status": "not_connected", "workers": 0, "memory": 0, "total_cores": 0}
        else:
            info = cluster_info(self.client)
        return {**info, "mode": self.mode, "fallback_reason": self.fallback_reason}

    def optimize_memory(self) -> dict[str, int]:
        """Collect garbage on every worker and here; objects collected per place."""
        collected = collect_garbage(self.client) if self.client is not None else {}
        collected["local"] = gc.collect()
        return collected

    def __enter__(self) -> DaskResourceManager:
        opens = self.compute is None
        self.start_cluster()
        self._opened_by_block.append(opens)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._opened_by_block and self._opened_by_block.pop():
            self.shutdown_cluster()

    def __getattr__(self, name: str) -> Any:
        # Only called for names the manager lacks; never for the client itself.
        client = self.__dict__.get("client")
        if client is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        return getattr(client, name)


def create_dask_dataframe_from_stock_data(
    stock_data_dict: Mapping[str, pd.DataFrame], npartitions: int | None = None
) -> Any:
    """Every row of every frame as one Dask DataFrame, with a `stock_code` column.

    A frame without `stock_code` gets its key there; a date index becomes a column
    (`trade_date` when unnamed) so that no date is lost. The caller's frames are not
    modified. One partition per 100 frames unless `npartitions` says otherwise.
    """
    parts: list[pd.DataFrame] = []
    for symbol, frame in stock_data_dict.items():
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{symbol}: expected a pandas DataFrame, got {type(frame).__name__}")
        if isinstance(frame.index, pd.DatetimeIndex) or frame.index.name in ("date", "trade_date"):
            frame = frame.rename_axis(str(frame.index.name or "trade_date")).reset_index()
        if "stock_code" not in frame.columns:
            frame = frame.assign(stock_code=str(symbol))
        parts.append(frame)
    combined = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"stock_code": pd.Series([], dtype=object)})
    )
    if npartitions is None:
        npartitions = max(1, math.ceil(len(parts) / _FRAMES_PER_PARTITION))
    return to_dask_dataframe(combined, npartitions)


def optimize_dask_config_for_spring_festival_analysis(
    settings: Settings | DaskSettings | None = None,
) -> dict[str, Any]:
    """Apply the DASK_* memory fractions and timeouts (from `settings`, the whole or its
    Dask part, else the environment) to `dask.config` for the whole process; returns the
    keys set."""
    whole = settings if settings is not None else load_settings()
    values = apply_dask_config(whole.dask if isinstance(whole, Settings) else whole)
    log.info("Dask configuration set for Spring Festival analysis: %s", values)
    return values
