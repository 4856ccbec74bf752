"""`dask scheduler --preload service.compute.preload`: a long-lived scheduler for a stream.

distributed's "spans" extension keeps every TaskGroup it has seen for the life of the
scheduler (dask/distributed#7977, open), and each worker keeps its cumulative metrics
per span id. A batch job never notices. A scheduler that serves `sfa run` for weeks
does: every batch that finds the cluster idle opens a new span, and each batch leaves
its groups behind, so the scheduler and its workers grow with the number of batches.

The scheduler's extension is replaced by one that records nothing (`NoSpans`): the
LocalCluster `sfa run` starts gets it as an argument
(`service.compute.config.local_cluster_kwargs`), a scheduler started by `dask scheduler`
(compose, the Kubernetes `DaskCluster`) from this module as a preload. Tasks then carry
no span, so the workers' metrics stay keyed by task prefix only; their own spans
extension may stay (the stand-in ignores what their heartbeats send). Spans feed the
dashboard's per-computation views, which a stream of identical batches does not need.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from typing import Any

from distributed import Scheduler

__all__ = ["NoSpans", "dask_setup"]

log = logging.getLogger(__name__)


class NoSpans:
    """Stands where the scheduler looks for its spans extension; keeps nothing."""

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self.scheduler = scheduler
        self.spans: dict[str, Any] = {}  # what a progress bar grouped by span reads

    def observe_tasks(self, tss: Iterable[Any], code: Any, span_metadata: Any) -> dict[str, Any]:
        return {}

    def heartbeat(self, ws: Any, data: dict[tuple[Hashable, ...], float]) -> None:
        return None


def dask_setup(server: Any) -> None:
    """distributed calls this when a scheduler (or anything else) starts with the preload."""
    if isinstance(server, Scheduler):
        server.extensions["spans"] = NoSpans(server)
        log.info("spans off: this scheduler keeps no TaskGroup after its tasks are gone")
