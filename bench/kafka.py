"""`make bench-kafka`: the real `sfa run` service against a real broker, as a ratio.

Why a ratio: the machine is small (2 cores) and shared, so an absolute bars/s figure
says more about the neighbours than about the service. Instead, one run measures the
floor any Kafka consumer of this topic pays -- a bare `confluent_kafka` consumer that
reads the whole topic in `consume(n, timeout)` batches and runs `decode_batch` on each
(the service's own decoder) -- and then the real `Service` from `service.run`, in
this process, on the same topic: decode, validate, state, Dask analyses, results, dead
letters, state changelog and one Kafka transaction per batch (exactly_once, the
default). The goals, per feed (`GOALS`): a keyed feed of one-bar messages and the
Avro one at least 0.80 of the bare rate, a snapshot feed at least 0.60.

What is timed, and what is not:
* loading the market into the fresh input topic (keyed by symbol) is not timed;
* the bare baseline runs before *and* after the service, and the ratio uses the faster
  of the two, so noise cannot flatter the service;
* the service's clock starts when `Service.serve()` is called, so it includes start-up
  (topic checks, the Dask LocalCluster, `init_transactions`, joining the group), and
  stops when the last input offset is committed (observed in `after_commit`, which
  runs after the transaction commit returns); shutdown is reported, not counted. A
  steady-state figure (from the first poll onwards) is printed too.
* batch latency is recorded per batch, exactly (batch closed -> its output and offsets
  committed, the same quantity as the `sfa_batch_latency_seconds` histogram, without
  the bucket rounding). End-to-end (message timestamp -> commit) is printed as well,
  but the topic is loaded before the service starts, so it measures catching up on a
  backlog, not live latency.

Two feeds of the same bars, each measured the same way against its own bare baseline:
* `keyed`: one bar per message keyed by symbol on its owner partition, as `sfa produce`
  sends it (the fast path: nothing is forwarded);
* `snapshot`: one unkeyed array per date holding every symbol's bar of that day, as an
  end-of-day feed sends it (`sfa produce --snapshot`): the client spreads the arrays over
  the partitions, so most bars are read off their owner and forwarded (SPEC 7) once
  forwarding exists. Its baseline decodes the same arrays.
* `avro`: the keyed feed in the Confluent wire format (Avro against the schema registry
  at SFA_SCHEMA_REGISTRY_URL; `make bench-kafka` starts the dev one). Its baseline is a
  bare consume plus fastavro's schemaless reader on every value (the schema fetched
  once), no validation; the issue's goal is >= 0.80 of it. Skipped without a registry.
The service's clock stops once every input message is consumed and every valid bar
applied (a forwarded bar counts where it is applied, after the repartition topic).

Every topic and group is fresh (uuid names) and deleted afterwards (best effort).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import cProfile
import datetime as dt
import io
import logging
import pstats
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import fastavro
import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from service.batches import BatchOutput
from service.decode.batch import decode_batch
from service.kafka.config import client_config
from service.kafka.message import KafkaOrigin
from service.kafka.producer import AtLeastOnceProducer
from service.market import generate_bars
from service.ownership import owner
from service.pipeline import Pipeline
from service.registry import client_from_settings
from service.run.shell import Service
from service.settings import Settings, load_settings
from service.wireformat import BAR_SCHEMA_TEXT, AvroBarEncoder

#: Per feed, the least ratio to the bare consume+decode of the same topic.
GOALS = {"keyed": 0.80, "snapshot": 0.60, "avro": 0.80}
_FLUSH_EVERY = 50_000


# --- the market ---------------------------------------------------------------------


def create_input_topic(settings: Settings, topic: str, partitions: int) -> None:
    admin = AdminClient(client_config(settings.kafka))
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)])
    for future in futures.values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    while True:  # creation returns before every partition has a leader
        meta = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} not ready after 30 s")
        time.sleep(0.05)


def load_market(
    settings: Settings, topic: str, args: argparse.Namespace, partitions: int, feed: str
) -> int:
    """Produce the synthetic market (not timed); return the number of bars. `keyed`: one
    bar per message keyed by symbol on its owner (as `sfa produce`); `snapshot`: one
    unkeyed array per date (as `sfa produce --snapshot`), spread by the client."""
    producer = AtLeastOnceProducer(settings.kafka)
    dumps = orjson.dumps
    encode = _avro_encoder(settings, topic) if feed == "avro" else None
    n = 0
    day: list[dict[str, Any]] = []

    def send_day() -> None:
        producer.produce(topic, dumps(day))  # no key: the client picks the partition
        day.clear()

    try:
        for bar in generate_bars(args.symbols, args.start_year, args.end_year, args.seed):
            if feed in ("keyed", "avro"):
                symbol = bar["symbol"]
                where = owner(symbol, partitions, settings.kafka.partitioner)
                value = dumps(bar) if encode is None else encode(dumps(bar))
                producer.produce(topic, value, key=symbol.encode(), partition=where)
            else:
                if day and day[0]["date"] != bar["date"]:
                    send_day()
                day.append(bar)
            n += 1
            if n % _FLUSH_EVERY == 0:
                producer.flush_and_verify()
        if day:
            send_day()
        producer.flush_and_verify()
    finally:
        producer.close()
    return n


def _avro_encoder(settings: Settings, topic: str) -> Any:
    """The bar schema registered as `sfa produce --format avro` does; its encoder."""
    client = client_from_settings(settings.registry)
    assert client is not None
    subject = f"{topic}-value"
    client.set_compatibility(subject, "BACKWARD")
    encoder = AvroBarEncoder(client.register(subject, BAR_SCHEMA_TEXT))

    def encode(value: bytes) -> bytes:
        out = encoder.encode(value)
        assert isinstance(out, bytes), out
        return out

    return encode


def end_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer(
        {**client_config(settings.kafka), "group.id": f"sfa-bench-meta-{uuid.uuid4()}"}
    )
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


# --- the baseline: bare consume + decode --------------------------------------------


@dataclass
class BareRun:
    bars: int
    messages: int
    seconds: float
    group: str

    @property
    def rate(self) -> float:
        return self.bars / self.seconds


def _bare_avro(settings: Settings) -> Any:
    """What a bare Avro consumer does per batch: the schema fetched once (by the id of
    the first value), then fastavro's schemaless reader on every value; no validation."""
    client = client_from_settings(settings.registry)
    assert client is not None
    schemas: dict[int, Any] = {}
    read, stream = fastavro.schemaless_reader, io.BytesIO

    def decode(values: list[bytes], _max: int) -> int:
        sid = int.from_bytes(values[0][1:5], "big")
        if sid not in schemas:
            found = client.schema(sid)
            assert found is not None
            schemas[sid] = fastavro.parse_schema(orjson.loads(found.text))
        schema = schemas[sid]
        return len([read(stream(memoryview(v)[5:]), schema, None) for v in values])

    return decode


