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
- a stop request (`request_stop`, from SIGTERM/SIGINT in `service.cli.run`): stop
  consuming, finish in-flight batches, commit, close, exit 0. It is honoured at every
  moment, start-up included: each start-up step and each poll races the stop request,
  and the blocking calls run on daemon threads (`service.lanes`), so a call stuck on an
  unreachable broker can be left behind instead of holding up the exit.

Nothing a scrape reads waits on a client: lag is the snapshot the consumer takes after
each poll (`BatchConsumer.last_lag`), and start-up reports its stage to /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from service import __version__
from service.batches import BatchOutput, KafkaOrigin
from service.decode.pool import Decoder, decode_processes
from service.errors import ConfigError, SfaError
from service.health import RUNNING
from service.kafka.admin import ensure_topics
from service.kafka.consumer import BatchConsumer
from service.kafka.producer import AtLeastOnceProducer, TransactionalProducer
from service.kafka.reach import check_reachable
from service.kafka.restore import read_state_partitions
from service.kafka.sink import KafkaSink, SinkTopics
from service.kafka.versions import native_versions
from service.lanes import Lane
from service.metrics import Health, Metrics
from service.ownership import Routing
from service.pipeline import Pipeline
from service.probes import ProbeProcess
from service.progress import Progress
from service.queries import SymbolQueries
from service.registry import Schemas, client_from_settings
from service.registry.schemas import wait_reachable
from service.settings import Settings
from service.state import StateStore

