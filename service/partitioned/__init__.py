"""Partitioned replay: a backfill cut into blocks and owner partitions, run by Dask workers.

The single-process replay (`service.files.replay`) reads, applies, analyses and encodes in
one driver process, so it runs at the speed of one core however many workers there are.
Here the driver only plans, tracks and merges; the work is two kinds of plain functions
that `service.compute.partitioned` hands to the workers:

    plan (driver)      files -> blocks: JSONL byte ranges cut on line boundaries, one
                       block per gzip, CSV or Parquet file                (`plan`)
    read_block (x B)   a block -> its dead letters, and its valid bars split by owner
                       partition (SPEC 7's `owner(s) = P(s) mod P`) as columns (`blocks`)
    run_owner (x P)    one owner partition's pieces of every block, in file order ->
                       state, patterns, encoded results                     (`owners`)
    merge (driver)     dead letters with absolute lines, results in the single-process
                       order, into the usual atomic outputs                  (`merge`)

Why it is the same replay: a symbol's bars all meet in one owner partition, and they are
applied there in file order (file, line, index inside an array), which is the only order
the state depends on for files (SPEC 1: every file bar has the same event stamp, so the
last one read wins). `--emit final` is therefore byte-for-byte the single-process output
(results sorted by symbol, dead letters in file order); with `--emit batch` a batch is a
block, and each symbol's last result is its final one.

Nothing here imports Dask: the tasks are ordinary functions, tested in-process against the
single-process replay (`run_inline`), and only `service.compute.partitioned` submits them.
"""

from service.partitioned.blocks import BlockOutput, Piece, read_block
from service.partitioned.inline import run_inline
from service.partitioned.merge import ReplayTotals, merge_outputs
from service.partitioned.owners import OwnerOutput, run_owner
from service.partitioned.plan import Block, plan_blocks

__all__ = [
    "Block",
    "BlockOutput",
    "OwnerOutput",
    "Piece",
    "ReplayTotals",
    "merge_outputs",
    "plan_blocks",
    "read_block",
    "run_inline",
    "run_owner",
]
