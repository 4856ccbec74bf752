"""Forwarding (SPEC 7) and event order (SPEC 1) through the real pipeline, in-process.

A small simulated Kafka drives the pipeline: four input partitions holding a market
spread over them at random (as unkeyed messages and mixed-symbol arrays are), each
record stamped in line order as `sfa produce` stamps, read in a random interleaving of
partitions; the bars each batch forwards land on a simulated repartition topic, read
back in the same random way. The last result per symbol must equal the replay of the
same lines, corrections included, whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import deque

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.batches import Batch, BatchOutput, FileOrigin
from service.calendar import date_to_day
from service.kafka import forward
from service.kafka.forward import Forwarder
from service.kafka.message import KafkaOrigin
from service.kafka.repartition import ForwardedBars, decode_record, encode_record
from service.ownership import Routing, owner
from service.pipeline import Pipeline
from service.settings import load_settings
from tests.unit.fakes import InlineCompute, ListSink
from tests.unit.test_pipeline import _market

N = 4
ROUTING = Routing("in", "rep", N)
SETTINGS = load_settings({"SFA_MAX_INFLIGHT_BATCHES": "2", "DASK_CHUNK_SIZE": "4"})


def _last(outputs: list[BatchOutput]) -> dict[str, dict]:
    last: dict[str, dict] = {}
    for out in outputs:
        for symbol, payload in out.results:
            result = orjson.loads(payload)
            result.pop("input")
            last[symbol] = result
    return last


def _replay(lines: list[bytes]) -> dict[str, dict]:
    sink = ListSink()

    async def go() -> None:
        pipeline = Pipeline(SETTINGS, InlineCompute(), sink)
        for i in range(0, len(lines), 400):
            chunk = lines[i : i + 400]
            await pipeline.submit(Batch.of_values(chunk, FileOrigin("mem", first_line=i + 1)))
        await pipeline.drain()

    asyncio.run(go())
    return _last(sink.outputs)


Record = tuple[bytes, int]  # value, timestamp


def _through_kafka(
    placed: list[tuple[int, bytes]], seed: int, batch: int = 60, stamps: list[int] | None = None
) -> tuple[dict[str, dict], list[BatchOutput]]:
    """Records (partition, value), stamped by position (or `stamps`); read as a consumer
    of the input and the repartition topic would: any interleaving of partitions, each
    in order."""
    rng = random.Random(seed)
    queues: dict[tuple[str, int], deque[tuple[int, Record]]] = {}
    offsets: dict[tuple[str, int], int] = {}

    def append(topic: str, p: int, record: Record) -> None:
        offset = offsets.get((topic, p), 0)
        offsets[(topic, p)] = offset + 1
        queues.setdefault((topic, p), deque()).append((offset, record))

    for i, (p, value) in enumerate(placed):
        append("in", p, (value, stamps[i] if stamps is not None else 1_000 + i))
    sink = ListSink()

    async def go() -> None:
        pipeline = Pipeline(SETTINGS, InlineCompute(), sink, router=Forwarder(ROUTING))
        seen = 0
        while any(queues.values()):
            values, topics, parts, offs, stamps = [], [], [], [], []
            for _ in range(rng.randint(1, batch)):
                ready = [tp for tp, q in queues.items() if q]
                if not ready:
                    break
                topic, p = rng.choice(ready)
                offset, (value, ts) = queues[(topic, p)].popleft()
                values.append(value)
                topics.append(topic)
                parts.append(p)
                offs.append(offset)
                stamps.append(ts)
            origin = KafkaOrigin(topics[0], parts, offs, stamps, topics=topics)
            await pipeline.submit(Batch.of_values(values, origin))
            await pipeline.drain()  # its forwards are "committed": readable now
            for out in sink.outputs[seen:]:
                for fwd in out.forwards:
                    append("rep", fwd.partition, (fwd.value, fwd.timestamp_ms))
            seen = len(sink.outputs)

    asyncio.run(go())
    return _last(sink.outputs), sink.outputs


def _with_corrections(lines: list[bytes], seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    fixes = []
    for line in rng.sample(lines, n):
        bar = orjson.loads(line)
        bar["close"] = round(bar["close"] * rng.uniform(0.5, 1.5), 4)
        fixes.append(orjson.dumps(bar))
    return lines + fixes


MARKET = _with_corrections(_market(7, symbols=5, years=(2016, 2020)), seed=1, n=60)
EXPECTED = _replay(MARKET)


def test_routing_marks_only_input_bars_off_their_owner() -> None:
    symbols = ["A.SH", "B.SH", "C.SH"]
    owners = [owner(s, N) for s in symbols]
    codes = np.array([0, 1, 2, 0], dtype=np.int32)
    on_owner = np.array([owners[0], owners[1], owners[2], owners[0]], dtype=np.int32)
    assert ROUTING.to_forward(codes, symbols, on_owner, True) is None  # well keyed
    off = (on_owner + 1) % N
    mask = ROUTING.to_forward(codes, symbols, off, True)
    assert mask is not None and mask.tolist() == [True] * 4
    assert ROUTING.to_forward(codes, symbols, off, False) is None  # from the repartition topic
    mixed = np.array([True, False, True, False])
    mask = ROUTING.to_forward(codes, symbols, off, mixed)
    assert mask is not None and mask.tolist() == [True, False, True, False]


def test_a_batch_forwards_misplaced_bars_and_applies_the_rest() -> None:
    a, b = "A.SH", "B.SH"
    pa, pb = owner(a, N), owner(b, N)
    other = next(p for p in range(N) if p not in (pa, pb))
    snapshot = orjson.dumps(
        [
            {"symbol": a, "date": "2020-01-02", "close": 1.25, "volume": 3},
            {"symbol": b, "date": "2020-01-02", "close": 0.1 + 0.2},
            {"symbol": b, "date": "bad", "close": 1},
        ]
    )
    keyed_a = orjson.dumps({"symbol": a, "date": "2020-01-03", "close": 2.0})
    origin = KafkaOrigin("in", [other, pa], [7, 9], [111, 222])
    sink = ListSink()

    async def go() -> None:
        pipeline = Pipeline(SETTINGS, InlineCompute(), sink, router=Forwarder(ROUTING))
        await pipeline.submit(Batch.of_values([snapshot, keyed_a], origin))
        await pipeline.drain()

    asyncio.run(go())
    [out] = sink.outputs
    assert pa != pb  # the symbols were picked so: one record each
    assert [(f.partition, f.key, f.timestamp_ms, f.n_bars) for f in out.forwards] == [
        (pa, None, 111, 1),
        (pb, None, 111, 1),
    ]
    sent = [decode_record(f.value) for f in out.forwards]
    assert [(r.topic, r.uniques, r.days.tolist()) for r in sent] == [
        ("in", [a], [date_to_day(dt.date(2020, 1, 2))]),
        ("in", [b], [date_to_day(dt.date(2020, 1, 2))]),
    ]
    assert [r.closes.tolist() for r in sent] == [[1.25], [0.1 + 0.2]]  # the exact float
    # Each bar's read position: partition `other`, offset 7, its place in the array.
    assert [(r.partitions.tolist(), r.offsets.tolist(), r.ordinals.tolist()) for r in sent] == [
        ([other], [7], [0]),
        ([other], [7], [1]),
    ]
    assert [r.stamps.tolist() for r in sent] == [[111], [111]]
    assert [s for s, _ in out.results] == [a]  # only what was applied here
    assert orjson.loads(out.results[0][1])["input"] == {"topic": "in", "partition": pa, "offset": 9}
    assert out.n_bars == 1
    assert [(r.index, r.array_index, r.reason) for r in out.rejects] == [
        (0, 2, "invalid_field:date")
    ]  # dead-lettered where it was read, never forwarded


def test_nothing_is_forwarded_for_a_well_keyed_feed() -> None:
    placed = [(owner(orjson.loads(v)["symbol"], N), v) for v in MARKET]
    last, outputs = _through_kafka(placed, seed=3, batch=400)
    assert not any(out.forwards for out in outputs)
    assert last == EXPECTED


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16))
def test_any_placement_and_interleaving_gives_the_replayed_results(seed: int) -> None:
    """Corrections travel on other partitions than the bars they correct, some through
    the repartition topic (so they may arrive before them): event order still wins."""
    rng = random.Random(seed)
    placed = [(rng.randrange(N), v) for v in MARKET]
    last, outputs = _through_kafka(placed, seed=seed)
    assert sum(len(out.forwards) for out in outputs) > 0
    assert last == EXPECTED
    applied = sum(out.n_bars for out in outputs)
    assert applied == len(MARKET)  # every bar applied once, by its owner


def _snapshots(lines: list[bytes], rng: random.Random) -> list[bytes]:
    """Consecutive lines as arrays of 1-5 bars (several symbols in one message)."""
    messages, i = [], 0
    while i < len(lines):
        k = rng.randint(1, 5)
        chunk = lines[i : i + k]
        messages.append(chunk[0] if k == 1 and len(chunk) == 1 else b"[" + b",".join(chunk) + b"]")
        i += k
    return messages


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), per_record=st.sampled_from([1, 2, 5, 6000]))
def test_any_feed_shape_and_any_grouping_into_records_gives_the_replayed_results(
    seed: int, per_record: int
) -> None:
    """Snapshots of several symbols on any partition, corrections with equal timestamps
    (three messages in a row share a stamp and a partition, so read order decides) and
    with later ones, bars grouped into forwarded records 1, 2, 5 or 6,000 at a time: the
    final results are replay's."""
    rng = random.Random(seed)
    messages = _snapshots(MARKET, rng)
    placed, stamps = [], []
    for i, value in enumerate(messages):
        block = i // 3
        placed.append((random.Random(seed * 7919 + block).randrange(N), value))
        stamps.append(1_000 + block)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(forward, "MAX_BARS_PER_RECORD", per_record)
        last, outputs = _through_kafka(placed, seed=seed, stamps=stamps)
    forwards = [f for out in outputs for f in out.forwards]
    assert forwards and max(f.n_bars for f in forwards) <= per_record
    assert last == _replay(messages) == EXPECTED


