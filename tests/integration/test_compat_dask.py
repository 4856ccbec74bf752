"""The compat API (SPEC 8) on real Dask, one test per step of the fallback chain:
remote scheduler (real `dask scheduler`/`dask worker` processes), process LocalCluster,
threads, sequential. Each fallback must be logged and recorded in the result.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from service import (
    BatchProcessingResult,
    DaskResourceManager,
    ParallelProcessingConfig,
    ParallelSpringFestivalEngine,
)
from service.compute import sync as cluster_module
from tests.unit.compat.test_compat import make_frame

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:distributed.*"),
]

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
FRAMES = {f"S{i}": make_frame(i) for i in range(8)}
FRAMES["SHORT"] = make_frame(99, start="2019-06-01", end="2020-12-31")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sequential() -> BatchProcessingResult:
    config = ParallelProcessingConfig(execution="sequential", chunk_size=3)
    return ParallelSpringFestivalEngine(config=config).analyze_multiple_stocks_parallel(FRAMES)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A real `dask scheduler` process with two single-thread `dask worker` processes."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    dask = str(VENV_BIN / "dask")
    quiet: dict[str, Any] = {
        "env": env,
        "cwd": ROOT,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    port = address.rsplit(":", 1)[1]
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"], **quiet
        )
    ]
    worker = [
        dask,
        "worker",
        address,
        "--nworkers",
        "2",
        "--nthreads",
        "1",
        "--memory-limit",
        "1GB",
        "--no-dashboard",
    ]
    procs.append(subprocess.Popen(worker, **quiet))
    try:
        yield address
    finally:
        for proc in reversed(procs):  # workers first: they leave quickly while the scheduler lives
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _same_analyses(result: BatchProcessingResult, reference: BatchProcessingResult) -> None:
    assert result.successful_analyses == reference.successful_analyses
    assert result.failed_analyses == reference.failed_analyses
    assert result.total_stocks == len(FRAMES) and 0 < result.success_rate < 1


def test_remote_scheduler_runs_chunks_on_its_workers(
    scheduler: str, sequential: BatchProcessingResult
) -> None:
    config = ParallelProcessingConfig(scheduler_address=scheduler, chunk_size=3)
    with DaskResourceManager(config) as client:
        client.wait_for_workers(2, timeout=30)
        workers = set(client.scheduler_info(n_workers=-1)["workers"])
        result = ParallelSpringFestivalEngine(config=config).analyze_multiple_stocks_parallel(
            FRAMES
        )
        runs = client.run(
            lambda dask_worker: sum(
                1
                for key, start, finish, *_ in dask_worker.state.log
                if str(key).startswith("analyze_chunk")
                and finish == "memory"
                and start == "executing"
            )
        )
    assert result.execution_mode == "remote" and result.fallback_reason is None
    assert result.executed_by and result.executed_by <= workers
    assert sum(runs.values()) >= 3  # 8 frames in chunks of 3 ran as tasks on the workers
    _same_analyses(result, sequential)


def test_local_cluster_when_distributed_is_enabled(sequential: BatchProcessingResult) -> None:
    config = ParallelProcessingConfig(
        enable_distributed=True, n_workers=2, threads_per_worker=1, memory_limit="1GB", chunk_size=3
    )
    result = ParallelSpringFestivalEngine(config=config).analyze_multiple_stocks_parallel(FRAMES)
    assert result.execution_mode == "local_cluster" and result.fallback_reason is None
    assert result.executed_by and all(a.startswith("tcp://") for a in result.executed_by)
    _same_analyses(result, sequential)


def test_unreachable_scheduler_falls_back_to_a_local_cluster_and_says_so(
    sequential: BatchProcessingResult, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"tcp://127.0.0.1:{_free_port()}"
    config = ParallelProcessingConfig.from_env(
        {
            "DASK_SCHEDULER_ADDRESS": nowhere,
            "DASK_CONNECT_TIMEOUT": "1s",
            "DASK_ENABLE_DISTRIBUTED": "false",
            "DASK_N_WORKERS": "2",
            "DASK_CHUNK_SIZE": "3",
        }
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="service.compute"):
        result = ParallelSpringFestivalEngine(config=config).analyze_multiple_stocks_parallel(
            FRAMES
        )
    assert time.monotonic() - started < 30
    assert result.execution_mode == "local_cluster"  # DASK_ENABLE_DISTRIBUTED=false: processes
    assert result.fallback_reason is not None and "remote unavailable" in result.fallback_reason
    assert "remote unavailable" in caplog.text
    assert result.executed_by and all(a.startswith("tcp://") for a in result.executed_by)
    _same_analyses(result, sequential)


def test_threads_when_worker_processes_cannot_start(
    sequential: BatchProcessingResult,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 20: processes first (the original's LocalCluster), threads only when they fail."""
    real = cluster_module.LocalCluster

    def threads_only(**kwargs: Any) -> Any:
        if kwargs.get("processes"):
            raise OSError("cannot spawn worker processes here")
        return real(**kwargs)

    monkeypatch.setattr(cluster_module, "LocalCluster", threads_only)
    config = ParallelProcessingConfig(n_workers=2, threads_per_worker=1, chunk_size=3)
    with caplog.at_level(logging.WARNING, logger="service.compute"):
        result = ParallelSpringFestivalEngine(config=config).analyze_multiple_stocks_parallel(
            FRAMES
        )
    assert result.execution_mode == "threads"
    assert (
        result.fallback_reason
        == "local_cluster unavailable: OSError: cannot spawn worker processes here"
    )
    assert "local_cluster unavailable" in caplog.text and caplog.text.count("falling back") == 1
    assert result.executed_by and all(a.startswith("inproc://") for a in result.executed_by)
    _same_analyses(result, sequential)


def test_sequential_when_no_cluster_can_be_had(
    sequential: BatchProcessingResult,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_cluster(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no sockets in this sandbox")

    monkeypatch.setattr(cluster_module, "LocalCluster", no_cluster)
    config = ParallelProcessingConfig(enable_distributed=True, chunk_size=3)
    with caplog.at_level(logging.WARNING, logger="service.compute"):
        result = ParallelSpringFestivalEngine(config=config).analyze_multiple_stocks_parallel(
            FRAMES
        )
    assert result.execution_mode == "sequential" and result.executed_by == frozenset({"local"})
    reason = result.fallback_reason or ""
    assert "local_cluster unavailable: OSError" in reason and "threads unavailable" in reason
    assert caplog.text.count("falling back") == 2
    _same_analyses(result, sequential)


def test_streaming_uses_one_session_for_all_batches(
    scheduler: str, sequential: BatchProcessingResult
) -> None:
    config = ParallelProcessingConfig(scheduler_address=scheduler, chunk_size=2)
    engine = ParallelSpringFestivalEngine(config=config)
    result = engine.analyze_large_dataset_streaming(iter(FRAMES.items()), batch_size=3)
    assert result.execution_mode == "remote" and len(result.executed_by) >= 1
    _same_analyses(result, sequential)
    assert isinstance(result.memory_usage["input_frames_mb"], float)
    assert all(isinstance(f, pd.DataFrame) for f in FRAMES.values())
