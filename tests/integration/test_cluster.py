"""`service.compute.stream.open_async` against real Dask: a process LocalCluster (2 workers x 1
thread, shared by the module) and a remote scheduler + worker started as real processes.

The handle lives on an event loop in a background thread for the whole module, the way
the service holds it; tests hand it coroutines with `_run`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dask.config
import numpy as np
import pytest

from service.calendar import date_to_day, spring_festival_date
from service.compute.stream import ComputeHandle, open_async
from service.compute.tasks import ChunkResult, analyze_chunk
from service.engine import EngineParams, SymbolWindows
from service.errors import SfaError
from service.run.metrics import Metrics
from service.settings import DaskSettings, load_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    # distributed logs/warns about the workers we kill on purpose and on teardown.
    pytest.mark.filterwarnings("ignore::RuntimeWarning:distributed.*"),
    pytest.mark.filterwarnings("ignore:.*Restarting worker.*:UserWarning"),
]

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
PARAMS = EngineParams()


def symbol_windows(seed: int, n_years: int = 12) -> SymbolWindows:
    """Daily bars in the windows of 2008.. plus a later bar closing them."""
    rng = np.random.default_rng(seed)
    days: list[int] = []
    for year in range(2008, 2008 + n_years):
        sf = date_to_day(spring_festival_date(year))
        days += [d for d in range(sf - 60, sf + 61) if (d + 3) % 7 < 5]
    closes = 20.0 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
    return SymbolWindows(f"S{seed}", np.array(days, np.int32), closes, days[-1] + 200)


def chunks_of(n_chunks: int, per_chunk: int, offset: int = 0) -> list[list[SymbolWindows]]:
    return [
        [symbol_windows(offset + c * per_chunk + i) for i in range(per_chunk)]
        for c in range(n_chunks)
    ]


def assert_matches_local(chunks: list[list[SymbolWindows]], got: list[ChunkResult]) -> None:
    assert len(got) == len(chunks)
    for chunk, result in zip(chunks, got, strict=True):
        want = analyze_chunk(chunk, PARAMS).results
        assert [r.symbol for r in result.results] == [r.symbol for r in want]
        assert [r.pattern for r in result.results] == [r.pattern for r in want]


class LoopThread:
    """An asyncio loop in a daemon thread: module-long async objects without a plugin."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


def settings(**overrides: Any) -> DaskSettings:
    env = {
        "DASK_N_WORKERS": "2",
        "DASK_THREADS_PER_WORKER": "1",
        "DASK_MEMORY_LIMIT": "1GB",
        "DASK_MEMORY_TARGET_FRACTION": "0.55",
        "DASK_MEMORY_SPILL_FRACTION": "0.65",
        "DASK_MEMORY_PAUSE_FRACTION": "0.75",
        "DASK_MEMORY_TERMINATE_FRACTION": "0.9",
        "DASK_CONNECT_TIMEOUT": "7s",
        "DASK_TCP_TIMEOUT": "19s",
        "DASK_CHUNK_SIZE": "4",
        # Worker processes, as on a bigger machine: the settings must cross a process.
        "SFA_DASK_PROCESSES": "true",
    }
    return load_settings(env, **overrides).dask


@pytest.fixture(scope="module")
def local(loop: LoopThread) -> Iterator[ComputeHandle]:
    handle = loop.run(open_async(settings(dask_enable_distributed=True)))
    yield handle
    loop.run(handle.close())


def test_local_cluster_applies_every_dask_setting(local: ComputeHandle) -> None:
    assert (local.mode, local.fallback_active, local.fallback_reason) == (
        "local_cluster",
        False,
        None,
    )
    assert local.client is not None and local.is_reachable() and local.n_workers() == 2
    keys = {
        "distributed.worker.memory.target": 0.55,
        "distributed.worker.memory.spill": 0.65,
        "distributed.worker.memory.pause": 0.75,
        "distributed.worker.memory.terminate": 0.9,
        "distributed.comm.timeouts.connect": "7.0s",
        "distributed.comm.timeouts.tcp": "19.0s",
    }
    seen = local.client.run(lambda: {k: dask.config.get(k) for k in keys})
    seen = seen.result() if hasattr(seen, "result") else seen
    assert len(seen) == 2 and all(cfg == keys for cfg in seen.values())
    workers = local.client.scheduler_info(n_workers=-1)["workers"].values()
    assert {w["nthreads"] for w in workers} == {1}
    assert {w["memory_limit"] for w in workers} == {1_000_000_000}
    assert set(local.worker_stats()) == set(local.client.scheduler_info(n_workers=-1)["workers"])