def _one_batch(values: list[bytes], origin: KafkaOrigin) -> BatchOutput:
    sink = ListSink()

    async def go() -> None:
        pipeline = Pipeline(SETTINGS, InlineCompute(), sink, router=Forwarder(ROUTING))
        await pipeline.submit(Batch.of_values(values, origin))
        await pipeline.drain()

    asyncio.run(go())
    [out] = sink.outputs
    return out


def _record_for(symbol: str, stamp: int) -> bytes:
    bars = ForwardedBars(
        topic="in",
        uniques=[symbol],
        codes=np.zeros(2, np.int32),
        days=np.array([date_to_day(dt.date(2020, 1, 2)), date_to_day(dt.date(2020, 1, 3))]),
        closes=np.array([1.5, 2.5]),
        stamps=np.array([stamp, stamp], np.int64),
        partitions=np.zeros(2, np.int32),
        offsets=np.array([4, 4], np.int64),
        ordinals=np.array([0, 1], np.int32),
    )
    return encode_record(bars)


def test_a_record_it_cannot_read_is_one_dead_letter_and_the_rest_goes_on() -> None:
    a = "A.SH"
    pa = owner(a, N)
    good = _record_for(a, 500)
    truncated = good[:-3]
    keyed = orjson.dumps({"symbol": a, "date": "2020-01-06", "close": 3.0})
    origin = KafkaOrigin(
        "in", [pa, pa, pa], [0, 1, 2], [900, 901, 902], topics=["rep", "rep", "in"]
    )
    out = _one_batch([truncated, good, keyed], origin)
    assert [(r.index, r.array_index, r.reason, r.raw) for r in out.rejects] == [
        (0, None, "invalid_forward", truncated)
    ]
    assert out.n_bars == 3  # the good record's two bars and the keyed one
    [(symbol, payload)] = out.results
    result = orjson.loads(payload)
    assert (symbol, result["as_of"], result["bars_in_state"]) == (a, "2020-01-06", 3)
    assert result["input"] == {"topic": "in", "partition": pa, "offset": 2}


