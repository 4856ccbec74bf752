"""Where the analyses run: a remote Dask scheduler, a LocalCluster, or this process.

Two doors share one policy. `open_async` serves the streaming pipeline (inside its
asyncio loop); `open_sync` serves the compat API (a plain `with` block). Both apply
every DASK_* setting for real (`dask_config`): the memory fractions and comm timeouts go
into `dask.config` before any worker starts, because a Nanny copies the parent's config
into its worker process, and they are restored when the handle closes.

A chunk is scattered from the copy we still hold, so when a worker dies the chunk can be
scattered again; after a second loss it is computed here with a WARNING. Nothing falls
back silently: every fallback logs its reason and is visible as `fallback_active` /
`fallback_reason` (metrics: sfa_dask_fallback_active) or as the compat result's mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Iterator
from typing import Any, Literal, cast

import dask.config
from distributed import Client, Future, LocalCluster
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

from service.engine import EngineParams, SymbolWindows
from service.errors import SfaError
from service.settings import Settings
from service.tasks import ChunkResult, analyze_chunk

__all__ = [
    "LOST_WORK_ERRORS",
    "MIN_TCP_TIMEOUT",
    "ComputeHandle",
    "SyncCompute",
    "SyncMode",
    "dask_config",
    "default_n_workers",
    "local_cluster_kwargs",
    "open_async",
    "open_sync",
]

log = logging.getLogger(__name__)

Mode = Literal["remote", "local_cluster", "local"]
SyncMode = Literal["remote", "local_cluster", "threads", "sequential"]

#: What a lost worker or scheduler looks like from the client. A task's own exception
#: (an engine bug) is deliberately absent: it must surface, not be recomputed elsewhere.
LOST_WORK_ERRORS: tuple[type[BaseException], ...] = (
    KilledWorker,
    CommClosedError,
    FutureCancelledError,
    OSError,
    TimeoutError,
)


def default_n_workers() -> int:
    """One worker process per usable core, at most 4: more rarely pays for its memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


#: distributed's TCP keep-alive needs 10 probes plus an idle second: a lower
#: `distributed.comm.timeouts.tcp` fails an assertion on every new connection.
MIN_TCP_TIMEOUT = 11.0


def dask_config(settings: Settings) -> dict[str, Any]:
    """The DASK_* settings as dask.config keys (workers read them at start)."""
    tcp = settings.dask_tcp_timeout
    if tcp < MIN_TCP_TIMEOUT:
        log.warning("DASK_TCP_TIMEOUT=%ss is below Dask's minimum; using %ss", tcp, MIN_TCP_TIMEOUT)
        tcp = MIN_TCP_TIMEOUT
    return {
        "distributed.worker.memory.target": settings.dask_memory_target_fraction,
        "distributed.worker.memory.spill": settings.dask_memory_spill_fraction,
        "distributed.worker.memory.pause": settings.dask_memory_pause_fraction,
        "distributed.worker.memory.terminate": settings.dask_memory_terminate_fraction,
        "distributed.comm.timeouts.connect": f"{settings.dask_connect_timeout}s",
        "distributed.comm.timeouts.tcp": f"{tcp}s",
    }


def local_cluster_kwargs(settings: Settings, *, processes: bool = True) -> dict[str, Any]:
    """LocalCluster arguments from the settings; no dashboard (no port to collide on)."""
    n_workers = settings.dask_n_workers or default_n_workers()
    threads = settings.dask_threads_per_worker
    if not processes:  # one in-process worker with as many threads as the whole cluster
        n_workers, threads = 1, n_workers * threads
    return {
        "n_workers": n_workers,
        "threads_per_worker": threads,
        "memory_limit": settings.dask_memory_limit,
        "processes": processes,
        # None still starts the scheduler's HTTP server on 8787; ":0" takes a free port.
        "dashboard_address": ":0",
    }


