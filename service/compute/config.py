"""Where the analyses run, as Dask settings: every DASK_* variable applied for real.

The memory fractions and comm timeouts go into `dask.config` before any worker starts
(`dask_config`), because a Nanny copies the parent's config into its worker process;
the shells restore them when they close. `LOST_WORK_ERRORS` is what a lost worker or
scheduler looks like from the client, for both shells.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.scheduler import DEFAULT_EXTENSIONS as SCHEDULER_EXTENSIONS
from distributed.scheduler import KilledWorker

from service.compute.preload import NoSpans
from service.host import usable_cores
from service.logs import adopt_library_loggers
from service.settings import DaskSettings

__all__ = [
    "LOST_WORK_ERRORS",
    "adapt_range",
    "cluster_config",
    "dask_config",
    "default_n_workers",
    "local_cluster_kwargs",
    "reason_of",
    "want_processes",
]

log = logging.getLogger(__name__)
adopt_library_loggers()  # distributed was just imported, with handlers of its own

#: What a lost worker or scheduler looks like from the client. A task's own exception
#: (an engine bug) is deliberately absent: it must surface, not be recomputed elsewhere.
LOST_WORK_ERRORS: tuple[type[BaseException], ...] = (
    KilledWorker,
    CommClosedError,
    FutureCancelledError,
    OSError,
    TimeoutError,
)


#: Samples of host and process load each Dask server keeps (one every 500 ms). Dask's
#: default, 7,200, is an hour: the deques fill for the first hour of a service's life,
#: which a soak reads as growth. Five minutes is all the dashboard's plots need here;
#: the service's own metrics go to Prometheus.
SYSTEM_MONITOR_SAMPLES = 600


def default_n_workers() -> int:
    """One worker process per usable core, at most 4: more rarely pays for its memory."""
    return max(1, min(usable_cores(), 4))


def dask_config(settings: DaskSettings) -> dict[str, Any]:
    """The DASK_* settings as dask.config keys (workers read them at start)."""
    # The settings refuse DASK_TCP_TIMEOUT below distributed's minimum (ge=11), so no clamp.
    tcp = settings.dask_tcp_timeout
    return {
        "distributed.worker.memory.target": settings.dask_memory_target_fraction,
        "distributed.worker.memory.spill": settings.dask_memory_spill_fraction,
        "distributed.worker.memory.pause": settings.dask_memory_pause_fraction,
        "distributed.worker.memory.terminate": settings.dask_memory_terminate_fraction,
        "distributed.comm.timeouts.connect": f"{settings.dask_connect_timeout}s",
        "distributed.comm.timeouts.tcp": f"{tcp}s",
    }


def cluster_config(settings: DaskSettings) -> dict[str, Any]:
    """`dask_config` plus what the clusters the service itself starts need; scoped to
    them, never set for a whole process (the original API's callers keep their own)."""
    return {
        **dask_config(settings),
        "distributed.admin.system-monitor.log-length": SYSTEM_MONITOR_SAMPLES,
        # The statistical profiler samples the worker's threads every 10 ms and keeps
        # a tree a second, for the dashboard's profile page. A threaded worker lives in
        # the service's process, where it sampled the pipeline's own loop and was the
        # largest growth a soak's tracemalloc found: on with the dashboard only.
        "distributed.worker.profile.enabled": settings.dask_dashboard_address is not None,
    }


def local_cluster_kwargs(settings: DaskSettings, *, processes: bool = True) -> dict[str, Any]:
    """LocalCluster arguments from the settings.

    No dashboard unless SFA_DASK_DASHBOARD_ADDRESS asks for one: distributed's default
    opens an unauthenticated HTTP port on every interface. The scheduler's HTTP server
    (health and Prometheus routes) and the workers' cannot be turned off, so they listen
    on free loopback ports, reachable from this host only (left to distributed, a
    threaded worker's listened on 0.0.0.0).

    The scheduler's "spans" extension is the stand-in that keeps nothing
    (`service.compute.preload.NoSpans`, what a remote scheduler gets from the preload). A
    span keeps every TaskGroup it saw for the life of the scheduler (dask/distributed
    #7977, open), and a stream that goes idle between batches opens a new default span
    each time; a worker then keeps its cumulative metrics per span id. Every batch left
    two TaskGroups and six metric entries behind in the service's process for good. With
    no span on the tasks, the workers' metrics stay keyed by task prefix. Spans serve the
    dashboard's per-computation views, which a stream of identical batches does not need.

    DASK_MEMORY_LIMIT bounds worker processes only. A threaded worker measures its whole
    process, which is the service's (or the original API caller's) with all its state:
    past the pause fraction it stops running tasks for good, and every batch waits on it
    (measured: a 100MB limit in a 200 MB process, no result in 20 s). Nothing it could
    spill would help, so it gets no limit; the container's limit bounds that process.
    """
    n_workers = settings.dask_n_workers or default_n_workers()
    threads = settings.dask_threads_per_worker
    adapt = adapt_range(settings)
    if adapt is not None:  # start at the floor; every added worker is DASK_THREADS_PER_WORKER
        n_workers = adapt[0]
    elif not processes:  # one in-process worker with as many threads as the whole cluster
        n_workers, threads = 1, n_workers * threads
    return {
        "n_workers": n_workers,
        "threads_per_worker": threads,
        "memory_limit": settings.dask_memory_limit if processes else 0,
        "processes": processes,
        "dashboard_address": settings.dask_dashboard_address or "127.0.0.1:0",
        "worker_dashboard_address": "127.0.0.1:0",
        "scheduler_kwargs": {
            "dashboard": settings.dask_dashboard_address is not None,
            "extensions": {**SCHEDULER_EXTENSIONS, "spans": NoSpans},
        },
    }


def adapt_range(settings: DaskSettings) -> tuple[int, int] | None:
    """(minimum, maximum) workers of an adaptive LocalCluster, or None for a fixed size.

    Adaptive only when SFA_DASK_ADAPT_MAX is set; the floor defaults to one worker so an
    idle stream does not pay a worker start-up on its next batch (0 must be asked for).
    """
    if settings.dask_adapt_max is None:
        return None
    floor = 1 if settings.dask_adapt_min is None else settings.dask_adapt_min
    return floor, settings.dask_adapt_max


def want_processes(settings: DaskSettings) -> bool:
    if settings.dask_processes is not None:
        return settings.dask_processes
    return default_n_workers() > 2


def reason_of(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
