"""One instance of the Kafka service: consumer, shared pipeline, producer, metrics.

One consumer (group member), one producer (transactional by default), one pipeline.
The asyncio loop owns the pipeline and the state; blocking Kafka calls run on two
threads (the consumer's and the producer's), and rebalance callbacks (which librdkafka
runs inside `consume` on the consumer's thread) hop back onto the loop to drain
in-flight batches or restore state, so state is only ever touched from the loop. The
sink (`service.kafka.sink`) is built from the producer, the consumer and the topics.

Failure policy (SPEC 7):
- abortable transaction error: abort, throw the in-flight batches away, reload the
  assigned partitions' state from the state topic, rewind to the committed offsets;
- fatal or fenced: exit non-zero and let the supervisor restart us;
- SIGTERM/SIGINT: stop consuming, finish in-flight batches, commit, close, exit 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from service import __version__
from service.batches import BatchOutput, KafkaOrigin
from service.decode.pool import Decoder, decode_processes
from service.errors import ConfigError, SfaError
from service.kafka.admin import ensure_topics
from service.kafka.consumer import BatchConsumer
from service.kafka.producer import AtLeastOnceProducer, TransactionalProducer
from service.kafka.restore import read_state_partitions
from service.kafka.sink import KafkaSink, SinkTopics
from service.metrics import Health, Metrics, MetricsServer
from service.pipeline import Pipeline
from service.settings import Settings
from service.state import StateStore

__all__ = ["Service"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SHUTDOWN_GRACE_S = 25.0


class Service:
    """Wires consumer, pipeline, producer, metrics and health for one instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.params = settings.engine_params()
        self.metrics = Metrics(__version__)
        self.health = Health(stall_seconds=settings.stall_seconds)
        self.server = MetricsServer(self.metrics, self.health, port=settings.metrics_port)
        self.state = StateStore(self.params)
        self.decoder = Decoder(settings.max_message_bytes, decode_processes(settings))
        # Two threads: the consumer's runs `consume`, inside which librdkafka calls our
        # rebalance listener, which drains the pipeline, whose sink needs the producer's
        # thread. One shared thread would deadlock on every revocation.
        self._kafka = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="consumer")
        self._producing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="producer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._assigned: set[int] = set()
        self.pipeline: Pipeline | None = None
        self.compute: Any = None
        self.consumer: BatchConsumer
        self.producer: TransactionalProducer | AtLeastOnceProducer

    # --- threads ---

    async def in_kafka_thread(self, fn: Callable[[], T]) -> T:
        """Consumer and admin calls (and anything a rebalance callback may wait on)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kafka, fn)

    async def in_producer_thread(self, fn: Callable[[], T]) -> T:
        """Producer calls: transactions and flushes, never blocked behind `consume`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._producing, fn)

    def _on_loop(self, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """From a rebalance callback (Kafka thread): run on the loop and wait."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result()

    # --- rebalance listener (called on the Kafka thread inside consume) ---

    def on_assigned(self, partitions: list[tuple[str, int]]) -> None:
        numbers = [p for t, p in partitions if t == self.settings.input_topic]
        log.info("partitions assigned", extra={"partitions": numbers})
        records = list(
            read_state_partitions(self.settings, self.settings.state_topic, numbers, timeout_s=60.0)
        )

        async def apply() -> None:
            for key, value in records:
                self.state.restore(key, value)
            self._assigned.update(numbers)
            self.health.set_assigned(bool(self._assigned))

        self._on_loop(apply)
        log.info("state restored", extra={"records": len(records), "symbols": len(self.state)})

    def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        numbers = [p for t, p in partitions if t == self.settings.input_topic]
        log.info("partitions revoked", extra={"partitions": numbers})

        async def finish_and_drop() -> None:
            if self.pipeline is not None:
                with contextlib.suppress(Exception):
                    await self.pipeline.drain()  # finish in-flight work before giving them up
            for p in numbers:
                self.state.drop_partition(p)
                self._assigned.discard(p)
            self.health.set_assigned(bool(self._assigned))

        self._on_loop(finish_and_drop)

    # --- after each commit ---

    def after_commit(self, out: BatchOutput) -> None:
        m = self.metrics
        batch = out.batch
        now_ms = time.time() * 1000.0
        m.messages_consumed(self.settings.input_topic, batch.n_messages)
        m.bars_processed(out.n_bars)
        for reject in out.rejects:
            m.dead_letter(reject.reason)
        for status, n in out.statuses.items():
            m.result_produced(status, n)
            m.analyses(status, n)
        m.batch("ok")
        m.observe_batch(batch.n_messages, time.monotonic() - batch.closed_at)
        if isinstance(batch.origin, KafkaOrigin) and batch.origin.timestamps_ms:
            stamps = np.asarray(batch.origin.timestamps_ms, dtype=np.float64)
            m.observe_end_to_end((now_ms - stamps[stamps > 0]) / 1000.0)
        self.health.batch_finished()
        self._sync_fallback()

    def _sync_fallback(self) -> None:
        """The compute handle may give up on Dask mid-run (cluster lost): keep the gauge and
        /readyz telling the truth, not what was true at start."""
        fallback = bool(getattr(self.compute, "fallback_active", False))
        self.metrics.set_fallback_active(fallback)
        self.health.set_fallback_active(fallback)
        self.health.set_dask_ready(not fallback)

    # --- main loop ---

    async def serve(self) -> int:
        from service.compute.stream import open_async

        s = self.settings
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stop.set)
        log.info("starting", extra={"settings": s.redacted(), "version": __version__})
        try:
            self.server.start()
        except OSError as exc:  # port taken or not ours to bind: a config error, not a crash
            raise ConfigError(
                f"SFA_METRICS_PORT: cannot listen on port {s.metrics_port}: {exc.strerror or exc}"
            ) from None
        await self.in_kafka_thread(
            lambda: ensure_topics(s, s.input_topic, s.output_topic, s.dlq_topic, s.state_topic)
        )
        self.compute = await open_async(s)
        self._sync_fallback()
        self.metrics.set_providers(
            state=lambda: (self.state.n_symbols, self.state.n_bars, self.state.nbytes),
            lag=lambda: self.consumer.lag(),
            dask=lambda: self.compute.worker_stats(),
            inflight=lambda: self.pipeline.inflight if self.pipeline else 0,
        )
        self.health.set_lag_provider(lambda: self.consumer.lag())
        if s.processing_guarantee == "exactly_once":
            self.producer = await self.in_producer_thread(lambda: TransactionalProducer(s))
        else:
            self.producer = AtLeastOnceProducer(s)
        self.consumer = BatchConsumer(s, listener=self)
        await self.in_kafka_thread(lambda: self.consumer.subscribe([s.input_topic]))
        try:
            code = await self._consume_loop()
        finally:
            await self._shutdown()
        return code

    def _new_sink(self) -> KafkaSink:
        s = self.settings
        topics = SinkTopics(output=s.output_topic, dlq=s.dlq_topic, state=s.state_topic)
        options: dict[str, Any] = {
            "state_partition": self.state.partition_of_record,
            "run": self.in_producer_thread,
            "on_committed": self.after_commit,
        }
        producer = self.producer
        if isinstance(producer, TransactionalProducer):
            return KafkaSink.exactly_once(producer, self.consumer, topics, **options)
        return KafkaSink.at_least_once(producer, self.consumer, topics, **options)

    def _new_pipeline(self) -> Pipeline:
        return Pipeline(
            self.settings,
            self.compute,
            self._new_sink(),
            state=self.state,
            with_changelog=True,
            decoder=self.decoder,
        )

    async def _consume_loop(self) -> int:
        s = self.settings
        self.pipeline = self._new_pipeline()
        wait_s = s.batch_max_wait_ms / 1000.0
        paused = False
        while not self._stop.is_set():
            pipeline = self.pipeline
            if pipeline.failure is not None:
                await self._after_failure(pipeline.failure)
                continue
            full = pipeline.inflight >= s.max_inflight_batches
            if full != paused:  # backpressure: stay in the group, stop fetching
                await self.in_kafka_thread(
                    self.consumer.pause_all if full else self.consumer.resume_all
                )
                paused = full
            timeout = 0.05 if full else wait_s
            batch = await self.in_kafka_thread(
                functools.partial(self.consumer.poll_batch, s.batch_max_messages, timeout)
            )
            if batch is None:
                if full:
                    await asyncio.sleep(0.01)
                continue
            try:
                await pipeline.submit(batch)
            except Exception as exc:
                await self._after_failure(exc)
        return 0

    async def _after_failure(self, exc: BaseException) -> None:
        if isinstance(exc, SfaError) and exc.retriable:
            await self._recover(exc)
            return
        self.metrics.batch("failed")
        raise exc

    async def _recover(self, exc: SfaError) -> None:
        """Abortable error: abort, reload state from the state topic, rewind, go on."""
        log.warning("batch failed, rewinding to committed offsets", extra={"error": str(exc)})
        self.metrics.batch("retried")
        producer = self.producer
        if isinstance(producer, TransactionalProducer):
            with contextlib.suppress(Exception):
                await self.in_producer_thread(producer.abort)
        partitions = sorted(self._assigned)
        for p in partitions:
            self.state.drop_partition(p)
        records = await self.in_kafka_thread(
            lambda: list(
                read_state_partitions(self.settings, self.settings.state_topic, partitions, 60.0)
            )
        )
        for key, value in records:
            self.state.restore(key, value)
        await self.in_kafka_thread(self.consumer.rewind_to_committed)
        self.pipeline = self._new_pipeline()

    async def _shutdown(self) -> None:
        log.info("stopping: finishing in-flight batches")
        self.metrics.clear_providers()  # a scrape must not reach a closed consumer
        if self.pipeline is not None:
            try:
                await asyncio.wait_for(self.pipeline.drain(), SHUTDOWN_GRACE_S)
            except Exception as exc:
                log.warning("in-flight batches not committed at shutdown: %s", exc)
        with contextlib.suppress(Exception):
            await self.in_kafka_thread(self.consumer.close)
        with contextlib.suppress(Exception):
            await self.in_producer_thread(self.producer.close)
        if self.compute is not None:
            with contextlib.suppress(Exception):
                await self.compute.close()
        self.server.stop()
        self._kafka.shutdown(wait=False)
        self._producing.shutdown(wait=False)
        self.decoder.close()
        log.info("stopped")