def _want_processes(settings: Settings) -> bool:
    if settings.dask_processes is not None:
        return settings.dask_processes
    return default_n_workers() > 2


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
        self.fallback_reason = fallback_reason
        self.fallback_active = fallback_reason is not None
        self._cluster = cluster
        self._config_scope = config_scope
        self._retry_at = time.monotonic() + settings.dask_reconnect_seconds
        self._probing = asyncio.Lock()

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
        if self.fallback_active and self._due_for_probe():
            await self._try_recover()
        last: BaseException | None = None
        for attempt in (1, 2):  # the first try, then one re-scatter from our copy
            if self.client is None or self.fallback_active:
                break
            try:
                return await self._on_cluster(chunk, params)
            except LOST_WORK_ERRORS as exc:
                last = exc
                log.warning(
                    "chunk of %d symbols lost on the cluster (attempt %d): %s",
                    len(chunk),
                    attempt,
                    _reason(exc),
                )
        if last is not None:
            if not self.is_reachable():
                self._activate_fallback(f"cluster lost: {_reason(last)}")
            log.warning(
                "computing a chunk of %d symbols in-process after losing it twice", len(chunk)
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
        waiter: asyncio.Future[Any] = asyncio.ensure_future(future)  # type: ignore[arg-type]
        empty_since: float | None = None
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=1.0)
            if done:
                result: ChunkResult = waiter.result()
                return result
            if self.n_workers() == 0:
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since > self.settings.dask_connect_timeout:
                    waiter.cancel()
                    raise TimeoutError("no Dask workers for longer than DASK_CONNECT_TIMEOUT")
            else:
                empty_since = None

    def _activate_fallback(self, reason: str) -> None:
        if not self.fallback_active:
            log.warning("Dask unavailable, computing in-process for now: %s", reason)
            self._retry_at = time.monotonic() + self.settings.dask_reconnect_seconds
        self.fallback_active = True
        self.fallback_reason = reason

    def _due_for_probe(self) -> bool:
        interval = self.settings.dask_reconnect_seconds
        return interval > 0 and time.monotonic() >= self._retry_at and not self._probing.locked()

    async def _try_recover(self) -> None:
        """A fallback is a state, not a verdict: a restarted worker, or a scheduler back
        at its address, takes the work again. At most one probe per interval."""
        async with self._probing:
            self._retry_at = time.monotonic() + self.settings.dask_reconnect_seconds
            client = self.client
            if client is None or client.status != "running":
                address = self.settings.dask_scheduler_address
                if not address:
                    return  # a LocalCluster's nannies restart its workers; nothing to dial
                try:
                    client = await Client(
                        address, asynchronous=True, timeout=self.settings.dask_connect_timeout
                    )
                except Exception as exc:  # still away: stay local, try again later
                    log.info("Dask scheduler %s still unreachable: %s", address, _reason(exc))
                    return
                old, self.client, self.mode = self.client, client, "remote"
                if old is not None:
                    with contextlib.suppress(Exception):
                        await cast(Awaitable[Any], old.close())
            try:  # fresh from the scheduler: the client's cached view lags by seconds
                workers = await cast(Awaitable[dict[str, int]], client.nthreads())
            except Exception as exc:
                log.info("Dask probe failed: %s", _reason(exc))
                return
            if not workers:
                log.info("Dask scheduler reachable but without workers yet")
                return
            log.warning(
                "Dask reachable again (%d workers): back on the cluster after: %s",
                len(workers),
                self.fallback_reason,
            )
            self.fallback_active = False
            self.fallback_reason = None

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