def test_the_worker_view_is_right_on_the_loop_off_it_and_in_the_metrics(
    loop: LoopThread, local: ComputeHandle
) -> None:
    """An asynchronous client's `scheduler_info()` has no per-worker entries: read on the
    loop it said 0 workers (so `sfa_dask_workers` read 0 and a loss looked like an empty
    cluster) while two ran. The view comes from the scheduler, on the loop and off it."""
    assert local.client is not None
    identity = loop.run(local.client.scheduler.identity(n_workers=-1))
    truth = set(identity["workers"])
    assert len(truth) == 2

    async def read_on_the_loop() -> tuple[set[str], int, bool]:
        return set(local.worker_stats()), local.n_workers(), local.is_reachable()

    assert loop.run(read_on_the_loop()) == (truth, 2, True)
    metrics = Metrics("test")
    metrics.set_providers(dask=local.worker_stats)

    async def scrape_on_the_loop() -> str:
        return metrics.render_for(None)[0].decode()

    for text in (loop.run(scrape_on_the_loop()), metrics.render_for(None)[0].decode()):
        assert "sfa_dask_workers 2.0" in text.splitlines()
        assert {
            w for w in truth if f'sfa_dask_worker_memory_bytes{{worker="{w}"}}' in text
        } == truth


def test_a_scrape_does_not_wait_on_a_busy_loop(loop: LoopThread, local: ComputeHandle) -> None:
    """Reading the workers off the loop used to run a call on it: a scrape waited for
    whatever held the loop (the blocking `sync` of distributed)."""
    release = threading.Event()
    loop.loop.call_soon_threadsafe(release.wait, 30)  # the loop is busy until released
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(local.n_workers()), daemon=True)
    reader.start()
    reader.join(10)  # a deadlock guard, not a latency bound: the old read waits 30 s
    release.set()
    assert got == [2]


def test_work_runs_on_the_workers(loop: LoopThread, local: ComputeHandle) -> None:
    chunks = chunks_of(6, 4)
    got = loop.run(local.run_chunks(chunks, PARAMS))
    assert_matches_local(chunks, got)
    workers = set(local.worker_stats())
    assert {r.executed_by for r in got} <= workers

    def analyze_chunk_runs(dask_worker: Any) -> int:
        return sum(
            1
            for key, start, finish, *_ in dask_worker.state.log
            if str(key).startswith("analyze_chunk") and start == "executing" and finish == "memory"
        )

    assert local.client is not None
    runs = local.client.run(analyze_chunk_runs)
    assert sum(runs.values()) >= 6


def test_batches_stay_in_flight_until_awaited(loop: LoopThread, local: ComputeHandle) -> None:
    batches = [chunks_of(2, 3, offset=100 * b) for b in range(3)]

    async def submit_all() -> list[list[asyncio.Task[ChunkResult]]]:
        pending = [[local.submit_chunk(c, PARAMS) for c in batch] for batch in batches]
        assert not any(t.done() for tasks in pending for t in tasks)  # submit returned at once
        return pending

    async def scenario() -> list[list[ChunkResult]]:
        pending = await submit_all()
        return [list(await asyncio.gather(*tasks)) for tasks in pending]

    for batch, got in zip(batches, loop.run(scenario()), strict=True):
        assert_matches_local(batch, got)