def test_a_version_0_record_still_reads_and_a_bad_one_is_invalid_forward() -> None:
    """What the service wrote before the columnar format: one JSON bar a record. A
    rolling upgrade finds some on the topic; they are bars, and a bad one is ours."""
    a = "A.SH"
    pa = owner(a, N)
    v0 = orjson.dumps({"symbol": a, "date": "2020-01-02", "close": 1.0})
    bad = b'{"symbol":"A.SH","date":"nope","close":1}'
    origin = KafkaOrigin("rep", [pa, pa], [0, 1], [100, 101])
    out = _one_batch([v0, bad], origin)
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "invalid_forward")]
    assert out.n_bars == 1 and not out.forwards
    # Mixed with a columnar record, the same.
    origin = KafkaOrigin("rep", [pa, pa, pa], [0, 1, 2], [100, 101, 102])
    out = _one_batch([v0, bad, _record_for(a, 50)], origin)
    assert [(r.index, r.reason) for r in out.rejects] == [(1, "invalid_forward")]
    assert out.n_bars == 3


def test_snapshots_too_big_for_one_record_are_split_to_fit() -> None:
    """Three snapshots of 10,000 bars of 32-character symbols in one batch, read off
    partition 0: each other partition's share (about 7,500 bars) needs two records, and
    every record stays under the broker's default 1 MB, with every bar in one of them."""
    symbols = [f"{i:032d}" for i in range(10_000)]
    snapshots = [
        orjson.dumps([{"symbol": s, "date": f"2020-01-0{d}", "close": 1.0} for s in symbols])
        for d in (2, 3, 6)
    ]
    assert max(map(len, snapshots)) < 1024 * 1024  # each message is within SPEC 1's limit
    out = _one_batch(snapshots, KafkaOrigin("in", [0, 0, 0], [0, 1, 2], [100, 100, 100]))
    assert out.n_bars + sum(f.n_bars for f in out.forwards) == 30_000
    per_partition = {p: 3 * sum(owner(s, N) == p for s in symbols) for p in range(1, N)}
    records = {p: [f for f in out.forwards if f.partition == p] for p in per_partition}
    for p, count in per_partition.items():
        assert count > forward.MAX_BARS_PER_RECORD  # the case this test is for
        assert len(records[p]) == -(-count // forward.MAX_BARS_PER_RECORD)
        assert sum(f.n_bars for f in records[p]) == count
    assert max(len(f.value) for f in out.forwards) < 1_000_000
    back = [decode_record(f.value) for f in out.forwards]
    sent = sorted(
        (r.uniques[c], int(d)) for r in back for c, d in zip(r.codes, r.days, strict=True)
    )
    assert sent == sorted(
        (s, date_to_day(dt.date(2020, 1, d))) for d in (2, 3, 6) for s in symbols if owner(s, N)
    )
