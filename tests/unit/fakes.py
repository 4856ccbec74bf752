"""Shared test doubles for the decision cores and the pipeline: no broker, no cluster.

They stand in for what the pure code *asks of* the I/O shells (a clock, a compute layer,
a sink, the producer and consumer calls the Kafka sink makes), never for librdkafka
itself: behaviour that crosses Kafka is tested against the real broker in
tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from service.batches import BatchOutput
from service.compute.tasks import ChunkResult, analyze_chunk
from service.engine import EngineParams, SymbolWindows

__all__ = [
    "CallLog",
    "FakeClock",
    "FakeConsumer",
    "FakeProducer",
    "InlineCompute",
    "ListSink",
]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InlineCompute:
    """Runs chunks in the calling process: the pipeline's `Compute` without a cluster."""

    def __init__(self) -> None:
        self.calls = 0

    async def run_chunks(
        self, chunks: list[list[SymbolWindows]], params: EngineParams
    ) -> list[ChunkResult]:
        self.calls += 1
        await asyncio.sleep(0)
        return [analyze_chunk(chunk, params) for chunk in chunks]


class ListSink:
    """Keeps every delivered batch, in delivery order."""

    def __init__(self) -> None:
        self.outputs: list[BatchOutput] = []

    async def write(self, out: BatchOutput) -> None:
        await asyncio.sleep(0)
        self.outputs.append(out)


CallLog = list[tuple[Any, ...]]


class FakeProducer:
    """Records the Kafka sink's producer calls, in order, into a shared `CallLog`.

    It offers both delivery modes' calls (transactions; flush and verify), so a test
    can check which ones a sink used. `fail_on` names a call that raises `error`.
    """

    def __init__(
        self, log: CallLog, fail_on: str | None = None, error: BaseException | None = None
    ) -> None:
        self.log = log
        self._fail_on = fail_on
        self._error = error or RuntimeError("injected failure")

    def _call(self, name: str, *args: Any) -> None:
        self.log.append((name, *args))
        if name == self._fail_on:
            raise self._error

    def begin(self) -> None:
        self._call("begin")

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        partition: int | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> None:
        """Logged as (produce, topic, value, key, headers, partition), plus the record
        timestamp as a seventh element when one is given (forwarded bars keep theirs)."""
        call = ("produce", topic, value, key, tuple(headers or ()), partition)
        self._call(*call, *(() if timestamp_ms is None else (timestamp_ms,)))

    def commit(self, offsets: Mapping[tuple[str, int], int], group_metadata: object) -> None:
        self._call("commit", dict(offsets), group_metadata)

    def flush_and_verify(self) -> None:
        self._call("flush_and_verify")


class FakeConsumer:
    """The consumer calls the Kafka sink makes: group metadata and offset commits."""

    GROUP_METADATA = object()

    def __init__(self, log: CallLog) -> None:
        self.log = log

    def group_metadata(self) -> object:
        return self.GROUP_METADATA

    def commit_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.log.append(("commit_offsets", dict(offsets)))