async def open_async(settings: Settings) -> ComputeHandle:
    """Connect as configured; on failure fall back to local work or raise (SFA_DASK_FALLBACK)."""
    scope = contextlib.ExitStack()
    scope.enter_context(dask.config.set(dask_config(settings)))
    address = settings.dask_scheduler_address
    cluster: LocalCluster | None = None
    try:
        if address:
            client = await Client(address, asynchronous=True, timeout=settings.dask_connect_timeout)
            return ComputeHandle(settings, "remote", client, config_scope=scope)
        if settings.dask_enable_distributed:
            cluster = await LocalCluster(
                asynchronous=True,
                **local_cluster_kwargs(settings, processes=_want_processes(settings)),
            )
            client = await Client(cluster, asynchronous=True)
            return ComputeHandle(settings, "local_cluster", client, cluster, config_scope=scope)
        return ComputeHandle(settings, "local", config_scope=scope)
    except Exception as exc:  # distributed raises OSError, TimeoutError, ValueError, ...
        if cluster is not None:
            with contextlib.suppress(Exception):
                await cast(Awaitable[Any], cluster.close())
        where = f"scheduler {address}" if address else "a LocalCluster"
        reason = f"cannot reach {where}: {_reason(exc)}"
        if settings.dask_fallback == "fail":
            scope.close()
            raise SfaError(f"{reason} (SFA_DASK_FALLBACK=fail)") from exc
        log.warning("Dask unavailable, computing in-process: %s", reason)
        return ComputeHandle(settings, "local", fallback_reason=reason, config_scope=scope)


class SyncCompute:
    """The compat API's compute for one `with` block; `client` is None when sequential."""

    def __init__(
        self, settings: Settings, mode: SyncMode, client: Client | None, reasons: list[str]
    ) -> None:
        self.settings = settings
        self.mode: SyncMode = mode
        self.client = client
        self.fallback_reason = "; ".join(reasons) or None

    def run_chunks(
        self, chunks: list[list[SymbolWindows]], params: EngineParams
    ) -> list[ChunkResult]:
        """Scatter the chunks, map analyze_chunk over them, gather; lost chunks go again
        once from our copy, then run here with a WARNING."""
        if self.client is None or not chunks:
            return [analyze_chunk(chunk, params) for chunk in chunks]
        results: list[ChunkResult | None] = [None] * len(chunks)
        todo = list(range(len(chunks)))
        for attempt in (1, 2):
            todo = self._map(chunks, todo, params, results, attempt)
            if not todo:
                break
        for i in todo:
            log.warning(
                "computing chunk %d (%d symbols) in-process after losing it twice",
                i,
                len(chunks[i]),
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
            log.warning("scatter failed (attempt %d): %s", attempt, _reason(exc))
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
                    "chunk %d lost on the cluster (attempt %d): %s", i, attempt, _reason(exc)
                )
                failed.append(i)
        for future in (*futures, *data):
            future.release()  # local bookkeeping only: works even when the scheduler is gone
        return failed


def _start(settings: Settings, mode: SyncMode, stack: contextlib.ExitStack) -> Client | None:
    if mode == "remote":
        return stack.enter_context(
            Client(settings.dask_scheduler_address, timeout=settings.dask_connect_timeout)
        )
    if mode == "sequential":
        return None
    cluster = LocalCluster(**local_cluster_kwargs(settings, processes=mode == "local_cluster"))
    stack.enter_context(cluster)
    return stack.enter_context(Client(cluster))


@contextlib.contextmanager
def open_sync(settings: Settings, start: SyncMode | None = None) -> Iterator[SyncCompute]:
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
        stack.enter_context(dask.config.set(dask_config(settings)))
        for mode in chain:
            attempt = contextlib.ExitStack()
            try:
                client = _start(settings, mode, attempt)
            except Exception as exc:  # distributed raises OSError, TimeoutError, ValueError, ...
                attempt.close()
                reason = f"{mode} unavailable: {_reason(exc)}"
                log.warning("Dask %s; falling back", reason)
                reasons.append(reason)
                continue
            stack.enter_context(attempt)
            yield SyncCompute(settings, mode, client, reasons)
            return
    raise AssertionError("unreachable: sequential mode always starts")  # pragma: no cover
