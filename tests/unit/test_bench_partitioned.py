"""The scaling model of `make bench` (e): the graph it counts and the limits it implies."""

from __future__ import annotations

from bench.partitioned import Model, model_from
from service.partitioned.plan import default_partitions, pick_block_bytes, plan_blocks


def test_the_model_counts_the_graph_the_driver_submits() -> None:
    size = 1_160_000_000
    for workers in (1, 2, 8, 32):
        blocks = len(plan_blocks(["a.jsonl"], [size], pick_block_bytes(size, workers)))
        p = default_partitions(workers)
        assert Model.tasks(size, workers) == blocks * (3 + p) + p


def test_work_divides_until_the_driver_sets_the_pace() -> None:
    model = Model(worker_s_per_m=2.0, driver_s_per_task=0.001, startup_s=2.0)
    bars, size = 10_000_000, 1_160_000_000
    assert model.seconds(bars, size, 1) == 2.0 + 20.0
    assert model.speedup(bars, size, 2) > 1.8
    # at 128 workers the getitem grid (blocks x partitions) outweighs the work per worker
    assert model.seconds(bars, size, 128) > model.seconds(bars, size, 32)


def test_start_up_is_measured_not_inferred() -> None:
    run = {
        "bars": 2_000_000,
        "worker_cpu": 5.0,
        "workers": 2,
        "seconds": 9.0,
        "import_s": 1.0,
        "timings": {"cluster": 1.5, "blocks": 6.0, "owners": 7.5, "merged": 7.6},
    }
    model = model_from(run, 0.001)
    assert model.worker_s_per_m == 2.5
    assert abs(model.startup_s - (1.0 + 1.5 + 1.4)) < 1e-9