def _bare_json(values: list[bytes], max_bytes: int) -> int:
    return len(decode_batch(values, max_bytes).symbols)


def bare_consume_decode(
    settings: Settings, topic: str, total_messages: int, avro: bool = False
) -> BareRun:
    """Read the whole topic like the service does (fresh group, read_committed, earliest,
    batches of SFA_BATCH_MAX_MESSAGES), decode each batch, nothing else."""
    decode = _bare_avro(settings) if avro else _bare_json
    group = f"sfa-bench-bare-{uuid.uuid4()}"
    conf: dict[str, Any] = {
        **client_config(settings.kafka),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    }
    n_max, wait_s, max_bytes = (
        settings.batching.batch_max_messages,
        settings.batching.batch_max_wait_ms / 1000.0,
        settings.batching.max_message_bytes,
    )
    t0 = time.perf_counter()
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    messages = bars = 0
    try:
        while messages < total_messages:
            batch = consumer.consume(num_messages=n_max, timeout=wait_s)
            values = []
            for m in batch:
                if m.error() is not None:
                    raise KafkaException(m.error())
                values.append(m.value() or b"")
            if values:
                messages += len(values)
                bars += decode(values, max_bytes)
            if time.perf_counter() - t0 > 600:
                raise RuntimeError(f"bare consumer read {messages}/{total_messages} in 600 s")
        seconds = time.perf_counter() - t0
    finally:
        consumer.close()
    return BareRun(bars, messages, seconds, group)


# --- the service ----------------------------------------------------------------------


