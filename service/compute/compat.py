"""The Dask calls behind the original API's resource helpers (`service.compat.cluster`).

Here because only `service/compute/` may talk to Dask: the compat layer decides what to
ask, these functions ask it. `dask.dataframe` is imported on first use only: it costs
about half a second and most users of the API never build a Dask DataFrame.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import dask.config
import pandas as pd
from distributed import Client

from service.compute.config import dask_config, reason_of
from service.settings import DaskSettings

__all__ = ["apply_dask_config", "cluster_info", "collect_garbage", "to_dask_dataframe"]

log = logging.getLogger(__name__)


def cluster_info(client: Client) -> dict[str, Any]:
    """status, workers, memory (bytes, summed memory limits) and cores of the cluster."""
    try:
        info = client.scheduler_info(n_workers=-1)
        dashboard = client.dashboard_link
    except Exception as exc:  # a scheduler that went away answers with OSError, TimeoutError...
        log.warning("cluster info unavailable: %s", reason_of(exc))
        return {"status": "error", "error": reason_of(exc), "workers": 0, "memory": 0}
    workers = info.get("workers", {}).values()
    memory = sum(int(w.get("memory_limit") or 0) for w in workers)
    return {
        "status": "connected",
        "workers": len(workers),
        "memory": memory,
        "total_memory": memory,  # the original's key
        "total_cores": sum(int(w.get("nthreads") or 0) for w in workers),
        "scheduler_address": str(info.get("address", "")),
        "dashboard_link": dashboard,
    }


def collect_garbage(client: Client) -> dict[str, int]:
    """`gc.collect()` on every worker; objects collected per worker address."""
    try:
        done = client.run(gc.collect)
    except Exception as exc:
        log.warning("garbage collection on the workers failed: %s", reason_of(exc))
        return {}
    return {str(address): int(count) for address, count in done.items()}


def to_dask_dataframe(frame: pd.DataFrame, npartitions: int) -> Any:
    """A Dask DataFrame over `frame`, cut into `npartitions` row ranges."""
    import dask.dataframe as dd

    return dd.from_pandas(frame, npartitions=max(1, int(npartitions)))


def apply_dask_config(settings: DaskSettings) -> dict[str, Any]:
    """Set the DASK_* memory fractions and comm timeouts in `dask.config` for the whole
    process (as the original did), so clusters started later by the caller get them."""
    values = dask_config(settings)
    dask.config.set(values)
    return values