__all__ = ["Service"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# SIGTERM to exit is bounded whatever the brokers do (a frozen broker answers nothing):
# SHUTDOWN_GRACE_S for in-flight batches to commit, then CLOSE_WAIT_S for the clients to
# close, all at once. 30 s in all, inside the 45 s grace the manifests give.
SHUTDOWN_GRACE_S = 20.0
CLOSE_WAIT_S = 10.0


class _Stopped(Exception):
    """A stop was requested while a start-up step or a poll was still running."""


class Service:
    """Wires consumer, pipeline, producer, metrics and health for one instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.params = settings.engine.engine_params()
        self.metrics = Metrics(__version__)
        self.health = Health(stall_seconds=settings.monitor.stall_seconds)
        # A helper process: a thread here cannot answer within 100 ms (service.probes).
        self.server = ProbeProcess(
            self.metrics,
            self.health,
            port=settings.monitor.metrics_port,
            host=settings.monitor.metrics_address,
        )
        self.state = StateStore(self.params)
        # Wire-format input: schemas by id, cached, retried while the registry is down.
        self.registry = (
            client_from_settings(settings.registry)
            if settings.registry.input_format != "json"
            else None
        )
        self.decoder = Decoder(
            settings.batching.max_message_bytes,
            decode_processes(settings.batching),
            input_format=settings.registry.input_format,
            schemas=Schemas(self.registry, self._registry_state) if self.registry else None,
        )
        # Two threads: the consumer's runs `consume`, inside which librdkafka calls our
        # rebalance listener, which drains the pipeline, whose sink needs the producer's
        # thread. One shared thread would deadlock on every revocation.
        self._kafka = Lane("sfa-consumer")
        self._producing = Lane("sfa-producer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._stop_requested: str | None = None  # set before the loop exists, too
        self._assigned: set[int] = set()
        self.routing: Routing | None = None  # known once the input's partitions are
        # symbol -> the SPEC 6 result committed last, for GET /symbols/{symbol}
        self.latest: dict[str, bytes] = {}
        self.server.set_queries(
            SymbolQueries(
                self.latest.get,
                partitions=lambda: self.routing.partitions if self.routing is not None else None,
                partitioner=settings.kafka.partitioner,
                held=lambda: self._assigned,
            )
        )
        self.progress = Progress()
        self._registry_problem: str | None = None
        self.pipeline: Pipeline | None = None
        self.compute: Any = None
        self.consumer: BatchConsumer | None = None
        self.producer: TransactionalProducer | AtLeastOnceProducer | None = None

    # --- stopping ---

    def request_stop(self, why: str) -> None:
        """Ask the service to stop (from a signal handler or any thread); idempotent."""
        if self._stop_requested is None:
            self._stop_requested = why
            log.info("stopping: %s", why)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._stop.set)

    @property
    def stopping(self) -> bool:
        return self._stop_requested is not None

    async def _unless_stopped(self, step: Awaitable[T]) -> T:
        """`step`'s result, or `_Stopped` as soon as a stop is requested (the step, if it
        runs on a lane, is left to finish on its own)."""
        if self._stop.is_set():
            if inspect.iscoroutine(step):
                step.close()  # never started: closed, or Python warns on stderr at exit
            raise _Stopped
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        task.add_done_callback(_ignore_outcome)
        raise _Stopped

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
        numbers = [p for t, p in partitions if t == self.settings.kafka.input_topic]
        log.info("partitions assigned", extra={"partitions": numbers})
        stage = self.health.stage
        if not self._assigned:
            self.health.set_stage(f"restoring state of partitions {numbers}")
        records = list(
            read_state_partitions(
                self.settings.kafka, self.settings.kafka.state_topic, numbers, timeout_s=60.0
            )
        )

        async def apply() -> None:
            for key, value in records:
                self.state.restore(key, value)
            self._assigned.update(numbers)
            self.health.set_assigned(bool(self._assigned))
            self.health.set_stage(RUNNING if stage.startswith("restoring") else stage)

        self._on_loop(apply)
        log.info("state restored", extra={"records": len(records), "symbols": len(self.state)})
        if self.settings.monitor.progress_seconds > 0:  # a quiet input says nothing until then
            log.info(
                "consuming %s; a progress line every %g s (SFA_PROGRESS_SECONDS)",
                self.settings.kafka.input_topic,
                self.settings.monitor.progress_seconds,
            )

    def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        numbers = [p for t, p in partitions if t == self.settings.kafka.input_topic]
        log.info("partitions revoked", extra={"partitions": numbers})

        async def finish_and_drop() -> None:
            if self.pipeline is not None:
                with contextlib.suppress(Exception):
                    await self.pipeline.drain()  # finish in-flight work before giving them up
            for p in numbers:
                for symbol in self.state.symbols_of_partition(p):
                    self.latest.pop(symbol, None)
                self.state.drop_partition(p)
                self._assigned.discard(p)
            self.health.set_assigned(bool(self._assigned))

        self._on_loop(finish_and_drop)

    # --- after each commit ---

    def after_commit(self, out: BatchOutput) -> None:
        m = self.metrics
        batch = out.batch
        now_ms = time.time() * 1000.0
        origin = batch.origin
        if isinstance(origin, KafkaOrigin) and origin.topics is not None:
            for topic, n in Counter(origin.topics).items():
                m.messages_consumed(topic, n)
        else:
            topic = (
                origin.topic if isinstance(origin, KafkaOrigin) else self.settings.kafka.input_topic
            )
            m.messages_consumed(topic, batch.n_messages)
        m.bars_processed(out.n_bars)
        self.latest.update(out.results)
        if out.forwards:
            m.bars_forwarded(len(out.forwards))
        for reject in out.rejects:
            m.dead_letter(reject.reason)
        for status, n in out.statuses.items():
            m.result_produced(status, n)
            m.analyses(status, n)
        m.batch("ok")
        self.progress.batch_committed(batch.n_messages, out.n_bars)
        m.observe_batch(batch.n_messages, time.monotonic() - batch.closed_at)
        if isinstance(batch.origin, KafkaOrigin) and batch.origin.timestamps_ms:
            stamps = np.asarray(batch.origin.timestamps_ms, dtype=np.float64)
            m.observe_end_to_end((now_ms - stamps[stamps > 0]) / 1000.0)
        self.health.batch_finished()
        self._sync_fallback()

    def _registry_state(self, problem: str | None) -> None:
        """From the schema cache (on the event loop): a failed lookup, or recovery."""
        was = self._registry_problem
        self._registry_problem = problem
        self.metrics.schema_registry(problem)
        self.health.set_schema_registry(problem)
        if problem is not None and was is None:
            log.warning("schema registry unreachable; retrying with backoff: %s", problem)
        elif problem is None and was is not None:
            log.info("schema registry reachable again")

    def _sync_fallback(self) -> None:
        """The compute handle may give up on Dask mid-run (cluster lost): keep the gauge and
        /readyz telling the truth, not what was true at start."""
        fallback = bool(getattr(self.compute, "fallback_active", False))
        self.metrics.set_fallback_active(fallback)
        self.health.set_fallback_active(fallback)
        self.health.set_dask_ready(not fallback)

    # --- main loop ---

    async def serve(self) -> int:
        """Start, consume until stopped (0) or a fatal error (raised), shut down."""
        self._loop = asyncio.get_running_loop()
        if self._stop_requested is not None:
            self._stop.set()
        log.info(
            "starting",
            extra={
                "settings": self.settings.redacted(),
                "version": __version__,
                # A native crash leaves only a core: its backtrace needs these exact builds.
                "native": native_versions(),
            },
        )
        for name in self.settings.kafka.kafka_ignored:
            log.debug("ignoring %s: a Kubernetes service link, not a librdkafka property", name)
        progress: asyncio.Task[None] | None = None
        try:
            await self._start()
            self.health.set_stage(RUNNING)
            progress = asyncio.ensure_future(self._report_progress())
            return await self._consume_loop()
        except _Stopped:
            return 0
        finally:
            if progress is not None:
                progress.cancel()
            await self._shutdown()

    async def _start(self) -> None:
        from service.compute.stream import open_async

        s = self.settings
        stage = self.health.set_stage
        stage("starting")
        try:
            self.server.start()
        except OSError as exc:  # port taken or not ours to bind: a config error, not a crash
            raise ConfigError(
                f"SFA_METRICS_PORT: cannot listen on port {s.monitor.metrics_port}: "
                f"{exc.strerror or exc} (another sfa run on this machine? give each its "
                "own SFA_METRICS_PORT, or 0 for none)"
            ) from None
        stage(f"connecting to Kafka at {s.kafka.kafka_bootstrap_servers}")
        await self._unless_stopped(
            self.in_kafka_thread(lambda: check_reachable(s.kafka, stopped=lambda: self.stopping))
        )
        registry = self.registry
        if registry is not None:
            stage(f"connecting to the schema registry at {registry.url}")
            await self._unless_stopped(
                asyncio.to_thread(
                    wait_reachable,
                    registry,
                    s.registry.schema_registry_connect_seconds,
                    lambda: self.stopping,
                )
            )
            self._registry_state(None)
        stage("checking topics")
        partitions = await self._unless_stopped(
            self.in_kafka_thread(
                lambda: ensure_topics(
                    s.kafka,
                    s.kafka.input_topic,
                    s.kafka.output_topic,
                    s.kafka.dlq_topic,
                    s.kafka.state_topic,
                    repartition_topic=s.kafka.effective_repartition_topic,
                )
            )
        )
        self.routing = Routing(
            s.kafka.input_topic,
            s.kafka.effective_repartition_topic,
            partitions,
            s.kafka.partitioner,
        )
        stage("connecting to Dask")
        self.compute = await self._unless_stopped(open_async(s.dask))
        self._sync_fallback()
        self.metrics.set_providers(
            state=lambda: (self.state.n_symbols, self.state.n_bars, self.state.nbytes),
            lag=self._lag,
            dask=lambda: self.compute.worker_stats(),
            inflight=lambda: self.pipeline.inflight if self.pipeline else 0,
        )
        self.health.set_lag_provider(self._lag)
        self.health.set_contact_provider(self._contact_age)
        stage("starting the producer")
        if s.kafka.processing_guarantee == "exactly_once":
            self.producer = await self._unless_stopped(
                self.in_producer_thread(lambda: TransactionalProducer(s.kafka))
            )
        else:
            self.producer = AtLeastOnceProducer(s.kafka)
        stage("joining the consumer group")
        # Input partition p and repartition partition p travel as a pair (SPEC 7,
        # docs/ownership.md): the consumer reports and runs pairs only.
        twins = (s.kafka.input_topic, s.kafka.effective_repartition_topic)
        consumer = BatchConsumer(s.kafka, listener=self, twins=twins)
        self.consumer = consumer
        await self._unless_stopped(self.in_kafka_thread(lambda: consumer.subscribe(list(twins))))

    def _lag(self) -> dict[tuple[str, int], int]:
        """For scrapes: the consumer's snapshot, never a call into the client."""
        consumer = self.consumer
        return consumer.last_lag() if consumer is not None else {}

    def _contact_age(self) -> float | None:
        consumer = self.consumer
        return consumer.contact.seconds_since() if consumer is not None else None

    async def _report_progress(self) -> None:
        every = self.settings.monitor.progress_seconds
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            line = self.progress.line(
                self.health.total_lag(),
                self.pipeline.inflight if self.pipeline else 0,
                getattr(self.compute, "fallback_reason", None)
                if getattr(self.compute, "fallback_active", False)
                else None,
            )
            log.info(line.message, extra=line.fields)

    def _new_sink(self) -> KafkaSink:
        s = self.settings
        topics = SinkTopics(
            output=s.kafka.output_topic,
            dlq=s.kafka.dlq_topic,
            state=s.kafka.state_topic,
            repartition=s.kafka.effective_repartition_topic,
        )
        options: dict[str, Any] = {
            "state_partition": self.state.partition_of_record,
            "run": self.in_producer_thread,
            "on_committed": self.after_commit,
        }
        producer, consumer = self.producer, self.consumer
        assert producer is not None and consumer is not None
        if isinstance(producer, TransactionalProducer):
            return KafkaSink.exactly_once(producer, consumer, topics, **options)
        return KafkaSink.at_least_once(producer, consumer, topics, **options)

    def _new_pipeline(self) -> Pipeline:
        return Pipeline(
            self.settings,
            self.compute,
            self._new_sink(),
            state=self.state,
            with_changelog=True,
            decoder=self.decoder,
            routing=self.routing,
        )

    async def _consume_loop(self) -> int:
        s = self.settings
        consumer = self.consumer
        assert consumer is not None
        self.pipeline = self._new_pipeline()
        wait_s = s.batching.batch_max_wait_ms / 1000.0
        paused = False
        while not self._stop.is_set():
            pipeline = self.pipeline
            if pipeline.failure is not None:
                await self._after_failure(pipeline.failure)
                continue
            full = pipeline.inflight >= s.batching.max_inflight_batches
            if full != paused:  # backpressure: stay in the group, stop fetching
                await self.in_kafka_thread(consumer.pause_all if full else consumer.resume_all)
                paused = full
            timeout = 0.05 if full else wait_s
            try:
                batch = await self._unless_stopped(
                    self.in_kafka_thread(
                        functools.partial(
                            consumer.poll_batch, s.batching.batch_max_messages, timeout
                        )
                    )
                )
            except _Stopped:
                break  # a batch polled meanwhile is never committed: it is read again
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
                read_state_partitions(
                    self.settings.kafka, self.settings.kafka.state_topic, partitions, 60.0
                )
            )
        )
        for key, value in records:
            self.state.restore(key, value)
        consumer = self.consumer
        assert consumer is not None
        await self.in_kafka_thread(consumer.rewind_to_committed)
        self.pipeline = self._new_pipeline()

    async def _shutdown(self) -> None:
        log.info("stopping: finishing in-flight batches")
        self.health.set_stage("stopping")
        self.metrics.clear_providers()  # a scrape must not reach a closed consumer
        self.health.set_lag_provider(None)
        self.health.set_contact_provider(None)
        if self.pipeline is not None:
            try:
                await asyncio.wait_for(self.pipeline.drain(), SHUTDOWN_GRACE_S)
            except Exception as exc:
                if exc is not self.pipeline.failure:  # that one is the exit's own line
                    log.warning("in-flight batches not committed at shutdown: %s", exc)
        # Side by side: each waits on a different thread (or the cluster), and one hung on
        # an unreachable broker must not spend the others' time.
        closes: list[Awaitable[None]] = []
        if self.consumer is not None:
            closes.append(
                self._bounded("close the consumer", self.in_kafka_thread(self.consumer.close))
            )
        if self.producer is not None:
            closes.append(
                self._bounded("close the producer", self.in_producer_thread(self.producer.close))
            )
        if self.compute is not None:
            closes.append(self._bounded("close the Dask client", self.compute.close()))
        await asyncio.gather(*closes)
        self.server.stop()
        self._kafka.shutdown(wait=False)
        self._producing.shutdown(wait=False)
        self.decoder.close()
        log.info("stopped")

    async def _bounded(self, what: str, step: Awaitable[Any]) -> None:
        """A shutdown step that may fail or hang (an unreachable broker): at most
        CLOSE_WAIT_S, then it is left behind on its daemon thread."""
        try:
            await asyncio.wait_for(step, CLOSE_WAIT_S)
        except TimeoutError:
            log.warning("could not %s within %s s; leaving it behind", what, CLOSE_WAIT_S)
        except Exception as exc:
            log.debug("could not %s: %s", what, exc)


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    """An abandoned step's result or error is nobody's business any more."""
    if not task.cancelled():
        task.exception()
