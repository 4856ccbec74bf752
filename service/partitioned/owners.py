"""One owner partition on a worker: apply its pieces in file order, analyse, encode.

Every symbol of the partition lives only here, so this is the whole single-process
replay for those symbols: the same `StateStore` (appends and corrections in bulk, numpy
per piece, a Python step per symbol and never per bar), the same engine, the same
encoder. The results are spliced exactly as the pipeline splices them
(`Pipeline._finalize`): position once per as_of day, the signal from (pattern, phase),
no `input` reference (files have none).

`emit="final"`: every piece is applied, then one result per symbol, sorted by symbol.
`emit="batch"`: a batch is a block: after each piece, one result per symbol it touched,
patterns recomputed only for the stale ones (closed windows changed), as the pipeline does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from service.compute.tasks import analyze_chunk, where_am_i
from service.encode import ResultEncoder, encode_pattern_part
from service.engine import EngineParams, PatternResult, position_of, signal_of
from service.partitioned.blocks import BlockStatus, Piece
from service.state import StateStore

__all__ = ["OwnerOutput", "counted_blocks", "run_owner"]


@dataclass(slots=True)
class OwnerOutput:
    """One partition's results (final: sorted by symbol; batch: block by block)."""

    partition: int
    symbols: list[str]
    payloads: list[bytes]
    statuses: Counter[str] = field(default_factory=Counter)
    bars: int = 0
    held_symbols: int = 0
    held_bars: int = 0
    state_bytes: int = 0
    analysed: int = 0
    seconds: float = 0.0
    executed_by: str = "local"


def counted_blocks(statuses: Sequence[BlockStatus]) -> list[bool]:
    """Which blocks count: none of a file after the block it broke in (as the
    single-process replay stops reading a file at its break)."""
    broken: set[int] = set()
    out: list[bool] = []
    for s in statuses:
        out.append(s.file_index not in broken)
        if s.broken:
            broken.add(s.file_index)
    return out


class _Emitter:
    """`Pipeline._finalize` for one partition: the caches live as long as the task."""

    def __init__(self, state: StateStore, params: EngineParams) -> None:
        self.state = state
        self.params = params
        self.encoder = ResultEncoder(params.window_days, params.alignment)
        self.positions: dict[int, tuple[str, bytes]] = {}
        self.signals: dict[str, tuple[PatternResult, str, bytes]] = {}

    def analyse(self, symbols: list[str], chunk_size: int) -> int:
        state = self.state
        for i in range(0, len(symbols), chunk_size):
            chunk = [state.windows(s) for s in symbols[i : i + chunk_size]]
            for result in analyze_chunk(chunk, self.params).results:
                state.set_pattern(result.symbol, result, encode_pattern_part(result))
        return len(symbols)

    def emit(self, symbols: list[str], out: OwnerOutput) -> None:
        state, encoder = self.state, self.encoder
        window_days = self.params.window_days
        latest, bars = state.heads(symbols)
        positions, signals = self.positions, self.signals
        for symbol, day, held in zip(symbols, latest, bars, strict=True):
            cached = state.pattern(symbol)
            if cached is None:
                raise RuntimeError(f"no pattern for {symbol}")
            pattern, part = cached
            at = positions.get(day)
            if at is None:
                position = position_of(day, window_days)
                at = positions[day] = (position.phase, encoder.position_part(position))
            phase, position_part = at
            sig = signals.get(symbol)
            if sig is None or sig[0] is not pattern or sig[1] != phase:
                sig = signals[symbol] = (
                    pattern,
                    phase,
                    encoder.signal_part(signal_of(pattern, phase)),
                )
            out.statuses[pattern.status] += 1
            out.symbols.append(symbol)
            out.payloads.append(
                encoder.splice(symbol, day, pattern.status, part, position_part, sig[2], held, None)
            )


def run_owner(
    partition: int,
    pieces: Sequence[Piece],
    statuses: Sequence[BlockStatus],
    params: EngineParams,
    emit: str,
    chunk_size: int,
) -> OwnerOutput:
    """Partition `partition`'s pieces, one per block in block order (`statuses` parallel)."""
    t0 = time.process_time()
    state = StateStore(params)
    emitter = _Emitter(state, params)
    out = OwnerOutput(partition, [], [])
    for piece, counts in zip(pieces, counted_blocks(statuses), strict=True):
        if not counts or not len(piece):
            continue
        outcome = state.apply_codes(piece.codes, piece.uniques, piece.days, piece.closes)
        out.bars += len(piece)
        if emit == "batch":
            out.analysed += emitter.analyse(outcome.stale, chunk_size)
            emitter.emit(outcome.touched, out)
    if emit != "batch":
        everything = sorted(state.symbols())
        out.analysed += emitter.analyse(everything, chunk_size)
        emitter.emit(everything, out)
    out.held_symbols = len(state)
    out.held_bars = state.n_bars
    out.state_bytes = state.nbytes
    out.seconds = time.process_time() - t0
    out.executed_by = where_am_i()
    return out