@dataclass
class ServiceRun:
    started: float = 0.0  # perf_counter at serve()
    ready: float | None = None  # consume loop about to start (start-up done)
    first_commit: float | None = None
    done: float | None = None  # every input offset committed
    stopped: float | None = None  # serve() returned
    bars: int = 0
    messages: int = 0
    rejects: int = 0
    results: int = 0
    batch_latency: list[float] = field(default_factory=list)
    end_to_end: list[np.ndarray] = field(default_factory=list)
    forwarded: int = 0
    exit_code: int | None = None
    retried_batches: float = 0.0
    decode_processes: int | None = None


class BenchService(Service):
    """The real Service; it only watches commits and stops once everything is committed.

    `after_commit` runs on the loop right after `KafkaSink` committed a batch (the
    transaction, or the offsets after a verified flush), so it is the moment to stop the
    clock and the exact per-batch latency, with no bucket rounding.
    """

    def __init__(
        self, settings: Settings, total_messages: int, total_bars: int, run: ServiceRun
    ) -> None:
        super().__init__(settings)
        self.run = run
        self._total = total_messages
        self._bars = total_bars
        self._input = settings.kafka.input_topic

    def new_pipeline(self) -> Pipeline[KafkaOrigin]:
        if self.run.ready is None:
            self.run.ready = time.perf_counter()
        return super().new_pipeline()

    def after_commit(self, out: BatchOutput[KafkaOrigin]) -> None:
        now, now_ms = time.monotonic(), time.time() * 1000.0
        super().after_commit(out)
        run, batch = self.run, out.batch
        if run.first_commit is None:
            run.first_commit = time.perf_counter()
        run.batch_latency.append(now - batch.closed_at)
        origin = batch.origin
        if origin.timestamps_ms:
            stamps = np.asarray(origin.timestamps_ms, dtype=np.float64)
            run.end_to_end.append((now_ms - stamps[stamps > 0]) / 1000.0)
        run.bars += out.n_bars  # applied here: a forwarded bar counts where it lands
        run.forwarded += sum(f.n_bars for f in out.forwards)
        if origin.topics is not None:
            run.messages += sum(1 for t in origin.topics if t == self._input)
        elif origin.topic == self._input:
            run.messages += batch.n_messages
        run.rejects += len(out.rejects)
        run.results += len(out.results)
        # The topic holds only our messages and a batch commits at most once (a retried
        # one is rewound, never counted twice), so a count is enough here -- and O(1),
        # unlike re-deriving offsets per message, which would bill the bench to the
        # service. `main` checks the group's committed offsets afterwards.
        if run.messages >= self._total and run.bars >= self._bars and run.done is None:
            run.done = time.perf_counter()
            self._stop.set()  # what SIGTERM does: finish in-flight, close, return 0

    def stop(self) -> None:
        self._stop.set()


async def _serve(svc: BenchService, timeout_s: float) -> None:
    task = asyncio.ensure_future(svc.serve())
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        print(f"    !! not finished after {timeout_s:.0f} s, stopping", file=sys.stderr)
        svc.stop()
    svc.run.exit_code = await task
    svc.run.stopped = time.perf_counter()


def run_service(
    settings: Settings, ends: dict[int, int], bars: int, timeout_s: float, profile: str | None
) -> tuple[ServiceRun, Service]:
    run = ServiceRun()
    run.started = time.perf_counter()  # Service() already starts the decoder process
    svc = BenchService(settings, sum(ends.values()), bars, run)
    decoder = getattr(svc, "decoder", None)  # helper processes, where the service has them
    run.decode_processes = getattr(decoder, "processes", None)  # 0 again once closed
    if profile is None:
        asyncio.run(_serve(svc, timeout_s))
    else:
        _profiled(svc, timeout_s, profile)
    svc.metrics.clear_providers()  # the consumer is closed: its lag provider would raise
    text = svc.metrics.render().decode()
    match = re.search(r'sfa_batches_total\{outcome="retried"\} (\S+)', text)
    run.retried_batches = float(match.group(1)) if match else 0.0
    return run, svc


