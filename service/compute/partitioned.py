"""Partitioned replay on a Dask cluster: the driver plans, submits, tracks and merges.

The graph (`service.partitioned` has the functions and why they give the single-process
output):

    read_block(b) ─ getitem "meta"   ──────────────────────────────> driver (dead letters)
                  ├ getitem "status" ─┐
                  └ getitem p ────────┴─> run_owner(p, pieces, statuses) -> driver (results)

Every owner takes futures of its pieces, so Dask moves each piece from the worker that
read the block to the worker that owns the partition; nothing here moves data by hand.
Tasks are plain functions of a file range, so a worker lost mid-run costs only a rerun of
its tasks (the scheduler recomputes lost pieces from their blocks; `retries` allows a
task to see its worker die twice). A lost scheduler is the end of the run: `ClusterLost`,
which the CLI turns into exit 3 with nothing written.

Local: a LocalCluster of DASK_N_WORKERS worker processes (processes always: the work is
GIL-bound Python and numpy). Remote: DASK_SCHEDULER_ADDRESS; every worker must read every
input, checked before any work (`InputsUnreadable`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import operator
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import dask.config
from distributed import Client, Future, LocalCluster, as_completed

from service.compute.config import LOST_WORK_ERRORS, cluster_config, local_cluster_kwargs, reason_of
from service.errors import SfaError
from service.partitioned.blocks import BlockOutput, read_block
from service.partitioned.merge import PartDirectory, ReplayTotals, merge_outputs
from service.partitioned.owners import OwnerOutput, run_owner
from service.partitioned.plan import check_inputs, default_partitions, pick_block_bytes, plan_blocks
from service.settings import Settings

__all__ = ["ClusterLost", "InputsUnreadable", "PartitionedRun", "run_partitioned"]

log = logging.getLogger(__name__)


#: What a lost scheduler looks like from a synchronous client: its futures cancelled, its
#: comms closed, or (once it gave up reconnecting) a closed client's RuntimeError.
_LOST: tuple[type[BaseException], ...] = (
    *LOST_WORK_ERRORS,
    concurrent.futures.CancelledError,
    RuntimeError,
)


class InputsUnreadable(SfaError):
    """A worker cannot read an input: nothing ran (the CLI exits 2)."""


class ClusterLost(SfaError):
    """The scheduler went away mid-run: nothing was written (the CLI exits 3)."""


@dataclass(slots=True)
class PartitionedRun:
    """The totals, plus where the work ran and what it cost (the summary and `make bench`)."""

    totals: ReplayTotals
    mode: str
    workers: int
    partitions: int
    blocks: int
    seconds: float = 0.0
    owners: list[OwnerOutput] = field(default_factory=list)
    driver_cpu: float = 0.0  # seconds of this process while the tasks ran
    worker_cpu: float = 0.0  # seconds of all workers over the same stretch
    worker_peak_rss: list[int] = field(default_factory=list)  # bytes, one per worker
    #: seconds from the start: "cluster" up, "blocks" all read, "owners" all done, "merged"
    timings: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def _client(settings: Settings, workers: int | None) -> Iterator[tuple[Client, str]]:
    with dask.config.set(cluster_config(settings.dask)):
        address = settings.dask.dask_scheduler_address
        if address:
            try:
                client = Client(address, timeout=settings.dask.dask_connect_timeout)
            except Exception as exc:  # OSError, TimeoutError, ...
                raise SfaError(f"cannot reach scheduler {address}: {reason_of(exc)}") from None
            try:
                try:
                    client.wait_for_workers(1, timeout=settings.dask.dask_connect_timeout)
                except TimeoutError:
                    raise SfaError(
                        f"no Dask worker joined scheduler {address} within "
                        f"DASK_CONNECT_TIMEOUT ({settings.dask.dask_connect_timeout:g} s)"
                    ) from None
                yield client, "remote"
            finally:
                with contextlib.suppress(Exception):
                    client.close()
            return
        kwargs = local_cluster_kwargs(settings.dask, processes=True)
        if workers is not None:
            kwargs["n_workers"] = workers
        with (
            dask.config.set(
                {
                    _SPAWN_ENV: _without_trim(dask.config.get(_SPAWN_ENV, {})),
                    _SATURATION: 1.0,
                }
            ),
            LocalCluster(**kwargs) as cluster,
            Client(cluster) as client,
        ):
            yield client, "local_cluster"


_SPAWN_ENV = "distributed.nanny.pre-spawn-environ"

# How many root tasks (the blocks) a worker holds per thread, rounded up: Dask's 1.1
# means two for a one-thread worker, one running and one waiting. At the end of a
# backfill a worker then sits idle while another still has a block waiting (measured:
# 18 blocks of 64 MiB on two workers went 10 to 8, one worker idle 1.3-1.7 s of a 9 s
# run). With 1.0 a worker gets its next block when it finishes one; a block lasts about
# a second, so the round trip this adds is lost in it.
_SATURATION = "distributed.scheduler.worker-saturation"


def _without_trim(environ: dict[str, Any]) -> dict[str, Any]:
    """distributed starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off
    glibc's adaptive mmap threshold: every buffer over 128 KiB (each 4 MiB read, each
    column of a batch) is then a fresh mmap whose pages fault in zeroed. Measured on a
    block task: 0.81 s of system time per 256 MiB with it, 0.15 s without, the same user
    time. A replay's cluster lives for one run, so returning memory early buys nothing."""
    return {k: v for k, v in environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}


