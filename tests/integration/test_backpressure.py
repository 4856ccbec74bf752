"""A full pipeline keeps its prefetch; a pipeline stuck full polls paused, then resumes.

In-process `Service` against the real broker, its analyses held at a gate: at
SFA_MAX_INFLIGHT_BATCHES the shell stops polling and leaves the partitions fetching
(a pause would make librdkafka discard what it prefetched); once the pipeline has been
full for `STALL_S` it pauses them and polls again (librdkafka leaves the group of a
member that does not poll for `max.poll.interval.ms`), and once the gate opens they
resume and the whole input is committed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from service.kafka.consumer import BatchConsumer
from service.ownership import owner
from service.pipeline import Pipeline
from service.run import shell
from service.run.core import STALL_S
from service.settings import load_settings
from tests.integration.conftest import ServiceTopicsFactory

PARTITIONS = 2


class GatedPipeline(Pipeline[Any]):
    """Every batch waits at the gate before its analyses are collected."""

    gate: asyncio.Event

    async def _collect(self, item: Any) -> Any:
        await self.gate.wait()
        return await super()._collect(item)


def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        symbol = f"S{i % 20:02d}.SH"
        bar = {"symbol": symbol, "date": f"2021-01-{1 + i // 20:02d}", "close": 1.0 + i}
        producer.produce(
            topic,
            orjson.dumps(bar),
            key=symbol.encode(),
            partition=owner(symbol, PARTITIONS),
        )
    producer.flush(30)


def _all_committed(bootstrap: str, group: str, topic: str) -> bool:
    """The group's committed offsets (read with a member that never subscribes) are the
    end of every partition."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = reader.committed(tps, timeout=10)
        ends = [reader.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
    finally:
        reader.close()
    return [tp.offset for tp in committed] == ends


def test_a_full_pipeline_keeps_fetching_until_stalled_then_polls_paused_and_resumes(
    kafka_bootstrap: str, service_topics: ServiceTopicsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = service_topics(PARTITIONS)
    _produce(kafka_bootstrap, t["input"], 400)
    settings = load_settings(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_GROUP_ID": t["group"],
            "SFA_INPUT_TOPIC": t["input"],
            "SFA_OUTPUT_TOPIC": t["output"],
            "SFA_DLQ_TOPIC": t["dlq"],
            "SFA_STATE_TOPIC": t["state"],
            "SFA_MAX_INFLIGHT_BATCHES": "1",
            "SFA_BATCH_MAX_MESSAGES": "50",
            "SFA_METRICS_PORT": "0",
            "SFA_PROGRESS_SECONDS": "0",
            "DASK_ENABLE_DISTRIBUTED": "false",
        }
    )
    polls: list[float] = []
    poll_batch = BatchConsumer.poll_batch

    def counted(self: BatchConsumer, *args: Any, **kwargs: Any) -> Any:
        polls.append(time.monotonic())
        return poll_batch(self, *args, **kwargs)

    monkeypatch.setattr(BatchConsumer, "poll_batch", counted)
    monkeypatch.setattr(shell, "Pipeline", GatedPipeline)
    svc = shell.Service(settings)
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        GatedPipeline.gate = asyncio.Event()
        task = asyncio.ensure_future(svc.serve())
        try:
            deadline = time.monotonic() + 60
            while not svc.core.inflight:  # the first batch is held at the gate
                assert not task.done(), "the service ended before its first batch"
                assert time.monotonic() < deadline, "no batch submitted within 60 s"
                await asyncio.sleep(0.02)
            full_at = time.monotonic()
            await asyncio.sleep(STALL_S / 2)
            seen["fetching while full"] = set(svc.core.fetching)
            seen["waiting"] = svc.core.waiting_for_room
            while svc.core.fetching and time.monotonic() < full_at + 4 * STALL_S:
                await asyncio.sleep(0.02)
            seen["paused after"] = time.monotonic() - full_at
            seen["fetching when stalled"] = set(svc.core.fetching)
            await asyncio.sleep(1.0)
            # a poll already running when the pipeline filled may end inside the window
            seen["polls while full"] = sum(
                1 for p in polls if full_at + 0.6 < p < full_at + STALL_S * 0.9
            )
            seen["polls when stalled"] = sum(1 for p in polls if p > full_at + STALL_S)
            GatedPipeline.gate.set()
            while not _all_committed(kafka_bootstrap, t["group"], t["input"]):
                assert not task.done(), "the service ended before committing its input"
                assert time.monotonic() < full_at + 60, "the input was not all committed"
                await asyncio.sleep(0.2)
        finally:
            GatedPipeline.gate.set()
            svc.request_stop("test over")
            seen["exit"] = await asyncio.wait_for(task, 60)

    asyncio.run(scenario())
    assert seen["waiting"], "a full pipeline should wait for room, not poll"
    assert seen["fetching while full"], "paused at once: the prefetch would be discarded"
    assert seen["polls while full"] == 0
    assert seen["paused after"] >= STALL_S * 0.9
    assert not seen["fetching when stalled"], f"not paused after {seen['paused after']:.1f} s"
    assert seen["polls when stalled"] > 0, "stalled, and not polling to keep its membership"
    assert seen["exit"] == 0
