"""`make bench-kafka`, end of day: how long a desk waits for the day's results.

A desk's end of day, on the defaults: one `sfa run` instance (a real subprocess, every
setting at its default) holds 1,600 symbols x 10 years of history on 8 partitions,
loaded as keyed arrays (one symbol-year a message). Each following trading day then
arrives in one of two shapes, alternately:
* `snapshot`: one unkeyed array of the day's 1,600 bars (most of them forwarded: two
  hops, the input and the repartition topic);
* `keyed`: 1,600 one-bar messages, each on its symbol's owner partition (one hop).
The clock runs from the produce call to the last of the day's 1,600 results visible to a
`read_committed` reader that itself waits at most 5 ms per fetch. Then the instance is
SIGKILLed and restarted under the same SFA_INSTANCE_ID: the time to /readyz 200, and
to the next day's results (produced at the restart), both from the restart.

Timings are wall clock on a shared 2-core machine: the table prints each day, the p50
and the max, never a single best run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from bench.kafka import cleanup, create_input_topic
from service.market import MarketDay, generate_days, symbol_names
from service.ownership import owner
from service.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
#: Goals (issue 21): p50 and max per day shape, seconds; the restart's two figures.
DAY_GOALS = {"snapshot": (0.4, 0.8), "keyed": (0.25, 0.5)}
READY_GOAL_S, NEXT_DAY_GOAL_S = 3.0, 5.0


@dataclass
class Reader:
    """A read_committed reader of the output topic from its end: (as_of, symbol) -> the
    monotonic time the result was first seen."""

    bootstrap: str
    topic: str
    partitions: int
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"sfa-eod-reader-{uuid.uuid4()}",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_END) for p in range(self.partitions)]
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._consumer.consume(10_000, 0.005):
                if m.error() is not None:
                    continue
                now = time.monotonic()
                result = orjson.loads(m.value() or b"{}")
                with self._lock:
                    day = self.seen.setdefault(result["as_of"], {})
                    day.setdefault(result["symbol"], now)

    def wait_for(self, date: str, count: int, timeout: float) -> float:
        """The time the `count`-th symbol of `date` was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                day = self.seen.get(date, {})
                if len(day) >= count:
                    return max(day.values())
            time.sleep(0.002)
        raise TimeoutError(f"{len(self.seen.get(date, {}))}/{count} results of {date}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def _bars(names: list[str], day: MarketDay) -> list[dict[str, object]]:
    closes = (day.close / 100).tolist()
    return [{"symbol": s, "date": day.date, "close": c} for s, c in zip(names, closes, strict=True)]


def load_history(
    producer: Producer, topic: str, names: list[str], days: list[MarketDay], partitions: int
) -> int:
    """Keyed arrays, one per symbol and year, each on its symbol's owner."""
    by_year: dict[str, list[MarketDay]] = {}
    for day in days:
        by_year.setdefault(day.date[:4], []).append(day)
    n = 0
    for year_days in by_year.values():
        columns = [(d.date, (d.close / 100).tolist()) for d in year_days]
        for i, symbol in enumerate(names):
            bars = [{"symbol": symbol, "date": date, "close": c[i]} for date, c in columns]
            producer.produce(
                topic, orjson.dumps(bars), key=symbol.encode(), partition=owner(symbol, partitions)
            )
            n += len(bars)
            producer.poll(0)
    producer.flush(60)
    return n


def send_day(producer: Producer, topic: str, names: list[str], day: MarketDay, shape: str) -> None:
    bars = _bars(names, day)
    if shape == "snapshot":
        producer.produce(topic, orjson.dumps(bars))  # unkeyed: the client picks
    else:
        partitions = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
        for bar in bars:
            symbol = str(bar["symbol"])
            producer.produce(
                topic, orjson.dumps(bar), key=symbol.encode(), partition=owner(symbol, partitions)
            )
    producer.flush(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Instance:
    """`sfa run` as a subprocess in its own session (SIGKILL takes its Dask workers too)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = int(env["SFA_METRICS_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "run"],
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        return time.monotonic()

    def ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sfa run exited {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return time.monotonic()
            except OSError:
                time.sleep(0.02)
        raise TimeoutError("not ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _market(args: argparse.Namespace) -> tuple[list[str], list[MarketDay], Iterator[MarketDay]]:
    names = symbol_names(args.symbols)
    every = generate_days(args.symbols, args.start_year, args.end_year + 1, args.seed)
    history: list[MarketDay] = []
    for day in every:
        if day.date[:4] == str(args.end_year + 1):
            return names, history, _chain(day, every)
        history.append(day)
    raise ValueError("no day after the history")


def _chain(first: MarketDay, rest: Iterator[MarketDay]) -> Iterator[MarketDay]:
    yield first
    yield from rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--symbols", type=int, default=1600)
    parser.add_argument("--start-year", type=int, default=2014)
    parser.add_argument("--end-year", type=int, default=2023, help="last year of history")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--days", type=int, default=10, help="days measured (half of each shape)")
    args = parser.parse_args(argv)
    settings = load_settings()
    bootstrap = settings.kafka.kafka_bootstrap_servers
    run_id = uuid.uuid4().hex[:8]
    topics = {k: f"sfa-eod-{k}-{run_id}" for k in ("in", "out", "dlq", "state")}
    create_input_topic(settings, topics["in"], args.partitions)
    names, history, coming = _market(args)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    t0 = time.monotonic()
    n = load_history(producer, topics["in"], names, history, args.partitions)
    print(
        f"history: {n:,} bars of {len(names)} symbols ({history[0].date}..{history[-1].date}) "
        f"as {len(names) * len({d.date[:4] for d in history}):,} keyed arrays on "
        f"{args.partitions} partitions, loaded in {time.monotonic() - t0:.1f} s (not timed)"
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SFA_INPUT_TOPIC": topics["in"],
        "SFA_OUTPUT_TOPIC": topics["out"],
        "SFA_DLQ_TOPIC": topics["dlq"],
        "SFA_STATE_TOPIC": topics["state"],
        "KAFKA_GROUP_ID": f"sfa-eod-{run_id}",
        "SFA_INSTANCE_ID": f"eod-{run_id}",
        "SFA_METRICS_PORT": str(_free_port()),
        "SFA_LOG_LEVEL": "WARNING",
    }
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"sfa-eod-{run_id}.log"
    instance = Instance(env, log)
    reader = Reader(bootstrap, topics["out"], args.partitions)
    times: dict[str, list[float]] = {"snapshot": [], "keyed": []}
    try:
        started = instance.start()
        instance.ready(120)
        reader.start()  # from the end: the history's results are not waited for one by one
        t0 = time.monotonic()
        _wait_caught_up(reader, history[-1].date, len(names), env, instance)
        print(
            f"caught up on the history {time.monotonic() - started:.1f} s after start (not timed)"
        )
        for i in range(args.days):
            shape = ("snapshot", "keyed")[i % 2]
            day = next(coming)
            time.sleep(1.0)  # a quiet market between two ends of day
            sent = time.monotonic()
            send_day(producer, topics["in"], names, day, shape)
            took = reader.wait_for(day.date, len(names), 60) - sent
            times[shape].append(took)
            print(f"    {day.date} {shape:<8}: all {len(names)} results after {took:.3f} s")
        instance.kill()
        day = next(coming)
        restarted = instance.start()
        send_day(producer, topics["in"], names, day, "snapshot")
        ready = instance.ready(60) - restarted
        next_day = reader.wait_for(day.date, len(names), 60) - restarted
        print(
            f"    SIGKILL, restart: ready after {ready:.2f} s; {day.date}'s snapshot "
            f"(produced at the restart) all out after {next_day:.2f} s"
        )
    finally:
        if hasattr(reader, "_thread"):
            reader.close()
        instance.stop()
        group = env["KAFKA_GROUP_ID"]
        cleanup(settings, [*topics.values(), f"{group}-repartition"], [group])
    print("\nend of day (from the produce call to the last result visible):")
    for shape, values in times.items():
        p50, worst = statistics.median(values), max(values)
        goal_p50, goal_max = DAY_GOALS[shape]
        met = p50 <= goal_p50 and worst <= goal_max
        print(
            f"    {shape:<8}: p50 {p50:.3f} s, max {worst:.3f} s over {len(values)} days"
            f"   goal p50 <= {goal_p50} s, max <= {goal_max} s: {'MET' if met else 'MISSED'}"
        )
    print(
        f"    restart : ready {ready:.2f} s (goal <= {READY_GOAL_S} s), next day "
        f"{next_day:.2f} s (goal <= {NEXT_DAY_GOAL_S} s): "
        + ("MET" if ready <= READY_GOAL_S and next_day <= NEXT_DAY_GOAL_S else "MISSED")
    )
    extra = " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"\nmeasured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `python -m bench.endofday"
        + (f" {extra}" if extra else "")
        + "`"
    )
    return 0


def _wait_caught_up(
    reader: Reader, date: str, count: int, env: dict[str, str], instance: Instance
) -> None:
    """Until the instance has emitted a result of the history's last day for every symbol
    (read from the beginning by a throwaway reader: the main one started at the end)."""
    consumer = Consumer(
        {
            "bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"],
            "group.id": f"sfa-eod-catchup-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([env["SFA_OUTPUT_TOPIC"]])
    seen: set[str] = set()
    deadline = time.monotonic() + 900
    try:
        while len(seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"caught up on {len(seen)}/{count} symbols")
            assert instance.proc is not None and instance.proc.poll() is None, "sfa run died"
            for m in consumer.consume(10_000, 0.5):
                if m.error() is None:
                    result = orjson.loads(m.value() or b"{}")
                    if result["as_of"] == date:
                        seen.add(result["symbol"])
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main())