def _check_inputs(client: Client, paths: Sequence[str]) -> tuple[list[int], list[int]]:
    """Every worker opens every input; sizes and Parquet row groups as the first sees them."""
    seen: dict[str, tuple[list[int], list[str], list[int]]] = client.run(check_inputs, list(paths))
    for address, (_, problems, _) in sorted(seen.items()):
        if problems:
            raise InputsUnreadable(f"worker {address}: {problems[0]}")
    sizes, _, groups = next(iter(seen.values()))
    return sizes, groups


def run_partitioned(
    paths: Sequence[str],
    settings: Settings,
    results: IO[bytes] | PartDirectory | None,
    errors: IO[bytes] | None,
    *,
    emit: str = "final",
    partitions: int | None = None,
    block_bytes: int | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int, int, int], None] | None = None,
) -> PartitionedRun:
    """Replay `paths` on the cluster; results and dead letters are written only once every
    task is done. `on_progress(bars, blocks done, partitions done, total tasks)`."""
    started = time.perf_counter()
    with _client(settings, workers) as (client, mode):
        try:
            run, blocks, owners = _run(
                client, mode, paths, settings, emit, partitions, block_bytes, on_progress, started
            )
        except _LOST as exc:
            if isinstance(exc, RuntimeError) and client.status == "running":
                raise
            where = "scheduler" if mode == "remote" else "local cluster"
            raise ClusterLost(f"Dask {where} lost during the replay: {reason_of(exc)}") from None
    # Outside the try: a write that fails here (a full disk) is not a lost cluster.
    run.totals = merge_outputs(blocks, owners, emit, results, errors)
    run.timings["merged"] = time.perf_counter() - started
    run.seconds = time.perf_counter() - started
    return run


def _run(
    client: Client,
    mode: str,
    paths: Sequence[str],
    settings: Settings,
    emit: str,
    partitions: int | None,
    block_bytes: int | None,
    on_progress: Callable[[int, int, int, int], None] | None,
    started: float,
) -> tuple[PartitionedRun, list[BlockOutput], list[OwnerOutput]]:
    timings = {"cluster": time.perf_counter() - started}
    n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
    before = _usage_of(client)
    driver_before = _cpu_seconds()
    sizes, groups = _check_inputs(client, paths)
    p = partitions or default_partitions(n_workers)
    size = block_bytes or pick_block_bytes(sum(sizes), n_workers)
    blocks = plan_blocks(paths, sizes, size, groups)
    token = uuid.uuid4().hex[:8]
    retries = settings.dask.dask_task_retries
    params = settings.engine.engine_params()
    read: list[Future[Any]] = [
        client.submit(
            read_block,
            b,
            p,
            settings.batching.batch_max_messages,
            settings.batching.max_message_bytes,
            key=f"sfa-block-{token}-{b.index}",
            retries=retries,
        )
        for b in blocks
    ]

    def part(name: Any, i: int) -> Future[Any]:
        return client.submit(
            operator.getitem, read[i], name, key=f"sfa-{name}-{token}-{i}", retries=retries
        )

    metas = [part("meta", i) for i in range(len(blocks))]
    statuses = [part("status", i) for i in range(len(blocks))]
    owners = [
        client.submit(
            run_owner,
            q,
            [part(q, i) for i in range(len(blocks))],
            statuses,
            params,
            emit,
            settings.dask.dask_chunk_size,
            key=f"sfa-owner-{token}-{q}",
            retries=retries,
        )
        for q in range(p)
    ]
    read.clear()  # the scheduler keeps each block until its pieces are taken
    total = len(metas) + len(owners)
    bars = blocks_done = owners_done = 0
    meta_of: dict[Any, BlockOutput] = {}
    owner_of: dict[Any, OwnerOutput] = {}
    for future in as_completed([*metas, *owners]):
        value = future.result()
        if isinstance(value, BlockOutput):
            meta_of[future.key] = value
            blocks_done += 1
            bars += value.n_bars
            if blocks_done == len(metas):
                timings["blocks"] = time.perf_counter() - started
        else:
            owner_of[future.key] = value
            owners_done += 1
        if on_progress is not None:
            on_progress(bars, blocks_done, owners_done, total)
    block_outputs = [meta_of[m.key] for m in metas]
    owner_outputs = [owner_of[o.key] for o in owners]
    timings["owners"] = time.perf_counter() - started
    after = _usage_of(client)
    run = PartitionedRun(
        ReplayTotals(),
        mode,
        n_workers,
        p,
        len(blocks),
        owners=owner_outputs,
        driver_cpu=_cpu_seconds() - driver_before,
        worker_cpu=sum(cpu - before.get(w, (0.0, 0))[0] for w, (cpu, _) in after.items()),
        worker_peak_rss=[rss for _, rss in after.values()],
        timings=timings,
    )
    return run, block_outputs, owner_outputs


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def worker_usage() -> tuple[float, int]:
    """On a worker: its CPU seconds so far and its peak resident bytes (VmHWM)."""
    peak = 0
    with contextlib.suppress(OSError), open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return _cpu_seconds(), peak


def _usage_of(client: Client) -> dict[str, tuple[float, int]]:
    """Per worker (CPU seconds, peak RSS); empty when the workers cannot say."""
    with contextlib.suppress(Exception):
        return {str(k): (float(v[0]), int(v[1])) for k, v in client.run(worker_usage).items()}
    return {}