def test_a_killed_worker_loses_the_chunk_which_is_scattered_again(
    loop: LoopThread, local: ComputeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    client = local.client
    assert client is not None
    real_scatter = client.scatter
    killed: list[str] = []

    async def scatter_then_kill_the_holder(*args: Any, **kwargs: Any) -> Any:
        futures = await real_scatter(*args, **kwargs)
        if not killed:  # first try: the worker holding the scattered chunk dies at once
            holder = (await client.who_has(futures))[futures[0].key][0]
            pids = await client.run(os.getpid)
            killed.append(holder)
            os.kill(pids[holder], signal.SIGKILL)
        return futures

    chunks = chunks_of(1, 4, offset=500)
    client.scatter = scatter_then_kill_the_holder  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, logger="service.compute"):
            got = loop.run(local.run_chunks(chunks, PARAMS))
    finally:
        client.scatter = real_scatter  # type: ignore[method-assign]
    assert_matches_local(chunks, got)
    assert killed and got[0].executed_by not in killed and got[0].executed_by != "local"
    assert "lost on the cluster" in caplog.text
    assert not local.fallback_active
    loop.run(wait_for_workers(local, 2))  # the nanny restarts it for later tests


async def wait_for_workers(handle: ComputeHandle, n: int) -> None:
    assert handle.client is not None
    # an async client returns a coroutine; distributed's annotations say None
    await handle.client.wait_for_workers(n)  # type: ignore[func-returns-value,misc]
    await handle.refresh_workers()  # the view would catch up within WORKERS_REFRESH_S


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_remote(
    address: str, scheduler_args: tuple[str, ...] = ()
) -> list[subprocess.Popen[bytes]]:
    """`dask scheduler` at `address` and one `dask worker`, as real processes."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    common = ["--no-dashboard"]
    port = address.rsplit(":", 1)[1]
    scheduler = [
        *(str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", port),
        *scheduler_args,
    ]
    worker = [str(VENV_BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1"]
    return [
        subprocess.Popen(
            [*command, *common],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for command in (scheduler, [*worker, "--memory-limit", "1GB"])
    ]


def _wait_listening(address: str, timeout_s: float = 60.0) -> None:
    port = int(address.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"dask scheduler not listening at {address}"
            time.sleep(0.1)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture()
def remote() -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """`dask scheduler` and one `dask worker` as real processes."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs = _start_remote(address)
    try:
        _wait_listening(address)  # a refused port fails open_async at once, by design
        yield address, procs
    finally:
        _stop(procs)


