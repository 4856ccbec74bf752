"""The shared streamz pipeline, driven in-process (no Dask): batching and order invariance."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
from collections.abc import Sequence

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.baseline import baseline_analyze
from service.batches import Batch, BatchOutput, FileOrigin
from service.pipeline import Emit, Pipeline
from service.settings import load_settings
from tests.unit.fakes import InlineCompute, ListSink


def _run(
    values: list[bytes], batch: int | Sequence[int], emit: Emit = "batch", **env: str
) -> tuple[dict[str, dict], ListSink]:
    """The values through the pipeline in batches of `batch` messages, or of the sizes
    in `batch` taken in turn (a plan mixing one-message batches with large ones)."""
    settings = load_settings({"SFA_MAX_INFLIGHT_BATCHES": "3", "DASK_CHUNK_SIZE": "2", **env})
    sink = ListSink()
    sizes = itertools.cycle([batch] if isinstance(batch, int) else batch)

    async def go() -> None:
        pipeline = Pipeline(settings, InlineCompute(), sink, emit=emit)
        i = 0
        while i < len(values):
            chunk = values[i : i + next(sizes)]
            i += len(chunk)
            await pipeline.submit(
                Batch.of_values(chunk, FileOrigin("mem", lines=list(range(len(chunk)))))
            )
        await pipeline.finish(FileOrigin("mem"))
        await pipeline.drain()

    asyncio.run(go())
    last: dict[str, dict] = {}
    for out in sink.outputs:
        for symbol, payload in out.results:
            last[symbol] = orjson.loads(payload)
    return last, sink


def _market(seed: int, symbols: int = 3, years: tuple[int, int] = (2015, 2021)) -> list[bytes]:
    rng = random.Random(seed)
    values = []
    day = dt.date(years[0], 1, 1)
    end = dt.date(years[1], 12, 31)
    prices = {f"S{i}.SH": 10.0 + i for i in range(symbols)}
    while day <= end:
        if day.weekday() < 5:
            for symbol in prices:
                prices[symbol] *= 1 + rng.gauss(0.0003, 0.02)
                values.append(
                    orjson.dumps(
                        {"symbol": symbol, "date": day.isoformat(), "close": prices[symbol]}
                    )
                )
        day += dt.timedelta(days=1)
    return values


MARKET = _market(1)

#: Batch plans for the batching properties, sizes taken in turn: up to eleven small
#: batches (one message: a correction alone, a symbol alone; a few: one date of several
#: symbols) then a large one (many dates and symbols, a correction next to the bar it
#: corrects) or the whole rest at once. With the arrival shuffled, every small batch
#: brings an out-of-order bar that re-analyses its symbol (about a millisecond), so a
#: plan of only one-message batches cost seconds per example; ending each plan with a
#: large batch keeps the batch count to a few hundred at most. What that gives up: no
#: run of more than eleven small batches in a row.
BATCH_PLANS = st.tuples(
    st.lists(st.integers(1, 8), max_size=11),
    st.one_of(st.integers(200, 2000), st.just(10**9)),
).map(lambda plan: [*plan[0], plan[1]])


def test_one_result_per_symbol_per_batch_in_batch_order() -> None:
    last, sink = _run(MARKET, 1000)
    assert [o.seq for o in sink.outputs] == list(range(len(sink.outputs)))
    for out in sink.outputs:
        symbols = [s for s, _ in out.results]
        assert len(symbols) == len(set(symbols))
        assert sorted(symbols) == sorted({orjson.loads(v)["symbol"] for v in out.batch.messages()})
    assert set(last) == {"S0.SH", "S1.SH", "S2.SH"}
    assert all(r["status"] == "ok" for r in last.values())
    assert all(r["input"] is None for r in last.values())


def test_bad_records_never_drop_valid_neighbours() -> None:
    bad = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"symbol": "S0.SH", "date": "2016-13-01", "close": 1}),
    ]
    mixed = []
    for i, value in enumerate(MARKET):
        mixed.append(value)
        if i % 500 == 0:
            mixed.extend(bad)
    clean, _ = _run(MARKET, 700)
    dirty, sink = _run(mixed, 700)
    assert dirty == clean
    reasons = [r.reason for out in sink.outputs for r in out.rejects]
    assert reasons.count("invalid_json") == reasons.count("invalid_field:date") > 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=BATCH_PLANS, seed=st.integers(0, 2**16), corrections=st.integers(0, 30))
def test_last_result_independent_of_batching_and_order(
    batch: list[int], seed: int, corrections: int
) -> None:
    """SPEC 1: the final result depends only on the set of bars after corrections."""
    rng = random.Random(seed)
    base = _market(2, symbols=2, years=(2016, 2020))
    # Corrections: a later bar for an existing (symbol, date) wins in arrival order.
    fixes = []
    for value in rng.sample(base, corrections):
        bar = orjson.loads(value)
        bar["close"] = bar["close"] * rng.uniform(0.9, 1.1)
        fixes.append(orjson.dumps(bar))
    arrival = [*base, *fixes]
    rng.shuffle(arrival)
    final: dict[tuple[str, str], bytes] = {}
    for value in arrival:  # corrections apply in arrival order: the last one wins
        bar = orjson.loads(value)
        final[(bar["symbol"], bar["date"])] = value
    canonical = [final[key] for key in sorted(final, key=lambda k: (k[1], k[0]))]
    expected, _ = _run(canonical, 10**9)
    got, _ = _run(arrival, batch)
    assert set(got) == set(expected)
    for symbol, result in expected.items():
        assert got[symbol] == result


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=BATCH_PLANS, seed=st.integers(0, 2**16), corrections=st.integers(0, 20))
def test_emit_final_is_the_last_result_of_every_symbol(
    batch: list[int], seed: int, corrections: int
) -> None:
    """`--emit final`: one result per symbol, sorted, after the last batch, each the one
    per-batch emission ends with; awkward input (arrays of many symbols, corrections,
    bad records) included. Nothing is emitted per batch, and dead letters still are."""
    rng = random.Random(seed)
    base = _market(seed, symbols=3, years=(2015, 2020))
    fixes = []
    for value in rng.sample(base, corrections):
        bar = orjson.loads(value)
        bar["close"] *= rng.uniform(0.9, 1.1)
        fixes.append(orjson.dumps(bar))
    arrival = [*base, *fixes]
    rng.shuffle(arrival)
    # a snapshot-style array of several symbols' bars, and two bad records
    arrival[5:8] = [b"[" + b",".join(arrival[5:8]) + b"]", b"{bad", b'{"symbol": "S0.SH"}']
    per_batch, _ = _run(arrival, batch)
    final, sink = _run(arrival, batch, emit="final")
    assert all(not out.results for out in sink.outputs[:-1])
    emitted = [symbol for symbol, _ in sink.outputs[-1].results]
    assert emitted == sorted(per_batch)
    assert final == per_batch
    rejects = [r.reason for out in sink.outputs for r in out.rejects]
    assert sorted(rejects) == ["invalid_json", "missing_field:date"]


def test_emit_final_matches_the_per_row_baseline() -> None:
    """The final results against the independent per-row implementation (bench.baseline),
    on the bars that survive corrections (the last one per symbol and date wins)."""
    values = _market(7, symbols=3, years=(2012, 2021))
    fixes = [v.replace(b'"close":', b'"close":1') for v in values[::97]]  # later, higher
    final, _ = _run([*values, *fixes], 500, emit="final")
    bars: dict[tuple[str, str], float] = {}
    for value in [*values, *fixes]:
        bar = orjson.loads(value)
        bars[(bar["symbol"], bar["date"])] = bar["close"]
    params = load_settings({}).engine.engine_params()
    for symbol, result in final.items():
        rows = sorted((d, c) for (s, d), c in bars.items() if s == symbol)
        frame = pd.DataFrame(
            {"date": [dt.date.fromisoformat(d) for d, _ in rows], "close": [c for _, c in rows]}
        )
        expected = baseline_analyze(symbol, frame, params)
        assert result["status"] == expected.status
        assert tuple(result["years_analyzed"]) == expected.years
        assert expected.pattern is not None
        for name, value in result["pattern"].items():
            assert value == pytest.approx(getattr(expected.pattern, name), rel=1e-9, abs=1e-9)
        assert [k for k, _, _ in result["curve"]] == expected.curve_k.tolist()
        assert [m for _, m, _ in result["curve"]] == pytest.approx(expected.curve_mean.tolist())


def test_decoding_in_a_helper_process_changes_nothing() -> None:
    """The spawn-based decoder returns exactly what inline decoding does, in batch order."""
    from service.decode.pool import Decoder

    values = [*MARKET[:3000], b"{bad", *MARKET[3000:]]
    _, inline_sink = _run(values, 700)
    settings = load_settings({"SFA_MAX_INFLIGHT_BATCHES": "3"})
    sink = ListSink()
    decoder = Decoder(settings.batching.max_message_bytes, processes=1)

    async def go() -> None:
        pipeline = Pipeline(settings, InlineCompute(), sink, decoder=decoder)
        for i in range(0, len(values), 700):
            chunk = values[i : i + 700]
            await pipeline.submit(
                Batch.of_values(chunk, FileOrigin("m", lines=list(range(len(chunk)))))
            )
        await pipeline.drain()

    assert decoder.processes == 1
    try:
        asyncio.run(go())
    finally:
        decoder.close()
    assert [o.results for o in sink.outputs] == [o.results for o in inline_sink.outputs]
    assert [r.reason for o in sink.outputs for r in o.rejects] == ["invalid_json"]


class SlowSink:
    """Writes that take a random while, recording when each one starts and ends."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.log: list[tuple[str, int]] = []

    async def write(self, out: BatchOutput) -> None:
        self.log.append(("start", out.seq))
        await asyncio.sleep(self.rng.random() * 0.004)
        self.log.append(("end", out.seq))


def test_the_sink_sees_one_batch_at_a_time_in_batch_order() -> None:
    """The documented BatchSink contract: map_async alone would start batch k+1's write
    while batch k's was still in progress (a file sink with a thread pool then wrote
    them out of order)."""
    settings = load_settings({"SFA_MAX_INFLIGHT_BATCHES": "4", "DASK_CHUNK_SIZE": "2"})
    sink = SlowSink(7)

    async def go() -> None:
        pipeline = Pipeline(settings, InlineCompute(), sink)
        for i in range(0, 3000, 100):
            await pipeline.submit(Batch.of_values(MARKET[i : i + 100], FileOrigin("m")))
        await pipeline.drain()

    asyncio.run(go())
    expected = [(kind, seq) for seq in range(30) for kind in ("start", "end")]
    assert sink.log == expected
