"""The one streamz graph shared by `sfa replay` and `sfa run`.

    source.emit(Batch[OriginT])   (OriginT: the source's origin, which the sink's type names too)
      -> _decode    map_async: the payload to a DecodedBatch (service.decode.pool:
                    inline or a helper process; a replay batch arrives decoded)
      -> _prepare   map: route (the source's Router, if any: Kafka forwards bars read
                    off a partition not their owner's), apply to the state
                    (service.state), snapshot what the results need, cut the stale
                    symbols' windows into chunks
      -> _dispatch  map: start the chunks on the compute layer (service.compute.stream:
                    scatter, submit; retries and fallback are its business)
      -> buffer(SFA_MAX_INFLIGHT_BATCHES)
      -> _collect   map_async: await the chunks' patterns
      -> _finish    map_async(parallelism=1): position and signal for every touched
                    symbol, encode results (service.encode), then the sink's write
                    (a file, or one Kafka transaction per batch)
      -> _release   sink: free the in-flight slot, tell `on_delivered`

Batches are formed *before* the graph (the Kafka consumer's bounded `consume`, the
file reader's line batches): one streamz element per batch, never per message, since
a per-element hop costs microseconds and the hot path is per message.

Ordering: `prepare` runs in batch order and snapshots what the batch's results need
(latest, bars held, input position), so later batches can be applied while earlier ones
are still on the workers; `map_async(parallelism=1)` keeps `finalize`/`deliver` in batch
order, and only `finalize` writes the pattern cache, so a batch that changed no closed
window reuses exactly the pattern its predecessor left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal

import numpy as np
from streamz import Stream

from service.batches import (
    Batch,
    BatchOutput,
    BatchSink,
    Compute,
    Forward,
    OriginT,
    Router,
)
from service.compute.tasks import ChunkResult
from service.decode.pool import Decoder
from service.decode.types import DecodedBatch
from service.encode import ResultEncoder, encode_pattern_part
from service.engine import PatternResult, SymbolWindows, position_of, signal_of
from service.engine.position import bars_since_festival, festival_of_window
from service.errors import SfaError
from service.settings import Settings
from service.state import StateStore

__all__ = ["Emit", "Pipeline"]

_SIGNAL_CACHE_LIMIT = 100_000  # symbols; bounds what revoked partitions leave behind

#: Per batch (every touched symbol's result after each batch) or once, at `finish`.
Emit = Literal["batch", "final"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Dropped:
    """A batch the pipeline gave up on (`error`, or an earlier batch's failure). It goes
    on down the graph, past every stage, only so that `_release` frees its slot: once a
    batch fails, nothing after it is written (the driver rewinds or exits)."""

    error: BaseException


@dataclass(slots=True)
class _Touched:
    """What the batch's results need from the state as it was right after the batch:
    per touched symbol (parallel lists, since a batch of a whole market touches
    thousands), its latest day, bars held, last message (-1: none) and bars since the
    festival (`window_day` in trading alignment, SPEC 5)."""

    symbols: list[str]
    latest: list[int]
    bars: list[int]
    message_index: list[int]
    post_bars: list[int]


@dataclass(slots=True)
class _Prepared(Generic[OriginT]):
    seq: int
    batch: Batch[OriginT]
    decoded: DecodedBatch
    touched: _Touched
    chunks: list[list[SymbolWindows]]
    state_records: list[tuple[bytes, bytes]]
    prepared_at: float
    forwards: list[Forward]
    n_bars: int
    pending: Awaitable[list[ChunkResult]] | None = None


class Pipeline(Generic[OriginT]):
    """Feed `Batch`es with `submit`; results reach the sink in batch order.

    `submit` returns once the batch is accepted, waiting while
    `max_inflight_batches` are already in flight (backpressure for the source).
    A failure anywhere stops the pipeline: `submit` and `drain` re-raise it.
    """

    def __init__(
        self,
        settings: Settings,
        compute: Compute | Callable[[], Awaitable[Compute]],
        sink: BatchSink[OriginT],
        state: StateStore | None = None,
        on_delivered: Callable[[BatchOutput[OriginT]], None] | None = None,
        with_changelog: bool = False,
        decoder: Decoder | None = None,
        router: Router[OriginT] | None = None,
        emit: Emit = "batch",
    ) -> None:
        """`router`: the stage a source hands in to forward bars that belong elsewhere
        (Kafka: `service.kafka.forward.Forwarder`, SPEC 7); None (files): every bar is
        applied.

        `emit="final"` (replay backfills): batches only update the state; `finish()`
        then emits one result per held symbol. Each equals the last result per-batch
        emission would have given that symbol, since after the last batch that touched
        a symbol nothing about it changes; the patterns are computed once, not per
        closed year."""
        self.settings = settings
        self.params = settings.engine.engine_params()
        self._encoder = ResultEncoder(self.params.window_days, self.params.alignment)
        self.state = state if state is not None else StateStore(self.params)
        self._compute = compute
        self._compute_ready: Compute | None = None
        self._sink = sink
        self._on_delivered = on_delivered
        self._with_changelog = with_changelog
        self._router = router
        self._decoder = (
            decoder if decoder is not None else Decoder(settings.batching.max_message_bytes)
        )
        self._signals: dict[str, tuple[PatternResult, str, bytes]] = {}
        self._emit_final = emit == "final"
        self._final: Batch[OriginT] | None = None  # the marker batch `finish` submits
        self._seq = 0
        self._max_inflight = settings.batching.max_inflight_batches
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()  # set whenever a slot may have freed up
        self._failure: BaseException | None = None
        self._deliver_lock = asyncio.Lock()

        # map_async queues never fill (parallelism > in-flight cap): a full one busy-waits.
        lanes = self._max_inflight + 1
        self.source = Stream(asynchronous=True)
        (
            self.source.map_async(self._decode, parallelism=lanes)
            .map(self._prepare)
            .map(self._dispatch)
            .buffer(self._max_inflight)
            .map_async(self._collect, parallelism=lanes)
            .map_async(self._finish, parallelism=1)
            .sink(self._release)
        )

    # --- driver side ---

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped this pipeline, if any; the driver decides what follows."""
        return self._failure

    async def submit(self, batch: Batch[OriginT]) -> None:
        self._raise_if_failed()
        while self._inflight >= self._max_inflight and self._failure is None:
            self._room.clear()
            await self._room.wait()
        self._raise_if_failed()
        self._inflight += 1
        self._idle.clear()
        try:
            await self.source.emit(batch)
        except Exception as exc:
            self._fail(exc)
        self._raise_if_failed()

    async def finish(self, origin: OriginT) -> None:
        """With `emit="final"`: after every batch, one result per held symbol (sorted),
        delivered like a batch's (its `on_delivered` sees a batch of 0 messages)."""
        if not self._emit_final:
            return
        empty = DecodedBatch(
            codes=np.empty(0, np.int32),
            uniques=[],
            days=np.empty(0, np.int32),
            closes=np.empty(0),
            message_index=np.empty(0, np.int32),
            rejects=[],
        )
        self._final = Batch.of_decoded(empty, 0, 0, origin)
        await self.submit(self._final)
        await self.drain()

    async def drain(self) -> None:
        """Wait until every submitted batch has been delivered (or the pipeline failed)."""
        while self._inflight and self._failure is None:
            await asyncio.wait_for(self._idle.wait(), timeout=None)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _drop(self, exc: BaseException) -> _Dropped:
        """Fail the pipeline; the batch flows on as `_Dropped` to free its slot."""
        self._fail(exc)
        return _Dropped(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            # An SfaError is a verdict we wrote (fenced, broker gone, not authorized): the
            # driver that decides what follows reports it, once. Anything else is a bug:
            # keep its trace here, where it happened.
            if isinstance(exc, SfaError):
                log.debug("pipeline stopped: %s", exc)
            else:
                log.error("pipeline stopped: %s", exc, exc_info=exc)
            self._failure = exc
        self._idle.set()
        self._room.set()

    # --- graph nodes ---

    async def _decode(
        self, batch: Batch[OriginT]
    ) -> tuple[Batch[OriginT], DecodedBatch] | _Dropped:
        payload = batch.payload
        try:
            if isinstance(payload, DecodedBatch):
                return batch, payload
            if isinstance(payload, bytes):
                return batch, await self._decoder.decode_lines(payload)
            if self._router is not None:
                return batch, await self._router.decode(batch, self._decoder)
            return batch, await self._decoder.decode(payload)
        except Exception as exc:
            return self._drop(exc)

    def _prepare(
        self, item: tuple[Batch[OriginT], DecodedBatch] | _Dropped
    ) -> _Prepared[OriginT] | _Dropped:
        if isinstance(item, _Dropped):
            return item
        if self._failure is not None:
            return _Dropped(self._failure)
        try:
            return self._prepare_decoded(*item)
        except Exception as exc:  # an exception here would kill streamz's worker loop
            return self._drop(exc)

    def _prepare_decoded(self, batch: Batch[OriginT], decoded: DecodedBatch) -> _Prepared[OriginT]:
        seq = self._seq
        self._seq += 1
        partition: int | np.ndarray = -1
        stamps: int | np.ndarray = 0  # files: every bar alike, so arrival (line) order decides
        forwards: list[Forward] = []
        arrival = batch.origin.arrival(decoded.message_index) if len(decoded) else None
        if arrival is not None:
            partition, stamps = arrival
            if decoded.stamps is not None:
                stamps = decoded.stamps
            if self._router is not None:
                decoded, partition, stamps, forwards = self._router.route(
                    batch.origin, decoded, partition, stamps
                )
        state = self.state
        outcome = state.apply_codes(
            decoded.codes, decoded.uniques, decoded.days, decoded.closes, partition, stamps
        )
        if not self._emit_final:
            touched_symbols, stale_symbols = outcome.touched, outcome.stale
        elif batch is self._final:
            touched_symbols = stale_symbols = sorted(state.symbols())
        else:
            touched_symbols = stale_symbols = []
        latest, bars = state.heads(touched_symbols)
        message_index = [-1] * len(touched_symbols)
        if arrival is not None and len(decoded) and touched_symbols:
            # message indexes grow along the batch, so the max per code is the last one
            last = np.full(len(decoded.uniques), -1, dtype=np.int64)
            np.maximum.at(last, decoded.codes, decoded.message_index)
            last_msg = dict(zip(decoded.uniques, last.tolist(), strict=True))
            message_index = [last_msg.get(s, -1) for s in touched_symbols]
        post = self._post_bars(touched_symbols, latest)
        touched = _Touched(touched_symbols, latest, bars, message_index, post)
        stale = [state.windows(s) for s in stale_symbols]
        size = self.settings.dask.dask_chunk_size
        chunks = [stale[i : i + size] for i in range(0, len(stale), size)]
        records = state.changelog_records(outcome) if self._with_changelog else []
        return _Prepared(
            seq,
            batch,
            decoded,
            touched,
            chunks,
            records,
            time.monotonic(),
            forwards,
            len(decoded),
        )

    def _dispatch(self, prepared: _Prepared[OriginT] | _Dropped) -> _Prepared[OriginT] | _Dropped:
        if isinstance(prepared, _Prepared) and prepared.chunks:
            prepared.pending = asyncio.ensure_future(self._run(prepared.chunks))
        return prepared

    async def _run(self, chunks: list[list[SymbolWindows]]) -> list[ChunkResult]:
        if self._compute_ready is None:
            compute = self._compute
            if callable(compute) and not hasattr(compute, "run_chunks"):
                compute = await compute()
            self._compute_ready = compute
        assert self._compute_ready is not None
        return await self._compute_ready.run_chunks(chunks, self.params)

    async def _collect(
        self, prepared: _Prepared[OriginT] | _Dropped
    ) -> tuple[_Prepared[OriginT], list[ChunkResult]] | _Dropped:
        if isinstance(prepared, _Dropped):
            return prepared
        try:
            results = await prepared.pending if prepared.pending is not None else []
        except Exception as exc:
            return self._drop(exc)
        return prepared, results

    def _post_bars(self, symbols: list[str], latest: list[int]) -> list[int]:
        """Each symbol's bars since its festival, which `window_day` counts in trading
        alignment once the festival has passed (0 otherwise: then it is not used). Only
        symbols whose latest day lies in a window on or after its festival need a look
        at their days, a few weeks a year."""
        if self.params.alignment != "trading":
            return [0] * len(symbols)
        w = self.params.window_days
        after: dict[int, bool] = {}
        out: list[int] = []
        for symbol, day in zip(symbols, latest, strict=True):
            flag = after.get(day)
            if flag is None:
                festival = festival_of_window(day, w)
                flag = after[day] = festival is not None and day >= festival
            out.append(bars_since_festival(self.state.windows(symbol).days, day, w) if flag else 0)
        return out

    async def _finish(
        self, item: tuple[_Prepared[OriginT], list[ChunkResult]] | _Dropped
    ) -> BatchOutput[OriginT] | _Dropped:
        if isinstance(item, _Dropped):
            return item
        if self._failure is not None:
            return _Dropped(self._failure)
        prepared, chunk_results = item
        # map_async starts the next batch's task before this one is done; the lock (its
        # waiters queue in arrival order) makes finalize + write one batch at a time.
        async with self._deliver_lock:
            if self._failure is not None:
                return _Dropped(self._failure)
            try:
                out = self._finalize(prepared, chunk_results)
                t0 = time.monotonic()
                await self._sink.write(out)
                out.timings["deliver"] = time.monotonic() - t0
                out.timings["batch_latency"] = time.monotonic() - prepared.batch.closed_at
            except Exception as exc:
                return self._drop(exc)
        return out

    def _finalize(
        self, prepared: _Prepared[OriginT], chunk_results: list[ChunkResult]
    ) -> BatchOutput[OriginT]:
        state = self.state
        fresh: dict[str, PatternResult] = {}
        executed_by: set[str] = set()
        for chunk in chunk_results:
            executed_by.add(chunk.executed_by)
            for result in chunk.results:
                fresh[result.symbol] = result
                state.set_pattern(result.symbol, result, encode_pattern_part(result))
        input_ref = prepared.batch.origin.input_ref
        window_days = self.params.window_days
        encoder = self._encoder
        splice = encoder.splice
        pattern_of = state.pattern
        signals = self._signals
        if len(signals) > _SIGNAL_CACHE_LIMIT:
            signals.clear()
        # The symbols of a batch share a few as_of days: position once per day.
        positions: dict[tuple[int, int], tuple[str, bytes]] = {}
        statuses: Counter[str] = Counter()
        results: list[tuple[str, bytes]] = []
        t = prepared.touched
        alignment = self.params.alignment
        for symbol, latest, bars, msg, post in zip(
            t.symbols, t.latest, t.bars, t.message_index, t.post_bars, strict=True
        ):
            cached = pattern_of(symbol)
            if cached is None:
                raise RuntimeError(f"no pattern for {symbol}: the state lost it mid-batch")
            pattern, part = cached
            at = positions.get((latest, post))
            if at is None:
                position = position_of(latest, window_days, alignment, post)
                at = positions[latest, post] = (position.phase, encoder.position_part(position))
            phase, position_part = at
            # The signal depends only on (pattern, phase), and both change rarely: reuse
            # its fragment while the symbol's pattern object and phase are the same.
            sig = signals.get(symbol)
            if sig is None or sig[0] is not pattern or sig[1] != phase:
                sig = signals[symbol] = (
                    pattern,
                    phase,
                    encoder.signal_part(signal_of(pattern, phase)),
                )
            status = pattern.status
            statuses[status] += 1
            payload = splice(
                symbol,
                latest,
                status,
                part,
                position_part,
                sig[2],
                bars,
                input_ref(msg) if msg >= 0 else None,
            )
            results.append((symbol, payload))
        return BatchOutput(
            seq=prepared.seq,
            batch=prepared.batch,
            results=results,
            rejects=prepared.decoded.rejects,
            state_records=prepared.state_records,
            n_bars=prepared.n_bars,
            statuses=statuses,
            executed_by=frozenset(executed_by),
            analysed=len(fresh),
            timings={},
            forwards=prepared.forwards,
        )

    def _release(self, out: BatchOutput[OriginT] | _Dropped) -> None:
        if isinstance(out, BatchOutput) and self._on_delivered is not None:
            try:
                self._on_delivered(out)
            except Exception as exc:  # a broken progress callback must not lose data
                log.warning("on_delivered callback failed: %s", exc)
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()
        self._room.set()
