"""The partitioned replay without Dask: every task run here, one after another.

The same functions, in the same order of dependencies, as the Dask graph of
`service.compute.partitioned`, so the tests can hold the partitioned algorithm to the
single-process replay on many small inputs (a cluster per example would cost seconds),
and the real-cluster tests need only show that Dask runs it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from service.errors import InputError
from service.partitioned.blocks import read_block
from service.partitioned.merge import PartDirectory, ReplayTotals, merge_outputs
from service.partitioned.owners import run_owner
from service.partitioned.plan import check_inputs, plan_blocks
from service.settings import Settings

__all__ = ["run_inline"]


def run_inline(
    paths: Sequence[str],
    settings: Settings,
    results: IO[bytes] | PartDirectory | None,
    errors: IO[bytes] | None,
    *,
    emit: str = "final",
    partitions: int = 4,
    block_bytes: int = 1 << 20,
) -> ReplayTotals:
    sizes, problems, groups = check_inputs(paths)
    if problems:
        raise InputError(problems[0])
    blocks = plan_blocks(paths, sizes, block_bytes, groups)
    outs = [
        read_block(
            b, partitions, settings.batching.batch_max_messages, settings.batching.max_message_bytes
        )
        for b in blocks
    ]
    statuses = [o["status"] for o in outs]
    params = settings.engine.engine_params()
    owners = [
        run_owner(p, [o[p] for o in outs], statuses, params, emit, settings.dask.dask_chunk_size)
        for p in range(partitions)
    ]
    return merge_outputs([o["meta"] for o in outs], owners, emit, results, errors)
