"""Issue 20, point 11, on a real LocalCluster: what an original user's config starts.

`ParallelProcessingConfig(enable_distributed=False)` (the original's default) must give
a LocalCluster of `n_workers` worker *processes*, as the original's DaskResourceManager
started; the fallbacks to threads and to sequential work are in test_compat_dask.py and
tests/unit/compat/test_compat_users.py. Two workers only: the machine has two cores.
"""

from __future__ import annotations

import logging
import os

import pytest

from service.compat import (
    DaskResourceManager,
    ParallelProcessingConfig,
    ParallelSpringFestivalEngine,
)
from tests.unit.compat.test_compat_users import weekday_frame

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:distributed.*"),
]


def test_11_enable_distributed_false_starts_n_worker_processes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = {f"S{i}": weekday_frame(f"S{i}", "2017-01-01", "2023-06-30", seed=i) for i in range(4)}
    expected = ParallelSpringFestivalEngine(
        config=ParallelProcessingConfig(execution="sequential")
    ).analyze_multiple_stocks_parallel(frames)
    config = ParallelProcessingConfig(
        n_workers=2,
        threads_per_worker=1,
        memory_limit="1GB",
        chunk_size=2,
        enable_distributed=False,
    )
    engine = ParallelSpringFestivalEngine(config=config)
    with caplog.at_level(logging.INFO, logger="service.compat"), engine.resource_manager as rm:
        assert rm.mode == "local_cluster" and rm.fallback_reason is None
        rm.wait_for_workers(2, timeout=60)
        info = rm.get_cluster_info()
        assert (info["status"], info["workers"], info["total_cores"]) == ("connected", 2, 2)
        assert info["total_memory"] == 2 * 10**9 and info["dashboard_link"]
        pids = rm.client.run(os.getpid)  # one answer per worker
        assert len(pids) == 2 and len(set(pids.values())) == 2
        assert os.getpid() not in pids.values()  # processes, not threads of this one
        result = engine.analyze_multiple_stocks_parallel(frames)
    assert "mode=local_cluster" in caplog.text
    assert result.execution_mode == "local_cluster" and result.fallback_reason is None
    assert result.executed_by and result.executed_by <= set(pids)
    assert result.successful_analyses == expected.successful_analyses
    assert result.failed_analyses == expected.failed_analyses
    assert rm.client is None and rm.get_cluster_info()["status"] == "not_connected"


def test_11_a_manager_of_its_own_says_where_it_ran() -> None:
    config = ParallelProcessingConfig(n_workers=2, threads_per_worker=1, memory_limit="1GB")
    with DaskResourceManager(config) as rm:
        info = rm.get_cluster_info()
        pids = rm.client.run(os.getpid)
    assert info["mode"] == "local_cluster" and info["fallback_reason"] is None
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
