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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.batches import Batch, BatchOutput, FileOrigin, Forward
from service.calendar import date_to_day
from service.encode import encode_forwarded_bar, encode_forwarded_bars
from service.kafka.forward import Forwarder
from service.kafka.message import KafkaOrigin
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
    placed: list[tuple[int, bytes]], seed: int, batch: int = 60
) -> tuple[dict[str, dict], list[BatchOutput]]:
    """Records (partition, value), stamped by position; read as a consumer of the input
    and the repartition topic would: any interleaving of partitions, each in order."""
    rng = random.Random(seed)
    queues: dict[tuple[str, int], deque[tuple[int, Record]]] = {}
    offsets: dict[tuple[str, int], int] = {}

    def append(topic: str, p: int, record: Record) -> None:
        offset = offsets.get((topic, p), 0)
        offsets[(topic, p)] = offset + 1
        queues.setdefault((topic, p), deque()).append((offset, record))

    for i, (p, value) in enumerate(placed):
        append("in", p, (value, 1_000 + i))
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
    assert out.forwards == [
        Forward(pa, a.encode(), b'{"symbol":"A.SH","date":"2020-01-02","close":1.25}', 111),
        Forward(
            pb,
            b.encode(),
            orjson.dumps({"symbol": b, "date": "2020-01-02", "close": 0.1 + 0.2}),
            111,
        ),
    ]
    assert orjson.loads(out.forwards[1].value)["close"] == 0.1 + 0.2  # the exact float
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


@settings(max_examples=300, deadline=None)
@given(
    bars=st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True),
            st.integers(date_to_day(dt.date(1901, 1, 1)), date_to_day(dt.date(2099, 12, 31))),
            st.floats(min_value=5e-324, allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_the_fast_forward_encoding_is_the_reference_one(bars: list[tuple[str, int, float]]) -> None:
    """The same bar as orjson writes (the text of a float may differ: 1e-05 vs 0.00001),
    and the owner decodes exactly the close read here."""
    symbols = [b[0] for b in bars]
    days = np.array([b[1] for b in bars], dtype=np.int32)
    closes = np.array([b[2] for b in bars], dtype=np.float64)
    fast = encode_forwarded_bars(symbols, days, closes)
    assert [orjson.loads(v) for v in fast] == [orjson.loads(encode_forwarded_bar(*b)) for b in bars]
    assert [orjson.loads(v)["close"] for v in fast] == closes.tolist()
