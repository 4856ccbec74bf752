"""The streaming pipeline's compute: a remote Dask scheduler, a LocalCluster, or this
process, inside the pipeline's asyncio loop (`open_async`, `ComputeHandle`).

A chunk is scattered from the copy we still hold, so when a worker dies the chunk can be
scattered again; after a second loss it is computed here with a WARNING. Nothing falls
back silently: every fallback logs its reason and is visible as `fallback_active` /
`fallback_reason` (metrics: sfa_dask_fallback_active). After a fallback the handle
looks for the cluster again every SFA_DASK_RECONNECT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Literal, cast

import dask.config
from distributed import Client, Future, LocalCluster

from service.compute.config import (
    LOST_WORK_ERRORS,
    dask_config,
    local_cluster_kwargs,
    reason_of,
    want_processes,
)
from service.compute.policy import ComputePolicy, EmptyClusterWatch, Step
from service.compute.tasks import ChunkResult, analyze_chunk
from service.engine import EngineParams, SymbolWindows
from service.errors import SfaError
from service.settings import Settings

__all__ = ["ComputeHandle", "Mode", "open_async"]

log = logging.getLogger(__name__)

Mode = Literal["remote", "local_cluster", "local"]


def _worker_memory(client: Client | None) -> dict[str, int]:
    if client is None or client.status != "running":
        return {}
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    out: dict[str, int] = {}
    for address, info in workers.items():
        metrics = info.get("metrics", {})
        out[address] = int(metrics.get("managed_bytes", metrics.get("memory", 0)) or 0)
    return out


class ComputeHandle:
    """The pipeline's compute: `submit_chunk` starts work and returns at once, so several
    batches can be in flight; `run_chunks` is submit-all-then-await for one batch."""

    def __init__(
        self,
        settings: Settings,
        mode: Mode,
        client: Client | None = None,
        cluster: LocalCluster | None = None,
        fallback_reason: str | None = None,
        config_scope: contextlib.ExitStack | None = None,
    ) -> None:
        self.settings = settings
        self.mode: Mode = mode
        self.client = client
        self.policy = ComputePolicy(
            attempts=2,  # the first try, then one re-scatter from our copy
            reconnect_seconds=settings.dask_reconnect_seconds,
            fallback_reason=fallback_reason,
        )
        self._cluster = cluster
        self._config_scope = config_scope

    @property
    def fallback_active(self) -> bool:
        return self.policy.fallback_active

    @property
    def fallback_reason(self) -> str | None:
        return self.policy.fallback_reason

    # --- work ---

    def submit_chunk(
        self, chunk: list[SymbolWindows], params: EngineParams
    ) -> asyncio.Task[ChunkResult]:
        """Start one chunk (scatter + submit happen in the task); await the task later."""
        return asyncio.ensure_future(self._run_one(chunk, params))

    async def run_chunks(
        self, chunks: list[list[SymbolWindows]], params: EngineParams
    ) -> list[ChunkResult]:
        return list(await asyncio.gather(*(self.submit_chunk(c, params) for c in chunks)))

    async def _run_one(self, chunk: list[SymbolWindows], params: EngineParams) -> ChunkResult:
        policy = self.policy
        if policy.probe_due():
            await self._probe()
        losses = 0
        step = policy.first_step(self.client is not None)
        while step is Step.CLUSTER:
            try:
                return await self._on_cluster(chunk, params)
            except LOST_WORK_ERRORS as exc:
                losses += 1
                reason = reason_of(exc)
                log.warning(
                    "chunk of %d symbols lost on the cluster (attempt %d): %s",
                    len(chunk),
                    losses,
                    reason,
                )
                was_active = policy.fallback_active
                step = policy.after_loss(losses, self.client is not None, self.is_reachable, reason)
                if policy.fallback_active and not was_active:
                    log.warning(
                        "Dask unavailable, computing in-process for now: %s",
                        policy.fallback_reason,
                    )
        if losses:
            log.warning(
                "computing a chunk of %d symbols in-process after losing it %d time(s)",
                len(chunk),
                losses,
            )
        return await asyncio.to_thread(analyze_chunk, chunk, params)

    async def _on_cluster(self, chunk: list[SymbolWindows], params: EngineParams) -> ChunkResult:
        client = self.client
        assert client is not None
        timeout = self.settings.dask_connect_timeout
        # A one-element list scatters the chunk as one object (a list would scatter each item).
        [data] = await asyncio.wait_for(client.scatter([chunk], hash=False), timeout)
        future = client.submit(
            analyze_chunk, data, params, retries=self.settings.dask_task_retries, pure=False
        )
        try:
            return await self._watch(future)
        finally:
            future.release()
            data.release()

    async def _watch(self, future: Future) -> ChunkResult:
        """Await a task, but give up when the cluster has had no workers for a connect timeout
        (a task waits forever for workers that never come back)."""
        waiter: asyncio.Future[Any] = asyncio.ensure_future(future)
        watch = EmptyClusterWatch(self.settings.dask_connect_timeout)
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=1.0)
            if done:
                result: ChunkResult = waiter.result()
                return result
            if watch.give_up(self.n_workers()):
                waiter.cancel()
                raise TimeoutError("no Dask workers for longer than DASK_CONNECT_TIMEOUT")

    async def _probe(self) -> None:
        """A fallback is a state, not a verdict: a restarted worker, or a scheduler back
        at its address, takes the work again (the policy says when to look)."""
        self.policy.probe_started()
        reason, workers = self.policy.fallback_reason, 0
        try:
            workers = await self._count_workers()
        finally:
            if self.policy.probe_finished(workers):
                log.warning(
                    "Dask reachable again (%d workers): back on the cluster after: %s",
                    workers,
                    reason,
                )

    async def _count_workers(self) -> int:
        """Workers the scheduler has now (0 when it cannot be reached), reconnecting to
        DASK_SCHEDULER_ADDRESS when the old client is gone."""
        client = self.client
        if client is None or client.status != "running":
            address = self.settings.dask_scheduler_address
            if not address:
                return 0  # a LocalCluster's nannies restart its workers; nothing to dial
            try:
                client = await Client(
                    address, asynchronous=True, timeout=self.settings.dask_connect_timeout
                )
            except Exception as exc:  # still away: stay local, try again later
                log.info("Dask scheduler %s still unreachable: %s", address, reason_of(exc))
                return 0
            old, self.client, self.mode = self.client, client, "remote"
            if old is not None:
                with contextlib.suppress(Exception):
                    await cast(Awaitable[Any], old.close())
        try:  # fresh from the scheduler: the client's cached view lags by seconds
            workers = await cast(Awaitable[dict[str, int]], client.nthreads())
        except Exception as exc:
            log.info("Dask probe failed: %s", reason_of(exc))
            return 0
        if not workers:
            log.info("Dask scheduler reachable but without workers yet")
        return len(workers)

    # --- for metrics and health ---

    def worker_stats(self) -> dict[str, int]:
        """Worker address -> managed memory bytes (empty without a cluster)."""
        return _worker_memory(self.client)

    def n_workers(self) -> int:
        return len(self.worker_stats())

    def is_reachable(self) -> bool:
        """True when work can run: a connected client with workers, or local mode."""
        if self.client is None:
            return True
        return self.client.status == "running" and self.n_workers() > 0

    async def close(self) -> None:
        try:
            for closing in (self.client, self._cluster):
                if closing is not None:
                    await cast(Awaitable[Any], closing.close())
        finally:
            if self._config_scope is not None:
                self._config_scope.close()
            self.client = self._cluster = self._config_scope = None


async def _refused(address: str, timeout_s: float) -> None:
    """Raise at once when nothing listens at a tcp/tls scheduler address: distributed keeps
    retrying a refused port for the whole DASK_CONNECT_TIMEOUT (60 s by default)."""
    scheme, _, rest = address.rpartition("://")
    if scheme not in ("", "tcp", "tls"):
        return
    host, _, port = rest.rstrip("/").rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), min(timeout_s, 5.0)
        )
    except ConnectionRefusedError as exc:
        raise OSError(f"connection refused by {host}:{port}") from exc
    except (OSError, TimeoutError):
        return  # unreachable for another reason: let distributed say what and when
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def open_async(settings: Settings) -> ComputeHandle:
    """Connect as configured; on failure fall back to local work or raise (SFA_DASK_FALLBACK)."""
    scope = contextlib.ExitStack()
    scope.enter_context(dask.config.set(dask_config(settings)))
    address = settings.dask_scheduler_address
    cluster: LocalCluster | None = None
    try:
        if address:
            await _refused(address, settings.dask_connect_timeout)
            client = await Client(address, asynchronous=True, timeout=settings.dask_connect_timeout)
            if settings.dask_dashboard_address:
                log.info("SFA_DASK_DASHBOARD_ADDRESS applies to a LocalCluster only; ignored")
            return ComputeHandle(settings, "remote", client, config_scope=scope)
        if settings.dask_enable_distributed:
            cluster = await LocalCluster(
                asynchronous=True,
                **local_cluster_kwargs(settings, processes=want_processes(settings)),
            )
            client = await Client(cluster, asynchronous=True)
            if settings.dask_dashboard_address:
                log.info(
                    "Dask dashboard listening",
                    extra={
                        "dashboard_address": settings.dask_dashboard_address,
                        "dashboard_link": cluster.dashboard_link,
                    },
                )
            return ComputeHandle(settings, "local_cluster", client, cluster, config_scope=scope)
        return ComputeHandle(settings, "local", config_scope=scope)
    except Exception as exc:  # distributed raises OSError, TimeoutError, ValueError, ...
        if cluster is not None:
            with contextlib.suppress(Exception):
                await cast(Awaitable[Any], cluster.close())
        where = f"scheduler {address}" if address else "a LocalCluster"
        reason = f"cannot reach {where}: {reason_of(exc)}"
        if settings.dask_fallback == "fail":
            scope.close()
            raise SfaError(f"{reason} (SFA_DASK_FALLBACK=fail)") from exc
        log.warning("Dask unavailable, computing in-process: %s", reason)
        return ComputeHandle(settings, "local", fallback_reason=reason, config_scope=scope)
