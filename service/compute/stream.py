"""The streaming pipeline's compute: a remote Dask scheduler, a LocalCluster, or this
process, inside the pipeline's asyncio loop (`open_async`, `ComputeHandle`).

A chunk is scattered from the copy we still hold, so when a worker dies the chunk can be
scattered again; after a second loss it is computed here with a WARNING. Nothing falls
back silently: every fallback logs its reason and is visible as `fallback_active` /
`fallback_reason` (metrics: sfa_dask_fallback_active). After a fallback the handle
looks for the cluster again every SFA_DASK_RECONNECT_SECONDS.

The probe runs on the watcher task's clock, not on traffic: a cluster that comes back while
no batch arrives (the end of a feed, a quiet market) ends the fallback all the same, and
`on_fallback_change` tells the service at once, so its gauge and /readyz never wait for a
batch to be right.

The workers the handle reports (`worker_stats`, `n_workers`, `is_reachable`) are a view a
task on the loop refreshes every `WORKERS_REFRESH_S` with `scheduler.identity(n_workers=-1)`.
Asking the client instead does not work: an asynchronous client's `scheduler_info()`
returns a cache that distributed fills without per-worker entries, so on the loop (the
empty-cluster watch, the reachability check after a loss) it read 0 workers on a live
cluster; from a scrape thread it blocks on the loop. A scrape must not wait on a Dask
client anyway (SPEC 10), so it reads the view, at most a refresh old.

With SFA_DASK_ADAPT_MAX the LocalCluster adapts (distributed's `Adaptive`): it starts at
the floor, grows while tasks queue and retires idle workers. A retired worker's tasks are
moved by the scheduler, so the results do not depend on the cluster's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

import dask.config
from distributed import Client, Future, LocalCluster
from distributed.comm.core import CommClosedError

from service.compute.config import (
    LOST_WORK_ERRORS,
    adapt_range,
    cluster_config,
    local_cluster_kwargs,
    reason_of,
    want_processes,
)
from service.compute.policy import ComputePolicy, EmptyClusterWatch, Step
from service.compute.tasks import ChunkResult, analyze_chunk
from service.engine import EngineParams, SymbolWindows
from service.errors import FatalError, SfaError
from service.settings import DaskSettings

__all__ = ["WORKERS_REFRESH_S", "ComputeHandle", "Mode", "open_async"]

log = logging.getLogger(__name__)

Mode = Literal["remote", "local_cluster", "local"]

#: How old the worker view may get: a scrape every second sees a change within two.
WORKERS_REFRESH_S = 1.0


async def _fetch_workers(client: Client, timeout_s: float) -> dict[str, int]:
    """Worker address -> managed memory bytes, fresh from the scheduler (every worker:
    `n_workers=-1`; the scheduler's own default may cap it)."""
    identity = cast(Awaitable[dict[str, Any]], client.scheduler.identity(n_workers=-1))
    info = await asyncio.wait_for(identity, timeout_s)
    out: dict[str, int] = {}
    for address, worker in (info.get("workers") or {}).items():
        metrics = worker.get("metrics") or {}
        out[str(address)] = int(metrics.get("managed_bytes", metrics.get("memory", 0)) or 0)
    return out


class ComputeHandle:
    """The pipeline's compute: `submit_chunk` starts work and returns at once, so several
    batches can be in flight; `run_chunks` is submit-all-then-await for one batch."""

    def __init__(
        self,
        settings: DaskSettings,
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
        self._workers: dict[str, int] = {}
        self._watcher: asyncio.Task[None] | None = None
        #: Called on the loop whenever `fallback_active` flips (the service's gauge).
        self.on_fallback_change: Callable[[], None] | None = None
        self.adaptive = cluster is not None and adapt_range(settings) is not None

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
                await self.refresh_workers()  # `is_reachable` below decides on this view
                step = policy.after_loss(losses, self.client is not None, self.is_reachable, reason)
                if policy.fallback_active and not was_active:
                    if self.settings.dask_fallback != "fail":
                        log.warning(
                            "Dask unavailable, computing in-process for now: %s",
                            policy.fallback_reason,
                        )
                    self._fallback_changed()
        if policy.fallback_active and self.settings.dask_fallback == "fail":
            # SFA_DASK_FALLBACK=fail holds after start too: the batch fails, so nothing of
            # it commits, and the instance stops for its supervisor to decide.
            raise FatalError(
                f"Dask lost during the run: {policy.fallback_reason} (SFA_DASK_FALLBACK=fail)"
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
        try:
            # One-element list: the chunk is scattered as one object, not item by item.
            [data] = await asyncio.wait_for(client.scatter([chunk], hash=False), timeout)
            future = client.submit(
                analyze_chunk, data, params, retries=self.settings.dask_task_retries, pure=False
            )
        except KeyError as exc:
            # The scheduler placed the chunk on a worker that an adaptive cluster retired
            # meanwhile (its `update_data` looks the worker up): a lost worker, retried.
            raise CommClosedError(f"scatter target left the cluster: {exc}") from exc
        except RuntimeError as exc:
            # distributed closes a client that lost its scheduler for a connect timeout;
            # its calls then raise RuntimeError ("ConnectionPool is closed"): the cluster
            # is lost, like any other comm failure, not an engine bug.
            if client.status in ("closing", "closed") or "closed" in str(exc):
                raise CommClosedError(f"Dask client closed: {exc}") from exc
            raise
        try:
            return await self._watch(future)
        finally:
            future.release()
            data.release()

    async def _watch(self, future: Future[ChunkResult]) -> ChunkResult:
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
                self._fallback_changed()

    def _fallback_changed(self) -> None:
        listener = self.on_fallback_change
        if listener is None:
            return
        try:
            listener()
        except Exception:  # a broken gauge must not cost a chunk
            log.warning("fallback listener failed", exc_info=True)

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
        workers = await self.refresh_workers()
        if workers == 0:
            log.info("Dask scheduler reachable but without workers (or probe failed)")
        return workers

    # --- the worker view, for metrics, health and the policy ---

    async def refresh_workers(self) -> int:
        """Read the workers from the scheduler into the view; 0 (an empty view) when it
        cannot be reached. Runs on the handle's loop."""
        client = self.client
        if client is None or client.status != "running":
            self._workers = {}
            return 0
        try:
            self._workers = await _fetch_workers(client, self.settings.dask_connect_timeout)
        except Exception as exc:  # gone or slow: no workers we could count on
            log.debug("Dask worker view not refreshed: %s", reason_of(exc))
            self._workers = {}
        return len(self._workers)

    async def _watch_workers(self) -> None:
        while True:
            if self.policy.probe_due():
                await self._probe()  # refreshes the view too
            else:
                await self.refresh_workers()
            await asyncio.sleep(WORKERS_REFRESH_S)

    async def start_watching(self) -> None:
        """Fill the view once, then keep it fresh (and, in a fallback, probe) on this loop
        until `close`. Without a client or a scheduler address there is nothing to watch."""
        await self.refresh_workers()
        watchable = self.client is not None or bool(self.settings.dask_scheduler_address)
        if self._watcher is None and watchable:
            self._watcher = asyncio.ensure_future(self._watch_workers())

    def worker_stats(self) -> dict[str, int]:
        """Worker address -> managed memory bytes (empty without a cluster); from any
        thread, without waiting on the client."""
        return dict(self._workers)

    def n_workers(self) -> int:
        return len(self._workers)

    def is_reachable(self) -> bool:
        """True when work can run: a connected client with workers (an adaptive cluster
        at zero starts some for queued work), or local mode."""
        if self.client is None:
            return True
        return self.client.status == "running" and (self.n_workers() > 0 or self.adaptive)

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._workers = {}
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


async def _watching(handle: ComputeHandle) -> ComputeHandle:
    await handle.start_watching()
    return handle


async def open_async(settings: DaskSettings) -> ComputeHandle:
    """Connect as configured; on failure fall back to local work or raise (SFA_DASK_FALLBACK)."""
    scope = contextlib.ExitStack()
    scope.enter_context(dask.config.set(cluster_config(settings)))
    address = settings.dask_scheduler_address
    cluster: LocalCluster | None = None
    try:
        if address:
            await _refused(address, settings.dask_connect_timeout)
            client = await Client(address, asynchronous=True, timeout=settings.dask_connect_timeout)
            for variable, value in (
                ("SFA_DASK_DASHBOARD_ADDRESS", settings.dask_dashboard_address),
                ("SFA_DASK_ADAPT_MAX", settings.dask_adapt_max),
            ):
                if value is not None:
                    log.info("%s applies to a LocalCluster only; ignored", variable)
            return await _watching(ComputeHandle(settings, "remote", client, config_scope=scope))
        if settings.dask_enable_distributed:
            cluster = await LocalCluster(
                asynchronous=True,
                **local_cluster_kwargs(settings, processes=want_processes(settings)),
            )
            adapt = adapt_range(settings)
            if adapt is not None:
                cluster.adapt(minimum=adapt[0], maximum=adapt[1])
                log.info(
                    "Dask LocalCluster adapts", extra={"minimum": adapt[0], "maximum": adapt[1]}
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
            handle = ComputeHandle(settings, "local_cluster", client, cluster, config_scope=scope)
            return await _watching(handle)
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
        handle = ComputeHandle(settings, "local", fallback_reason=reason, config_scope=scope)
        return await _watching(handle)
