"""The compat API's compute for one `with` block (`open_sync`, `SyncCompute`).

remote (if an address is set) -> local_cluster (if enabled) -> threads -> sequential:
each step that cannot be had logs a WARNING and adds its reason to `fallback_reason`,
because the original system silently reran everything sequentially when its Dask path
broke.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import dask.config
from distributed import Client, LocalCluster

from service.compute.config import (
    LOST_WORK_ERRORS,
    adapt_range,
    cluster_config,
    local_cluster_kwargs,
    reason_of,
)
from service.compute.policy import ComputePolicy, Step
from service.compute.tasks import ChunkResult, analyze_chunk
from service.engine import EngineParams, SymbolWindows
from service.settings import DaskSettings

__all__ = ["SyncCompute", "SyncMode", "open_sync"]

log = logging.getLogger(__name__)

SyncMode = Literal["remote", "local_cluster", "threads", "sequential"]


def _still_there() -> bool:
    return True


class SyncCompute:
    """The compat API's compute for one `with` block; `client` is None when sequential."""

    def __init__(
        self, settings: DaskSettings, mode: SyncMode, client: Client | None, reasons: list[str]
    ) -> None:
        self.settings = settings
        self.mode: SyncMode = mode
        self.client = client
        self.fallback_reason = "; ".join(reasons) or None
        self.policy = ComputePolicy(attempts=2, reconnect_seconds=0.0)

    def run_chunks(
        self, chunks: list[list[SymbolWindows]], params: EngineParams
    ) -> list[ChunkResult]:
        """Scatter the chunks, map analyze_chunk over them, gather; lost chunks go again
        once from our copy, then run here with a WARNING."""
        if self.client is None or not chunks:
            return [analyze_chunk(chunk, params) for chunk in chunks]
        results: list[ChunkResult | None] = [None] * len(chunks)
        todo = list(range(len(chunks)))
        losses = 0
        step = self.policy.first_step(has_client=True)
        while todo and step is Step.CLUSTER:
            todo = self._map(chunks, todo, params, results, losses + 1)
            if todo:
                losses += 1
                # One `with` block: a lost chunk never turns the whole block local.
                step = self.policy.after_loss(losses, True, _still_there, "chunks lost")
        for i in todo:
            log.warning(
                "computing chunk %d (%d symbols) in-process after losing it %d time(s)",
                i,
                len(chunks[i]),
                losses,
            )
            results[i] = analyze_chunk(chunks[i], params)
        return [r for r in results if r is not None]

    def _map(
        self,
        chunks: list[list[SymbolWindows]],
        todo: list[int],
        params: EngineParams,
        results: list[ChunkResult | None],
        attempt: int,
    ) -> list[int]:
        client = self.client
        assert client is not None
        try:
            data = client.scatter(
                [chunks[i] for i in todo], hash=False, timeout=self.settings.dask_connect_timeout
            )
        except LOST_WORK_ERRORS as exc:
            log.warning("scatter failed (attempt %d): %s", attempt, reason_of(exc))
            return todo
        futures = client.map(
            analyze_chunk, data, params=params, retries=self.settings.dask_task_retries, pure=False
        )
        failed: list[int] = []
        for i, future in zip(todo, futures, strict=True):
            try:
                results[i] = future.result()
            except LOST_WORK_ERRORS as exc:
                log.warning(
                    "chunk %d lost on the cluster (attempt %d): %s", i, attempt, reason_of(exc)
                )
                failed.append(i)
        for future in (*futures, *data):
            future.release()  # local bookkeeping only: works even when the scheduler is gone
        return failed


def _start(settings: DaskSettings, mode: SyncMode, stack: contextlib.ExitStack) -> Client | None:
    if mode == "remote":
        return stack.enter_context(
            Client(settings.dask_scheduler_address, timeout=settings.dask_connect_timeout)
        )
    if mode == "sequential":
        return None
    cluster = LocalCluster(**local_cluster_kwargs(settings, processes=mode == "local_cluster"))
    stack.enter_context(cluster)
    adapt = adapt_range(settings)
    if adapt is not None:  # the same SFA_DASK_ADAPT_* as the service's cluster
        cluster.adapt(minimum=adapt[0], maximum=adapt[1])
    return stack.enter_context(Client(cluster))


@contextlib.contextmanager
def open_sync(settings: DaskSettings, start: SyncMode | None = None) -> Iterator[SyncCompute]:
    """remote (if an address is set) -> local_cluster (if enabled) -> threads -> sequential.

    Each step that cannot be had logs a WARNING and adds its reason to `fallback_reason`.
    `start` skips the earlier steps (e.g. 'sequential' for tests and tiny inputs).
    """
    chain: list[SyncMode] = []
    if settings.dask_scheduler_address:
        chain.append("remote")
    if settings.dask_enable_distributed:
        chain.append("local_cluster")
    chain += ["threads", "sequential"]
    if start is not None:
        chain = chain[chain.index(start) :] if start in chain else [start, "sequential"]
    reasons: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(cluster_config(settings)))
        for mode in chain:
            attempt = contextlib.ExitStack()
            try:
                client = _start(settings, mode, attempt)
            except Exception as exc:  # distributed raises OSError, TimeoutError, ValueError, ...
                attempt.close()
                reason = f"{mode} unavailable: {reason_of(exc)}"
                log.warning("Dask %s; falling back", reason)
                reasons.append(reason)
                continue
            stack.enter_context(attempt)
            yield SyncCompute(settings, mode, client, reasons)
            return
    raise AssertionError("unreachable: sequential mode always starts")  # pragma: no cover