def test_remote_scheduler_runs_the_work_then_falls_back_when_it_dies(
    loop: LoopThread,
    remote: tuple[str, list[subprocess.Popen[bytes]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    address, procs = remote
    handle = loop.run(open_async(settings(dask_scheduler_address=address, dask_connect_timeout=20)))
    try:
        assert handle.mode == "remote" and not handle.fallback_active
        assert handle.client is not None
        loop.run(wait_for_workers(handle, 1))
        handle.settings = handle.settings.model_copy(update={"dask_connect_timeout": 2.0})
        chunks = chunks_of(2, 3)
        got = loop.run(handle.run_chunks(chunks, PARAMS))
        assert_matches_local(chunks, got)
        assert {r.executed_by for r in got} == set(handle.worker_stats())
        _stop(procs)  # the whole cluster goes away
        with caplog.at_level(logging.WARNING, logger="service.compute"):
            again = loop.run(handle.run_chunks(chunks, PARAMS))
        assert_matches_local(chunks, again)
        assert {r.executed_by for r in again} == {"local"}
        assert handle.fallback_active and "cluster lost" in (handle.fallback_reason or "")
        assert not handle.is_reachable()
    finally:
        loop.run(handle.close())


def test_unreachable_scheduler_falls_back_locally_or_fails_with_one_line(
    loop: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"tcp://127.0.0.1:{_free_port()}"
    quick = settings(dask_scheduler_address=nowhere, dask_connect_timeout=1)
    with caplog.at_level(logging.WARNING, logger="service.compute"):
        handle = loop.run(open_async(quick))
    try:
        assert handle.mode == "local" and handle.fallback_active and handle.client is None
        assert nowhere in (handle.fallback_reason or "") and nowhere in caplog.text
        assert handle.is_reachable() and handle.worker_stats() == {} and handle.n_workers() == 0
        chunks = chunks_of(1, 2)
        got = loop.run(handle.run_chunks(chunks, PARAMS))
        assert_matches_local(chunks, got)
        assert got[0].executed_by == "local"
    finally:
        loop.run(handle.close())
    with pytest.raises(SfaError) as info:
        loop.run(open_async(quick.model_copy(update={"dask_fallback": "fail"})))
    assert "\n" not in str(info.value) and nowhere in str(info.value)


def test_disabled_distribution_is_local_without_a_fallback(loop: LoopThread) -> None:
    handle = loop.run(open_async(settings(dask_enable_distributed=False)))
    assert (handle.mode, handle.fallback_active, handle.client) == ("local", False, None)
    loop.run(handle.close())
    time.sleep(0)  # nothing to wait for: no cluster was started


def _reconnecting(loop: LoopThread, address: str) -> ComputeHandle:
    """A handle on the remote scheduler that looks for it again every second."""
    return loop.run(
        open_async(
            settings(
                dask_scheduler_address=address,
                dask_connect_timeout=2,
                dask_reconnect_seconds=1.0,
            )
        )
    )


def test_after_a_fallback_the_work_returns_to_a_cluster_that_comes_back(
    loop: LoopThread,
    remote: tuple[str, list[subprocess.Popen[bytes]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scheduler restarted at the same address takes the work again: the fallback is
    a state that ends (sfa_dask_fallback_active back to 0), not a verdict."""
    address, procs = remote
    handle = _reconnecting(loop, address)
    restarted: list[subprocess.Popen[bytes]] = []
    try:
        loop.run(wait_for_workers(handle, 1))
        chunks = chunks_of(2, 2)
        _stop(procs)
        lost = loop.run(handle.run_chunks(chunks, PARAMS))
        assert {r.executed_by for r in lost} == {"local"} and handle.fallback_active
        restarted = _start_remote(address)
        deadline = time.monotonic() + 90
        executed: set[str] = {"local"}
        with caplog.at_level(logging.INFO, logger="service.compute"):
            # the batch that finds the cluster back may still run a chunk here: go on
            # until a whole batch runs on the cluster
            while "local" in executed and time.monotonic() < deadline:
                time.sleep(0.5)
                got = loop.run(handle.run_chunks(chunks, PARAMS))
                assert_matches_local(chunks, got)
                executed = {r.executed_by for r in got}
        assert "local" not in executed and all(w.startswith("tcp://") for w in executed)
        assert not handle.fallback_active and handle.fallback_reason is None
        assert handle.mode == "remote" and "reachable again" in caplog.text
    finally:
        loop.run(handle.close())
        _stop(restarted)


def test_a_fallback_ends_without_traffic_and_the_listener_hears_both_flips(
    loop: LoopThread, remote: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    """The end of a feed, a quiet market: nothing to compute when the scheduler comes
    back. The probe runs on the handle's own clock, so the fallback still ends, and the
    service's gauge (the listener) hears of it without waiting for a batch."""
    address, procs = remote
    handle = _reconnecting(loop, address)
    flips: list[bool] = []
    handle.on_fallback_change = lambda: flips.append(handle.fallback_active)
    restarted: list[subprocess.Popen[bytes]] = []
    try:
        loop.run(wait_for_workers(handle, 1))
        _stop(procs)
        loop.run(handle.run_chunks(chunks_of(1, 2), PARAMS))
        assert flips == [True]
        restarted = _start_remote(address)
        deadline = time.monotonic() + 90
        while handle.fallback_active and time.monotonic() < deadline:
            time.sleep(0.2)  # no run_chunks: only the watcher can end the fallback
        assert not handle.fallback_active and flips == [True, False]
    finally:
        loop.run(handle.close())
        _stop(restarted)


def test_a_threaded_worker_is_not_paused_by_its_process_memory(loop: LoopThread) -> None:
    """A threaded worker's memory limit would count the service's whole process: with
    100MB under this pytest process it paused at once and no batch ever came back."""
    threaded = settings(dask_enable_distributed=True, dask_processes=False)
    handle = loop.run(open_async(threaded.model_copy(update={"dask_memory_limit": "100MB"})))
    try:
        assert handle.mode == "local_cluster" and handle.client is not None
        client = handle.client

        async def limits_of_workers() -> dict[str, Any]:
            return await client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)

        limits = loop.run(limits_of_workers())
        assert list(limits.values()) == [None]
        got = loop.run(handle.run_chunks(chunks_of(1, 2), PARAMS), timeout=20)
        assert [r.executed_by for r in got] == list(limits)
    finally:
        loop.run(handle.close())


def _stream(loop: LoopThread, handle: ComputeHandle, n: int) -> None:
    """`n` one-chunk batches, idle between them: the scheduler forgets each."""
    chunk = chunks_of(1, 2)
    for _ in range(n):
        loop.run(handle.run_chunks(chunk, PARAMS))
        time.sleep(0.005)


def _bookkeeping(loop: LoopThread, handle: ComputeHandle) -> tuple[int, int, int]:
    """TaskGroups alive in the scheduler's process, the workers' cumulative metric
    entries and their profiler's history (a tree a second), after a worker heartbeat
    has brought the last batch's metrics in."""

    def groups(dask_scheduler: Any) -> int:
        import gc

        from distributed.scheduler import TaskGroup

        return sum(isinstance(o, TaskGroup) for o in gc.get_objects())

    def kept(dask_worker: Any) -> tuple[int, int]:
        return len(dask_worker.digests_total), len(dask_worker.profile_history)

    client = handle.client
    assert client is not None

    async def ask() -> tuple[int, int, int]:
        per_worker = (await client.run(kept)).values()
        scheduler = await client.run_on_scheduler(groups)
        return scheduler, sum(m for m, _ in per_worker), sum(p for _, p in per_worker)

    time.sleep(1.5)
    return loop.run(ask())


def _growth(loop: LoopThread, handle: ComputeHandle) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`_bookkeeping` after 120 warm-up batches and after 120 more."""
    _stream(loop, handle, 120)
    before = _bookkeeping(loop, handle)
    _stream(loop, handle, 120)
    return before, _bookkeeping(loop, handle)


def test_a_long_stream_leaves_no_bookkeeping_per_batch(loop: LoopThread) -> None:
    """The service's default cluster on a small machine runs the scheduler and a
    threaded worker in the service's process. With distributed's spans, every batch left
    a TaskGroup on the scheduler and metric entries on the worker for good (dask/
    distributed#7977), and the worker's profiler sampled the service's loop and kept a
    tree a second (the largest growth in a soak's tracemalloc). After a warm-up
    longer than the scheduler's bounded history of computations (100 of them, about 200
    groups, which swings by a few as batches share groups), 120 more batches must leave
    nothing behind: with spans each left at least one group and four metric entries."""
    handle = loop.run(open_async(settings(dask_enable_distributed=True, dask_processes=False)))
    try:
        assert handle.mode == "local_cluster"
        before, after = _growth(loop, handle)
        message = f"(task groups, worker metric entries, profiles): {before} -> {after}"
        assert after[0] - before[0] < 20 and after[1:] == before[1:], message
    finally:
        loop.run(handle.close())


def test_the_preload_keeps_a_remote_scheduler_from_growing_per_batch(loop: LoopThread) -> None:
    """`dask scheduler --preload service.compute.preload`, as compose and Kubernetes run
    it, with a worker started without it: more batches leave nothing behind on either
    (the worker's profiler is its own `dask worker` default, so not counted)."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs = _start_remote(address, ("--preload", "service.compute.preload"))
    try:
        _wait_listening(address)
        handle = loop.run(
            open_async(settings(dask_scheduler_address=address, dask_connect_timeout=20))
        )
        try:
            assert handle.mode == "remote"
            before, after = _growth(loop, handle)
            message = f"(scheduler task groups, worker metric entries): {before} -> {after}"
            assert after[0] - before[0] < 20 and after[1] == before[1], message
        finally:
            loop.run(handle.close())
    finally:
        _stop(procs)
