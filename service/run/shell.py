"""One instance of the Kafka service: carries out what `service.run.core` decides.

The shell owns the clients (consumer, producer, Dask, the probe helper) and decides
nothing: every event (a start-up step done, partitions assigned or revoked, a batch
polled or committed, a restore read, a failure, a stop request) goes to the core, and
the instructions that come back are carried out in order (`_do`).

Threads: the asyncio loop owns the core, the pipeline and the state. Blocking Kafka
calls run on daemon lanes (`service.run.lanes`): the consumer's, the producer's and
the restore's, so one call stuck on an unreachable broker can be left behind at exit.
librdkafka calls the rebalance callbacks inside `consume` on the consumer's lane; they
hop onto the loop and wait there while the core's answer is carried out (a drain
before partitions are given up must finish before the callback returns). Pause and
resume are called straight from the loop: librdkafka only queues them.

A stop request (`request_stop`, from SIGTERM/SIGINT in `service.cli.run`) is honoured
at every moment, start-up included: each start-up step and each poll races it. SIGTERM
to exit is bounded whatever the brokers do: SHUTDOWN_GRACE_S for in-flight batches,
then CLOSE_WAIT_S for the clients to close, side by side (30 s in all, inside the 45 s
grace the manifests give).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from service import __version__
from service.batches import Batch, BatchOutput, ServiceCompute
from service.decode.pool import Decoder, decode_processes
from service.errors import SfaError
from service.kafka.consumer import BatchConsumer, only_partitions
from service.kafka.errors import MemberFencedError
from service.kafka.forward import Forwarder
from service.kafka.message import KafkaOrigin
from service.kafka.producer import AtLeastOnceProducer, TransactionalProducer
from service.kafka.restore import read_state_by_partition
from service.kafka.sink import KafkaSink, SinkTopics
from service.kafka.versions import native_versions
from service.ownership import Routing
from service.pipeline import Pipeline
from service.registry import Schemas, client_from_settings
from service.run import events as ev
from service.run.accounting import Accounting
from service.run.core import STALL_S, RunCore
from service.run.lanes import Lane
from service.run.metrics import Health, Metrics
from service.run.probes import ProbeProcess
from service.run.progress import Progress
from service.run.queries import SymbolQueries
from service.run.startup import Startup
from service.run.stop import Stopped
from service.settings import Settings
from service.state import StateStore

__all__ = ["Service"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SHUTDOWN_GRACE_S = 20.0
CLOSE_WAIT_S = 10.0
_Records = dict[int, list[tuple[bytes, bytes | None]]]


class Service:
    """Wires consumer, pipeline, producer, metrics and health for one instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(
            __version__,
            topics=(settings.kafka.input_topic, settings.kafka.effective_repartition_topic),
        )
        self.health = Health(stall_seconds=settings.monitor.stall_seconds)
        # A helper process: a thread here cannot answer within 100 ms (service.run.probes).
        self.server = ProbeProcess(
            self.metrics,
            self.health,
            port=settings.monitor.metrics_port,
            host=settings.monitor.metrics_address,
        )
        self.state = StateStore(settings.engine.engine_params())
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
            schemas=Schemas(self.registry, self.registry_state) if self.registry else None,
        )
        self.core = RunCore(
            (settings.kafka.input_topic, settings.kafka.effective_repartition_topic),
            max_inflight=settings.batching.max_inflight_batches,
            with_registry=self.registry is not None,
        )
        # The consumer's lane runs `consume`, inside which librdkafka calls the rebalance
        # listener, which may drain the pipeline, whose sink needs the producer's lane.
        # One shared thread would deadlock on every revocation.
        self._kafka = Lane("sfa-consumer")
        self._producing = Lane("sfa-producer")
        self._restoring = Lane("sfa-restore")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._stop_requested: str | None = None  # set before the loop exists, too
        self._wake = asyncio.Event()
        self._full_since: float | None = None  # when the pipeline last became full
        self._exit: ev.Exit | None = None
        self._held: frozenset[int] = frozenset()
        self.routing: Routing | None = None  # known once the input's partitions are
        # symbol -> the SPEC 6 result committed last, for GET /symbols/{symbol}
        self.latest: dict[str, bytes] = {}
        self.server.set_queries(
            SymbolQueries(
                self.latest.get,
                partitions=lambda: self.routing.partitions if self.routing is not None else None,
                partitioner=settings.kafka.partitioner,
                held=lambda: self._held,
            )
        )
        self.progress = Progress()
        self.accounting = Accounting(self.metrics, self.progress)
        self._registry_problem: str | None = None
        self.pipeline: Pipeline[KafkaOrigin] | None = None
        self._failure_told: BaseException | None = None
        self.compute: ServiceCompute | None = None
        self.consumer: BatchConsumer | None = None
        self.producer: TransactionalProducer | AtLeastOnceProducer | None = None
        self._batch_ids = itertools.count(1)
        # polled, not yet submitted or discarded: the batch and the partitions it read
        self._polled: dict[int, tuple[Batch[KafkaOrigin], frozenset[ev.TP]]] = {}
        self._submitted: dict[int, int] = {}  # id(batch) -> its number, until committed
        self._restored: dict[int, _Records] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._consumer_ops: collections.deque[Callable[[BatchConsumer], None]] = collections.deque()
        self.startup = Startup(self)

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

    async def unless_stopped(self, step: Awaitable[T]) -> T:
        """`step`'s result, or `Stopped` as soon as a stop is requested (the step, if it
        runs on a lane, is left to finish on its own)."""
        if self._stop.is_set():
            if inspect.iscoroutine(step):
                step.close()  # never started: closed, or Python warns on stderr at exit
            raise Stopped
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
        raise Stopped

    # --- lanes ---

    async def in_kafka_thread(self, fn: Callable[[], T]) -> T:
        """Consumer and admin calls (and anything a rebalance callback may wait on)."""
        return await asyncio.get_running_loop().run_in_executor(self._kafka, fn)

    async def in_producer_thread(self, fn: Callable[[], T]) -> T:
        """Producer calls: transactions and flushes, never blocked behind `consume`."""
        return await asyncio.get_running_loop().run_in_executor(self._producing, fn)

    # --- the rebalance listener (on the consumer's lane, inside `consume`) ---

    def on_assigned(self, partitions: list[ev.TP]) -> None:
        self._log_rebalance("partitions assigned", partitions)
        self._from_callback(ev.Assigned(frozenset(partitions)))

    def on_revoked(self, partitions: list[ev.TP]) -> None:
        self._log_rebalance("partitions revoked", partitions)
        self._from_callback(ev.Revoked(frozenset(partitions)))

    def on_lost(self, partitions: list[ev.TP]) -> None:
        self._log_rebalance("partitions lost", partitions)
        self._from_callback(ev.Lost(frozenset(partitions)))

    def _log_rebalance(self, what: str, partitions: list[ev.TP]) -> None:
        numbers = sorted(p for t, p in partitions if t == self.settings.kafka.input_topic)
        log.info(what, extra={"partitions": numbers})

    def _from_callback(self, event: ev.Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.report(event), loop).result()
        self._apply_consumer_ops()  # before returning: nothing new is fetched unpaused

    def _queue_consumer_op(self, ins: ev.Instruction) -> None:
        match ins:
            case ev.Pause(partitions):
                self._consumer_ops.append(functools.partial(BatchConsumer.pause, p=partitions))
            case ev.Resume(partitions):
                self._consumer_ops.append(functools.partial(BatchConsumer.resume, p=partitions))
            case ev.Rewind(partitions):
                rewind = functools.partial(
                    BatchConsumer.rewind_to_committed, partitions=sorted(partitions)
                )
                self._consumer_ops.append(rewind)

    def _apply_consumer_ops(self) -> None:
        """Pause, resume and rewind, on the consumer's lane only: librdkafka blocks them
        from any other thread while a rebalance callback runs (measured: until it
        returns), and a rewind awaited from the loop inside a callback would deadlock.
        So they are queued in the order the core gave them and applied here, at the end
        of each callback and between the slices of each poll."""
        consumer = self.consumer
        while self._consumer_ops:
            op = self._consumer_ops.popleft()
            if consumer is not None:
                op(consumer)

    # --- events in, instructions out ---

    async def report(self, event: ev.Event) -> None:
        """Tell the core, then carry out its answer, in order.

        Reports run concurrently (a commit's lands while a poll's batch is being
        submitted), so the consumer operations are queued the moment the core gives
        them, before anything is awaited: queued later, a pause decided first could
        land after a resume decided since, and leave the consumer paused for good.
        """
        instructions = self.core.handle(event)
        for instruction in instructions:
            self._queue_consumer_op(instruction)
        for instruction in instructions:
            await self._do(instruction)
        self._wake.set()  # the main loop may poll now, or exit

    def _report_soon(self, event: ev.Event) -> None:
        """From synchronous code on the loop (a sink's commit callback)."""
        self._spawn(self.report(event))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal error", exc_info=task.exception())
            self._spawn(self.report(ev.Failed(task.exception() or Exception(), False)))

    async def _do(self, ins: ev.Instruction) -> None:
        match ins:
            case ev.StartStep(step):
                self._spawn(self.startup.run(step))
            case ev.Pause() | ev.Resume() | ev.Rewind():
                pass  # queued by `report`
            case ev.Restore(token, pairs):
                self._spawn(self._restore(token, sorted(pairs)))
            case ev.Apply(token, pairs):
                self._apply(self._restored.pop(token, {}), pairs)
            case ev.Drop(pairs):
                for p in pairs:
                    for symbol in self.state.symbols_of_partition(p):
                        self.latest.pop(symbol, None)
                    self.state.drop_partition(p)
            case ev.Drain(grace):
                await self._drain(grace)
            case ev.Abort():
                # The aborted batches never commit: their entries would stay for good
                # (one per abort, and a later batch can be given a freed id).
                self._submitted.clear()
                if isinstance(self.producer, TransactionalProducer):
                    with contextlib.suppress(Exception):
                        await self.in_producer_thread(self.producer.abort)
            case ev.Rejoin():
                await self._rejoin()
            case ev.NewPipeline():
                self.pipeline = self.new_pipeline()
            case ev.Submit(number, partitions):
                batch, read = self._polled.pop(number)
                if partitions != read:
                    batch = only_partitions(batch, partitions)
                await self._submit(number, batch)
            case ev.Discard(number):
                self._polled.pop(number, None)
            case ev.SetStage(stage):
                self.health.set_stage(stage)
            case ev.SetHeld(pairs):
                self._held = pairs
                self.health.set_assigned(bool(pairs))
            case ev.CountRebalance(kind):
                self.metrics.rebalance(kind)
            case ev.CountBatch(outcome):
                self.metrics.batch(outcome)
            case ev.Note(level, message, partitions):
                getattr(log, level)(message, extra={"partitions": list(partitions)})
            case ev.Exit():
                self._exit = ins
                self._wake.set()

    # --- carrying out ---

    async def _restore(self, token: int, pairs: list[int]) -> None:
        s = self.settings
        read = functools.partial(read_state_by_partition, s.kafka, s.kafka.state_topic, pairs, 60.0)
        loop = asyncio.get_running_loop()
        try:
            records = await self.unless_stopped(loop.run_in_executor(self._restoring, read))
        except Stopped:
            return
        except Exception as exc:
            await self.report(ev.Failed(exc, _retriable(exc), "restore"))
            return
        self._restored[token] = records
        await self.report(ev.Restored(token))

    def _apply(self, records: _Records, pairs: frozenset[int]) -> None:
        if not pairs:
            return
        count = self.state.restore_many(
            itertools.chain.from_iterable(records.get(p, ()) for p in sorted(pairs))
        )
        log.info("state restored", extra={"records": count, "symbols": len(self.state)})
        if self.settings.monitor.progress_seconds > 0:  # a quiet input says nothing until then
            log.info(
                "consuming %s; a progress line every %g s (SFA_PROGRESS_SECONDS)",
                self.settings.kafka.input_topic,
                self.settings.monitor.progress_seconds,
            )

    async def _rejoin(self) -> None:
        """A new consumer in place of the fenced one, joined under the same instance id.
        The old one's callbacks are cut first: what it held is gone already, and a late
        revocation from its close must not reach the core as news."""
        old = self.consumer
        self._consumer_ops.clear()  # decided for the old consumer
        self._polled.clear()
        fresh = BatchConsumer(self.settings.kafka, listener=self)
        twins = [self.settings.kafka.input_topic, self.settings.kafka.effective_repartition_topic]

        def swap() -> None:
            if old is not None:
                old.detach()
                try:
                    old.close()
                except Exception as exc:  # fenced: closing may complain; it is gone anyway
                    log.debug("closing the fenced consumer: %s", exc)
            fresh.subscribe(twins)
            # Here, on the consumer's lane: a poll queued behind this swap must find the
            # new consumer, not the one just closed.
            self.consumer = fresh

        await self.in_kafka_thread(swap)

    async def _submit(self, number: int, batch: Batch[KafkaOrigin]) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        self._submitted[id(batch)] = number
        try:
            await pipeline.submit(batch)
        except Exception:
            await self._tell_failure()

    async def _drain(self, grace: bool) -> None:
        pipeline, timed_out = self.pipeline, False
        if grace:
            log.info("stopping: finishing in-flight batches")
        if pipeline is not None:
            try:
                await asyncio.wait_for(pipeline.drain(), SHUTDOWN_GRACE_S if grace else None)
            except TimeoutError:
                timed_out = True
                log.warning("in-flight batches not committed within %s s", SHUTDOWN_GRACE_S)
            except Exception as exc:
                if grace and exc is not pipeline.failure:
                    log.warning("in-flight batches not committed at shutdown: %s", exc)
                await self._tell_failure()
        await self.report(ev.Drained(timed_out))

    async def _tell_failure(self) -> None:
        """The pipeline's failure, told to the core once."""
        pipeline = self.pipeline
        failure = pipeline.failure if pipeline is not None else None
        if failure is None or failure is self._failure_told:
            return
        self._failure_told = failure
        if isinstance(failure, MemberFencedError):  # a commit found us fenced out
            await self.report(ev.MemberFenced(failure, time.monotonic()))
            return
        if not _retriable(failure):
            log.debug("pipeline failed: %s", failure)
        else:
            log.warning(
                "batch failed, rewinding to committed offsets", extra={"error": str(failure)}
            )
        await self.report(ev.Failed(failure, _retriable(failure)))

    def after_commit(self, out: BatchOutput[KafkaOrigin]) -> None:
        """From the sink, once a batch's offsets are committed."""
        self.latest.update(out.results)
        self.accounting.committed(out)
        self.health.batch_finished()
        self.sync_fallback()
        number = self._submitted.pop(id(out.batch), None)
        if number is not None:
            self._report_soon(ev.Committed(number))

    def registry_state(self, problem: str | None) -> None:
        """From the schema cache (on the event loop): a failed lookup, or recovery."""
        was = self._registry_problem
        self._registry_problem = problem
        self.metrics.schema_registry(problem)
        self.health.set_schema_registry(problem)
        if problem is not None and was is None:
            log.warning("schema registry unreachable; retrying with backoff: %s", problem)
        elif problem is None and was is not None:
            log.info("schema registry reachable again")

    def sync_fallback(self) -> None:
        """The compute handle may give up on Dask mid-run (cluster lost): keep the gauge and
        /readyz telling the truth, not what was true at start."""
        fallback = self.compute is not None and self.compute.fallback_active
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
        progress = asyncio.ensure_future(self._report_progress())
        self._spawn(self._watch_stop())
        try:
            for instruction in self.core.begin():
                await self._do(instruction)
            while self._exit is None:
                if self.core.polling and self.consumer is not None and not self._stop.is_set():
                    await self._poll()
                else:  # starting, or stopping: the next event comes from a task
                    self._wake.clear()
                    await self._wake.wait()
        finally:
            progress.cancel()
            await self._shutdown()
        if self._exit.error is not None:
            raise self._exit.error
        return 0

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        await self.report(ev.StopRequested(self._stop_requested or "stop requested"))
        self._wake.set()

    async def _poll(self) -> None:
        s = self.settings
        await self._tell_failure()
        if not self.core.polling:
            return  # the failure just told ended the instance
        if self.core.waiting_for_room:
            await self._wait_for_room()
            return
        self._full_since = None
        full = self.core.backpressured
        wait_s = 0.05 if full else s.batching.batch_max_wait_ms / 1e3

        used: list[BatchConsumer] = []

        def poll() -> Batch[KafkaOrigin] | None:
            # The consumer as it is when the lane runs this, not when it was queued: a
            # rejoin (on the same lane) may have replaced it in between.
            consumer = self.consumer
            assert consumer is not None
            used.append(consumer)
            return consumer.poll_batch(
                s.batching.batch_max_messages, wait_s, between=self._apply_consumer_ops
            )

        try:
            batch = await self.unless_stopped(self.in_kafka_thread(poll))
        except Stopped:
            return  # a batch polled meanwhile is never committed: it is read again
        except MemberFencedError as exc:
            if used and used[0] is self.consumer:  # not the consumer a rejoin replaced
                await self.report(ev.MemberFenced(exc, time.monotonic()))
            return
        except Exception as exc:
            await self.report(ev.Failed(exc, False))
            return
        if batch is None:
            if full:
                await asyncio.sleep(0.01)
            return
        number = next(self._batch_ids)
        read = _partitions(batch)
        self._polled[number] = (batch, read)
        await self.report(ev.Polled(number, read))

    async def _wait_for_room(self) -> None:
        """Until any event (a commit frees a slot, a stop, a failure) or, once the
        pipeline has been full for `STALL_S` in all, `Stalled`. Not polling keeps what
        librdkafka prefetched, which a pause would discard."""
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        left = self._full_since + STALL_S - now
        self._wake.clear()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
                return
        await self.report(ev.Stalled())

    async def _report_progress(self) -> None:
        every = self.settings.monitor.progress_seconds
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            compute = self.compute
            fallback = compute.fallback_reason if compute and compute.fallback_active else None
            line = self.progress.line(
                self.health.total_lag(), self.pipeline.inflight if self.pipeline else 0, fallback
            )
            log.info(line.message, extra=line.fields)

    def new_pipeline(self) -> Pipeline[KafkaOrigin]:
        s = self.settings
        topics = SinkTopics(
            output=s.kafka.output_topic,
            dlq=s.kafka.dlq_topic,
            state=s.kafka.state_topic,
            repartition=s.kafka.effective_repartition_topic,
        )
        producer, consumer, compute = self.producer, self.consumer, self.compute
        assert producer is not None and consumer is not None and compute is not None
        options: dict[str, Any] = {
            "state_partition": self.state.partition_of_record,
            "run": self.in_producer_thread,
            "on_committed": self.after_commit,
        }
        if isinstance(producer, TransactionalProducer):
            sink = KafkaSink.exactly_once(producer, consumer, topics, **options)
        else:
            sink = KafkaSink.at_least_once(producer, consumer, topics, **options)
        return Pipeline(
            s,
            compute,
            sink,
            state=self.state,
            with_changelog=True,
            decoder=self.decoder,
            router=Forwarder(self.routing) if self.routing is not None else None,
        )

    async def _shutdown(self) -> None:
        self.health.set_stage("stopping")
        self.metrics.clear_providers()  # a scrape must not reach a closed consumer
        self.health.set_lag_provider(None)
        self.health.set_contact_provider(None)
        for task in list(self._tasks):
            task.cancel()
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
        for lane in (self._kafka, self._producing, self._restoring):
            lane.shutdown(wait=False)
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


def _partitions(batch: Batch[KafkaOrigin]) -> frozenset[ev.TP]:
    return frozenset(batch.origin.next_offsets())


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, SfaError) and exc.retriable


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    """An abandoned step's result or error is nobody's business any more."""
    if not task.cancelled():
        task.exception()
