"""The start-up steps `sfa run`'s core asks for, one at a time.

Each step names what it waits on in /readyz's stage while it runs, races the stop
request (a step stuck on an unreachable broker is left behind on its daemon lane),
and reports `StepDone`, or `Failed` with `during="start"`, which the core answers
with an exit. The order is the core's (`RunCore.begin`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from service.batches import ServiceCompute
from service.errors import ConfigError
from service.kafka.admin import ensure_topics
from service.kafka.consumer import BatchConsumer
from service.kafka.message import KafkaOrigin
from service.kafka.producer import AtLeastOnceProducer, TransactionalProducer
from service.kafka.reach import check_reachable
from service.ownership import Routing
from service.pipeline import Pipeline
from service.registry.client import RegistryClient
from service.registry.schemas import wait_reachable
from service.run import events as ev
from service.run.metrics import Health, Metrics
from service.run.probes import ProbeProcess
from service.run.stop import Stopped
from service.settings import Settings
from service.state import StateStore

__all__ = ["Host", "Startup"]

T = TypeVar("T")


class Host(Protocol):
    """What the steps use of the shell (`service.run.shell.Service`), and what they set."""

    settings: Settings
    server: ProbeProcess
    health: Health
    metrics: Metrics
    state: StateStore
    registry: RegistryClient | None
    routing: Routing | None
    compute: ServiceCompute | None
    producer: TransactionalProducer | AtLeastOnceProducer | None
    consumer: BatchConsumer | None
    pipeline: Pipeline[KafkaOrigin] | None

    @property
    def stopping(self) -> bool: ...
    async def unless_stopped(self, step: Awaitable[T]) -> T: ...
    async def in_kafka_thread(self, fn: Callable[[], T]) -> T: ...
    async def in_producer_thread(self, fn: Callable[[], T]) -> T: ...
    async def report(self, event: ev.Event) -> None: ...
    def registry_state(self, problem: str | None) -> None: ...
    def sync_fallback(self) -> None: ...
    def new_pipeline(self) -> Pipeline[KafkaOrigin]: ...
    def on_assigned(self, partitions: list[ev.TP]) -> None: ...
    def on_revoked(self, partitions: list[ev.TP]) -> None: ...
    def on_lost(self, partitions: list[ev.TP]) -> None: ...


class Startup:
    def __init__(self, service: Host) -> None:
        self._service = service
        self._steps: dict[ev.Step, Callable[[], Awaitable[None]]] = {
            "listen": self._listen,
            "reach": self._reach,
            "registry": self._registry,
            "topics": self._topics,
            "dask": self._dask,
            "producer": self._producer,
            "subscribe": self._subscribe,
        }

    async def run(self, step: ev.Step) -> None:
        service = self._service
        try:
            await self._steps[step]()
        except Stopped:
            return  # the core has the stop request and exits
        except Exception as exc:
            await service.report(ev.Failed(exc, False, "start"))
            return
        await service.report(ev.StepDone(step))

    async def _listen(self) -> None:
        service = self._service
        s = service.settings
        try:
            service.server.start()
        except OSError as exc:  # port taken or not ours to bind: a config error, not a crash
            raise ConfigError(
                f"SFA_METRICS_PORT: cannot listen on port {s.monitor.metrics_port}: "
                f"{exc.strerror or exc} (another sfa run on this machine? give each its "
                "own SFA_METRICS_PORT, or 0 for none)"
            ) from None

    async def _reach(self) -> None:
        service = self._service
        s = service.settings
        service.health.set_stage(f"connecting to Kafka at {s.kafka.kafka_bootstrap_servers}")
        await service.unless_stopped(
            service.in_kafka_thread(
                lambda: check_reachable(s.kafka, stopped=lambda: service.stopping)
            )
        )

    async def _registry(self) -> None:
        service = self._service
        registry = service.registry
        assert registry is not None
        service.health.set_stage(f"connecting to the schema registry at {registry.url}")
        await service.unless_stopped(
            asyncio.to_thread(
                wait_reachable,
                registry,
                service.settings.registry.schema_registry_connect_seconds,
                lambda: service.stopping,
            )
        )
        service.registry_state(None)

    async def _topics(self) -> None:
        service = self._service
        s = service.settings
        service.health.set_stage("checking topics")
        partitions = await service.unless_stopped(
            service.in_kafka_thread(
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
        service.routing = Routing(
            s.kafka.input_topic,
            s.kafka.effective_repartition_topic,
            partitions,
            s.kafka.partitioner,
        )

    async def _dask(self) -> None:
        from service.compute.stream import open_async

        service = self._service
        service.health.set_stage("connecting to Dask")
        compute = await service.unless_stopped(open_async(service.settings.dask))
        service.compute = compute
        compute.on_fallback_change = service.sync_fallback
        service.sync_fallback()
        state = service.state
        service.metrics.set_providers(
            state=lambda: (state.n_symbols, state.n_bars, state.nbytes),
            lag=self._lag,
            dask=compute.worker_stats,
            inflight=lambda: service.pipeline.inflight if service.pipeline else 0,
        )
        service.health.set_lag_provider(self._lag)
        service.health.set_contact_provider(self._contact_age)

    async def _producer(self) -> None:
        service = self._service
        s = service.settings
        service.health.set_stage("starting the producer")
        if s.kafka.processing_guarantee == "exactly_once":
            service.producer = await service.unless_stopped(
                service.in_producer_thread(lambda: TransactionalProducer(s.kafka))
            )
        else:
            service.producer = AtLeastOnceProducer(s.kafka)

    async def _subscribe(self) -> None:
        service = self._service
        s = service.settings
        service.health.set_stage("joining the consumer group")
        consumer = BatchConsumer(s.kafka, listener=service)
        service.consumer = consumer
        service.pipeline = service.new_pipeline()
        twins = [s.kafka.input_topic, s.kafka.effective_repartition_topic]
        await service.unless_stopped(service.in_kafka_thread(lambda: consumer.subscribe(twins)))

    def _lag(self) -> dict[tuple[str, int], int]:
        """For scrapes: the consumer's snapshot, never a call into the client."""
        consumer = self._service.consumer
        return consumer.last_lag() if consumer is not None else {}

    def _contact_age(self) -> float | None:
        consumer = self._service.consumer
        return consumer.contact.seconds_since() if consumer is not None else None
