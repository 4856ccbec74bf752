"""SFA_DASK_ADAPT_MIN / SFA_DASK_ADAPT_MAX: an adaptive LocalCluster of real worker
processes grows under a burst, shrinks back to its floor when idle, and computes exactly
what a fixed cluster computes.

distributed's adaptive timing is shortened for the test (interval, target duration, wait
count), so one scale-up and one scale-down fit in well under a minute; the decisions
themselves are distributed's, unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dask.config
import numpy as np
import pytest

from service.compute.config import adapt_range, local_cluster_kwargs
from service.compute.stream import ComputeHandle, open_async
from service.compute.tasks import ChunkResult
from service.errors import ConfigError
from service.settings import load_settings
from tests.integration.test_cluster import PARAMS, LoopThread, chunks_of

BASE = {
    "DASK_THREADS_PER_WORKER": "1",
    "DASK_MEMORY_LIMIT": "1GB",
    "DASK_CHUNK_SIZE": "20",
    "DASK_CONNECT_TIMEOUT": "30s",
}
FAST_ADAPT = {
    "distributed.adaptive.interval": "200ms",
    "distributed.adaptive.target-duration": "100ms",
    "distributed.adaptive.wait-count": 3,
}


@pytest.fixture()
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


class Sampler:
    """Every worker count the scheduler reported through the handle, sampled off the loop
    like a scrape. It asks the scheduler itself (`refresh_workers`) rather than reading
    the view the handle refreshes every second: with FAST_ADAPT a burst's extra worker
    can start and retire inside one refresh interval, and the view never shows it."""

    def __init__(self, handle: ComputeHandle, loop: LoopThread) -> None:
        self.seen: list[int] = []
        self._handle = handle
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.seen.append(self._loop.run(self._handle.refresh_workers()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def same_results(a: list[ChunkResult], b: list[ChunkResult]) -> None:
    left = [r for chunk in a for r in chunk.results]
    right = [r for chunk in b for r in chunk.results]
    assert [(r.symbol, r.status, r.years, r.pattern) for r in left] == [
        (r.symbol, r.status, r.years, r.pattern) for r in right
    ]
    for x, y in zip(left, right, strict=True):
        for name in ("curve_k", "curve_mean", "curve_n"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), (x.symbol, name)


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::RuntimeWarning:distributed.*")
def test_a_burst_scales_workers_up_idleness_down_and_results_do_not_change(
    loop: LoopThread,
) -> None:
    bursts = [chunks_of(60, 20, offset=2000 * b) for b in range(6)]
    fixed = loop.run(open_async(load_settings({**BASE, "DASK_N_WORKERS": "2"}).dask))
    try:
        expected = [loop.run(fixed.run_chunks(chunks, PARAMS)) for chunks in bursts]
    finally:
        loop.run(fixed.close())

    env = {**BASE, "SFA_DASK_PROCESSES": "true", "SFA_DASK_ADAPT_MIN": "1"}
    with dask.config.set(FAST_ADAPT):
        handle = loop.run(open_async(load_settings({**env, "SFA_DASK_ADAPT_MAX": "3"}).dask))
    sampler = Sampler(handle, loop)
    try:
        assert handle.mode == "local_cluster" and handle.adaptive
        wait_until(lambda: handle.n_workers() == 1, 60, "the floor of one worker never started")
        executed: set[str] = set()
        # The burst goes on until the work spreads over more workers than the floor (a
        # short one may be over before a new worker process has started).
        for round_ in range(30):
            chunks = bursts[round_ % len(bursts)]
            got = loop.run(handle.run_chunks(chunks, PARAMS))
            same_results(got, expected[round_ % len(bursts)])
            executed |= {r.executed_by for r in got}
            if len(executed) > 1:
                break
        assert len(executed) > 1 and "local" not in executed, executed
        assert max(sampler.seen) > 1 and max(sampler.seen) <= 3
        assert not handle.fallback_active
        # Idle now: adaptive retires workers down to the floor, never below it.
        wait_until(lambda: handle.n_workers() == 1, 60, f"no scale-down: {sampler.seen[-5:]}")
        time.sleep(1.0)  # a few more adaptive rounds at the floor
        assert handle.n_workers() == 1 and min(sampler.seen[sampler.seen.index(1) :]) == 1
        # ... and the smaller cluster still computes the same.
        again = loop.run(handle.run_chunks(bursts[0], PARAMS))
        same_results(again, expected[0])
    finally:
        sampler.stop()
        loop.run(handle.close())


# --- the settings, without a cluster -------------------------------------------------


def test_adaptive_only_with_a_maximum_and_the_floor_defaults_to_one() -> None:
    assert adapt_range(load_settings({}).dask) is None
    assert adapt_range(load_settings({"SFA_DASK_ADAPT_MAX": "4"}).dask) == (1, 4)
    both = load_settings({"SFA_DASK_ADAPT_MIN": "0", "SFA_DASK_ADAPT_MAX": "4"}).dask
    assert adapt_range(both) == (0, 4)
    # the cluster starts at the floor, workers keep their own thread count
    kwargs = local_cluster_kwargs(
        both.model_copy(update={"dask_threads_per_worker": 2, "dask_n_workers": 3}),
        processes=False,
    )
    assert (kwargs["n_workers"], kwargs["threads_per_worker"]) == (0, 2)
    fixed = local_cluster_kwargs(load_settings({"DASK_N_WORKERS": "3"}).dask, processes=True)
    assert fixed["n_workers"] == 3


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SFA_DASK_ADAPT_MIN": "2"}, "SFA_DASK_ADAPT_MIN"),
        ({"SFA_DASK_ADAPT_MIN": "3", "SFA_DASK_ADAPT_MAX": "2"}, "SFA_DASK_ADAPT_MIN"),
        ({"SFA_DASK_ADAPT_MIN": "-1", "SFA_DASK_ADAPT_MAX": "2"}, "SFA_DASK_ADAPT_MIN"),
        ({"SFA_DASK_ADAPT_MAX": "0"}, "SFA_DASK_ADAPT_MAX"),
        ({"SFA_DASK_ADAPT_MAX": "many"}, "SFA_DASK_ADAPT_MAX"),
    ],
)
def test_a_bad_range_is_one_line_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert message.startswith(f"{variable}: ") and "\n" not in message