def _profiled(svc: BenchService, timeout_s: float, path: str) -> None:
    """cProfile the loop thread and, separately, each one-thread executor of the service
    (consumer; producer, where it has one). Helper processes (Dask workers, the decoder)
    are not covered: their cost shows up as the loop waiting for them."""
    profiles: dict[str, cProfile.Profile] = {"loop": cProfile.Profile()}
    for attr in ("_kafka", "_producing"):  # private, so looked up defensively
        executor = getattr(svc, attr, None)
        if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            prof = profiles[attr.strip("_")] = cProfile.Profile()
            # cProfile hooks the calling thread only: enable it on the worker thread.
            executor.submit(prof.enable).result()
    profiles["loop"].enable()
    try:
        asyncio.run(_serve(svc, timeout_s))
    finally:
        profiles["loop"].disable()
    for name, prof in profiles.items():
        if name != "loop":
            with contextlib.suppress(Exception):  # from another thread: stops the dump only
                prof.disable()
        prof.dump_stats(f"{path}.{name}.prof")
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).sort_stats("tottime")
        stats.print_stats(25)
        print(f"\n--- profile: {name} thread, by own time (full: {path}.{name}.prof) ---")
        print(buf.getvalue()[:6000])


def committed_offsets(settings: Settings, group: str, topic: str, n: int) -> dict[int, int]:
    consumer = Consumer({**client_config(settings.kafka), "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(n)], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def cleanup(settings: Settings, topics: list[str], groups: list[str]) -> None:
    admin = AdminClient(client_config(settings.kafka))
    with contextlib.suppress(Exception):
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
    with contextlib.suppress(Exception):
        for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


# --- report -------------------------------------------------------------------------


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", type=int, default=200, help="market size (default 200)")
    parser.add_argument("--start-year", type=int, default=2014)
    parser.add_argument("--end-year", type=int, default=2023)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--partitions", type=int, default=8, help="input topic partitions (default 8)"
    )
    parser.add_argument(
        "--guarantee",
        choices=("exactly_once", "at_least_once"),
        default="exactly_once",
        help="SFA_PROCESSING_GUARANTEE of the service under test (default exactly_once)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="service run limit, s")
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        default=None,
        help="cProfile the service run; writes PREFIX.loop.prof and PREFIX.kafka.prof",
    )
    parser.add_argument(
        "--feed",
        choices=("all", "keyed", "snapshot", "avro"),
        default="all",
        help="keyed: one bar per message on its owner; snapshot: one array per date; "
        "avro: keyed, in wire-format Avro (needs SFA_SCHEMA_REGISTRY_URL); all: each "
        "(avro only with a registry)",
    )
    parser.add_argument("--keep-topics", action="store_true", help="do not delete topics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    extra = " ".join(sys.argv[1:] if argv is None else argv)
    command = "make bench-kafka" + (f" (python -m bench.kafka {extra})" if extra else "")
    registry = load_settings().registry.schema_registry_url is not None
    feeds: tuple[str, ...] = (args.feed,)
    if args.feed == "all":
        feeds = ("keyed", "snapshot", "avro") if registry else ("keyed", "snapshot")
    if "avro" in feeds and not registry:
        print("the avro feed needs SFA_SCHEMA_REGISTRY_URL (make bench-kafka starts one)")
        return 2
    print(
        f"market: {args.symbols} symbols x {args.start_year}-{args.end_year}, "
        f"{args.partitions} partitions, feeds {', '.join(feeds)}"
    )
    ratios = {feed: _measure(args, feed) for feed in feeds}
    print("\nsummary (ratio of a bare consume+decode of the same topic, start-up included):")
    for feed, ratio in ratios.items():
        print(f"    {feed:<9}: " + ("incomplete" if ratio is None else f"{ratio:.2f}"))
    print(f"\nmeasured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}`")
    # a MISSED goal is news, not a broken run (as in `make bench`)
    return 0 if all(r is not None for r in ratios.values()) else 1


def _measure(args: argparse.Namespace, feed: str) -> float | None:
    """One feed: load it, bare consume+decode, the service, bare again; the ratio."""
    tag = uuid.uuid4().hex[:12]
    topic = f"sfa-bench-in-{tag}"
    group = f"sfa-bench-svc-{tag}"
    settings = load_settings(
        input_topic=topic,
        output_topic=f"sfa-bench-out-{tag}",
        dlq_topic=f"sfa-bench-dlq-{tag}",
        state_topic=f"sfa-bench-state-{tag}",
        repartition_topic=f"sfa-bench-rep-{tag}",
        kafka_group_id=group,
        transactional_id=f"sfa-bench-tx-{tag}",
        processing_guarantee=args.guarantee,
        metrics_port=0,  # no HTTP endpoint to collide with a running service
    )
    topics = [
        topic,
        settings.kafka.output_topic,
        settings.kafka.dlq_topic,
        settings.kafka.state_topic,
    ]
    topics.append(settings.kafka.repartition_topic or f"sfa-bench-rep-{tag}")
    groups = [group]
    try:
        shape = {
            "keyed": "one bar per message on its owner",
            "snapshot": "an array per date",
            "avro": "one wire-format Avro bar per message on its owner",
        }[feed]
        print(f"\n=== feed {feed}: {shape}; broker {settings.kafka.kafka_bootstrap_servers}")
        create_input_topic(settings, topic, args.partitions)
        t0 = time.perf_counter()
        produced = load_market(settings, topic, args, args.partitions, feed)
        ends = end_offsets(settings, topic, args.partitions)
        print(
            f"    loaded {produced:,} bars ({sum(ends.values()):,} msgs) into {topic} in "
            f"{time.perf_counter() - t0:.1f} s (not timed); "
            f"per partition {[ends[p] for p in sorted(ends)]}"
        )
        total = sum(ends.values())

        avro = feed == "avro"
        goal = GOALS[feed]
        bare1 = bare_consume_decode(settings, topic, total, avro)
        groups.append(bare1.group)
        print(
            f"\n(a) bare consume+{'fastavro ' if avro else ''}decode, before : "
            f"{bare1.rate:>12,.0f} bars/s "
            f"({bare1.seconds:.2f} s)"
        )

        run, svc = run_service(settings, ends, produced, args.timeout, args.profile)

        bare2 = bare_consume_decode(settings, topic, total, avro)
        groups.append(bare2.group)
        print(
            f"    bare consume+decode, after  : {bare2.rate:>12,.0f} bars/s ({bare2.seconds:.2f} s)"
        )
        base = max(bare1.rate, bare2.rate)

        committed = committed_offsets(settings, group, topic, args.partitions)
        complete = run.done is not None and all(committed.get(p, -1) >= e for p, e in ends.items())
        mode = getattr(svc.compute, "mode", "?")
        if mode == "local_cluster":
            mode += f" x{settings.dask.dask_n_workers or 'default'} workers"
        if run.decode_processes is not None:
            mode += f", decode processes {run.decode_processes}"
        print(
            f"\n(b) sfa run in-process: {args.guarantee}, compute {mode}, "
            f"batches of <= {settings.batching.batch_max_messages} msgs, "
            f"<= {settings.batching.max_inflight_batches} in flight"
        )
        if not complete or run.done is None:
            print(f"    !! incomplete: committed {committed}, wanted {ends}, exit {run.exit_code}")
            return None
        wall = run.done - run.started
        startup = (run.ready or run.started) - run.started
        steady = run.done - (run.ready or run.started)
        rate = run.bars / wall
        ratio = rate / base
        lat = np.asarray(run.batch_latency)
        e2e = np.concatenate(run.end_to_end) if run.end_to_end else np.empty(0)
        print(
            f"    bars committed              : {run.bars:>12,} ({run.messages:,} msgs, "
            f"{len(lat)} batches, {run.results:,} results, {run.rejects} dead letters, "
            f"{run.retried_batches:.0f} retried, {run.forwarded:,} bars forwarded)"
        )
        print(f"    start-up (serve -> polling) : {startup:>12.2f} s")
        print(f"    wall, start-up included     : {wall:>12.2f} s")
        print(f"    end-to-end, start-up incl.  : {rate:>12,.0f} bars/s")
        print(
            f"    steady (polling -> done)    : {run.bars / steady:>12,.0f} bars/s "
            f"(ratio {run.bars / steady / base:.2f})"
        )
        print(f"    shutdown (not counted)      : {(run.stopped or run.done) - run.done:>12.2f} s")
        print(
            f"    ratio vs bare (faster one)  : {ratio:>12.2f}"
            f"   goal >= {goal:.2f}: {'MET' if ratio >= goal else 'MISSED'}"
        )
        print(
            f"    batch latency p50 / p99     : {_pct(lat, 50) * 1000:>9,.0f} ms / "
            f"{_pct(lat, 99) * 1000:,.0f} ms (exact, per batch; max {lat.max() * 1000:,.0f} ms)"
        )
        print(
            f"    msg timestamp->commit p50/99: {_pct(e2e, 50):>9,.1f} s / {_pct(e2e, 99):,.1f} s "
            "(backlog catch-up: topic loaded before start)"
        )
        return ratio
    finally:
        if not args.keep_topics:
            cleanup(settings, topics, groups)


if __name__ == "__main__":
    sys.exit(main())
