"""`make soak`: two `sfa run` instances fed like a live market for SOAK_MINUTES (issue 11).

The feed has a live feed's shape: one snapshot array per trading day holding every
symbol's bar, unkeyed, plus a few keyed corrections of that day's bars on their owner
partition. It cycles over a fixed market, so after the first pass the state stops
growing (a repeated day only replaces bars): any growth of memory after that is a leak,
not data.

Phases:
1. Backlog: the first pass of the market is produced at once; how fast the two
   instances drain it is the measured capacity (bars/s), and it warms the state.
2. Soak: days are fed at half that capacity for SOAK_MINUTES. Every 10 s each instance's
   RSS (its whole process tree: the service, its decode helper and probe process), open
   file descriptors, state bytes, consumer lag, the p99 of the batches finished in the
   interval and /healthz are recorded.
3. Drain: the feed stops; once lag is 0 the output is compared with `sfa replay` of the
   exact records fed, in feed order (corrections last wins).

Pass: RSS grows less than 1% over the last 30 minutes (the last half of a shorter soak;
medians of three samples at each end, with the linear trend printed), lag stays
bounded (its last-third peak is no higher than twice its first-third peak plus one day of
bars), /healthz never says stalled, no duplicate (symbol, input), and every symbol's last
result equals replay's. The report is a table on stdout and var/soak/soak.png.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from service.market import generate_days, symbol_names
from service.ownership import owner

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "soak"
_SAMPLE_S = 10.0


@dataclass
class Sample:
    t: float
    instance: int
    rss_mb: float
    fds: int
    state_mb: float
    lag: float
    p99_s: float | None
    healthy: bool


@dataclass
class Instance:
    index: int
    proc: subprocess.Popen[bytes]
    port: int
    last_buckets: dict[float, float] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _days(symbols: int, start: int, end: int) -> list[bytes]:
    """One snapshot array per trading day (`symbol_names` order)."""
    names = symbol_names(symbols)
    out = []
    for day in generate_days(symbols, start, end, seed=11):
        bars = [
            {"symbol": s, "date": day.date, "close": c}
            for s, c in zip(names, (day.close / 100).tolist(), strict=True)
        ]
        out.append(orjson.dumps(bars))
    return out


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _value(text: str, name: str) -> float:
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        total += float(m.group(1))
    return total


def _p99(text: str, inst: Instance) -> float | None:
    """p99 of the batches finished since the previous sample (bucket deltas)."""
    buckets = {
        float(m.group(1).replace("+Inf", "inf")): float(m.group(2))
        for m in re.finditer(
            r'^sfa_batch_latency_seconds_bucket\{le="([^"]+)"\} ([0-9.e+-]+)$', text, re.M
        )
    }
    delta = {le: n - inst.last_buckets.get(le, 0.0) for le, n in buckets.items()}
    inst.last_buckets = buckets
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(delta):
        if delta[le] >= 0.99 * total:
            return le
    return None


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _sample(inst: Instance, t: float) -> Sample:
    procs = _tree(inst.proc.pid)
    rss = sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
    fds = sum(p.num_fds() for p in procs if p.is_running())
    text = _metrics(inst.port)
    return Sample(
        t=t,
        instance=inst.index,
        rss_mb=rss,
        fds=fds,
        state_mb=_value(text, "sfa_state_bytes") / 2**20,
        lag=_value(text, "sfa_consumer_lag_messages"),
        p99_s=_p99(text, inst),
        healthy=_healthy(inst.port),
    )


def _committed_results(bootstrap: str, topic: str) -> tuple[dict[str, dict[str, Any]], int, int]:
    """Every symbol's last committed result (its `input` left out), the number of
    duplicate (symbol, input) pairs, and how many results were read.

    An hour's output is millions of results (14M, 44 GB of JSON at the feed rate of
    2026-12-06): they are folded as they arrive. Kept whole, they would need more memory
    than the machine; even a set of (symbol, input) pairs grew 4 KB a result, each small
    survivor pinning an allocator pool among the freed results. So a pair is kept as a
    64-bit digest in one flat array, and duplicates are counted at the end.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"soak-read-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p) for p in meta.partitions]
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    last: dict[str, dict[str, Any]] = {}
    pairs = array("Q")
    read = 0
    done = {p for p, end in ends.items() if end == 0}
    # Read to the end however long that takes, and give up only when nothing arrives for
    # a minute (a partial read would compare old results with replay's last ones and
    # call every symbol wrong).
    idle_deadline = time.monotonic() + 60
    while len(done) < len(ends):
        if time.monotonic() > idle_deadline:
            consumer.close()
            behind = sorted(set(ends) - done)
            raise RuntimeError(f"output read stalled: {read} read, partitions {behind} short")
        for msg in consumer.consume(10_000, timeout=1.0):
            idle_deadline = time.monotonic() + 60
            if msg.error():
                continue
            obj = orjson.loads(msg.value() or b"{}")
            pair = obj["symbol"].encode() + b"\0" + orjson.dumps(obj.pop("input", None))
            pairs.append(int.from_bytes(hashlib.blake2b(pair, digest_size=8).digest(), "little"))
            last[obj["symbol"]] = obj
            read += 1
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends[partition]:
                done.add(partition)
        for p, end in ends.items():
            pos = consumer.position([TopicPartition(topic, p)])[0].offset
            if pos >= end:
                done.add(p)
    consumer.close()
    print(f"read {read:,} committed results up to the end of {topic}", flush=True)
    digests = np.frombuffer(pairs, dtype=np.uint64) if read else np.empty(0, np.uint64)
    return last, read - len(np.unique(digests)), read


def _compare(bootstrap: str, topic: str, feed_path: Path) -> tuple[int, int, int]:
    """(symbols equal to `sfa replay` of the fed records, symbols replayed, duplicates)."""
    got, duplicates, _ = _committed_results(bootstrap, topic)
    reference = OUT / "replay.jsonl"
    subprocess.run(
        [sys.executable, "-m", "service", "replay", str(feed_path), "--output", str(reference)],
        check=True,
        env={**os.environ, "SFA_LOG_LEVEL": "WARNING"},
        stderr=subprocess.DEVNULL,
    )
    expected: dict[str, dict[str, Any]] = {}
    for line in reference.read_bytes().splitlines():
        obj = orjson.loads(line)
        obj.pop("input", None)
        expected[obj["symbol"]] = obj
    matching = sum(got.get(s) == r for s, r in expected.items())
    return matching, len(expected), duplicates


def _plot(samples: list[Sample], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("RSS (MiB, process tree)", "rss_mb"),
        ("state (MiB)", "state_mb"),
        ("consumer lag (messages)", "lag"),
        ("batch latency p99 (s)", "p99_s"),
        ("open file descriptors", "fds"),
    ]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 11), sharex=True)
    for ax, (title, attr) in zip(axes, series, strict=True):
        for i in sorted({s.instance for s in samples}):
            pts = [(s.t / 60, getattr(s, attr)) for s in samples if s.instance == i]
            pts = [(x, y) for x, y in pts if y is not None]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=f"sfa-{i}")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("minutes into the soak")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _rss_verdicts(samples: list[Sample]) -> list[tuple[int, float, float, float, float | None]]:
    """The table of samples, then per instance: RSS growth over the plateau window (the
    last 30 minutes, or the last half of a shorter soak: the first minutes warm caches,
    pools and allocator arenas), the lag peaks of the first and last thirds, the worst p99."""
    print("\n| t (min) | instance | RSS MiB | state MiB | lag | p99 s | fds | healthy |")
    print("|---|---|---|---|---|---|---|---|")
    for row in samples:
        p99 = f"{row.p99_s:.2f}" if row.p99_s is not None else "-"
        print(
            f"| {row.t / 60:.1f} | sfa-{row.instance} | {row.rss_mb:.1f} | {row.state_mb:.1f} | "
            f"{row.lag:.0f} | {p99} | {row.fds} | {'yes' if row.healthy else 'NO'} |"
        )
    verdicts = []
    for i in (1, 2):
        mine = [s for s in samples if s.instance == i]
        end = mine[-1].t
        window = [s for s in mine if s.t >= end - min(30 * 60, end / 2)] or mine
        start_rss = statistics.median(s.rss_mb for s in window[:3])
        end_rss = statistics.median(s.rss_mb for s in window[-3:])
        growth = (end_rss / start_rss - 1) * 100
        slope = (
            float(np.polyfit([s.t / 60 for s in window], [s.rss_mb for s in window], 1)[0])
            if len(window) > 2
            else 0.0
        )
        third = max(1, len(mine) // 3)
        lag_first = max(s.lag for s in mine[:third])
        lag_last = max(s.lag for s in mine[-third:])
        p99s = [s.p99_s for s in mine if s.p99_s is not None]
        verdicts.append((i, growth, lag_first, lag_last, max(p99s) if p99s else None))
        print(
            f"sfa-{i}: RSS over the last {(end - window[0].t) / 60:.0f} min {growth:+.2f}% "
            f"({start_rss:.1f} -> {end_rss:.1f} MiB, trend {slope:+.2f} MiB/min), "
            f"lag peak first third {lag_first:.0f} / last third {lag_last:.0f}, worst interval p99 "
            f"{max(p99s) if p99s else float('nan'):.2f} s",
            flush=True,
        )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--symbols", type=int, default=int(os.environ.get("SOAK_SYMBOLS", 300)))
    parser.add_argument("--years", type=int, default=int(os.environ.get("SOAK_YEARS", 12)))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--compare-run",
        metavar="RUN_ID",
        help="only compare the output of an earlier run (topics soak-*-RUN_ID, still on the "
        "broker) with sfa replay of var/soak/fed.jsonl.gz, for a run whose harness died "
        "after the feed",
    )
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    if args.compare_run:
        matching, n_expected, duplicates = _compare(
            bootstrap, f"soak-out-{args.compare_run}", OUT / "fed.jsonl.gz"
        )
        print(f"output: {matching}/{n_expected} symbols equal to replay, {duplicates} duplicates")
        return 0 if matching == n_expected and duplicates == 0 else 1
    run_id = uuid.uuid4().hex[:8]
    topics = {n: f"soak-{n}-{run_id}" for n in ("in", "out", "dlq", "state", "rep")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topics["in"], args.partitions, 1)]).values():
        f.result(30)

    OUT.mkdir(parents=True, exist_ok=True)
    # An hour at half capacity is ~140M bars: 31 GB of JSON, and as much again in the
    # input topic. Both are compressed (gzip level 1, lz4), which the first hour-long
    # run lacked when it filled the disk at minute 44.
    feed_path = OUT / "fed.jsonl.gz"
    (OUT / "fed.jsonl").unlink(missing_ok=True)
    days = _days(args.symbols, 2024 - args.years + 1, 2024)
    names = symbol_names(args.symbols)
    rng = random.Random(5)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "acks": "all",
            "compression.type": "lz4",
        }
    )
    fed = gzip.open(feed_path, "wb", compresslevel=1)  # noqa: SIM115 (closed after the feed)
    # Strictly increasing per record, starting an hour back: never in the future, and well
    # inside the dev broker's 24 h retention.
    stamp = [int(time.time() * 1000) - 3_600_000]

    def send(value: bytes, key: bytes | None, partition: int | None) -> None:
        stamp[0] += 1
        kwargs: dict[str, Any] = {"key": key, "timestamp": stamp[0]}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topics["in"], value, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        fed.write(value + b"\n")

    def feed_day(i: int, cycle: int) -> int:
        snapshot = days[i]
        send(snapshot, None, None)
        bars = orjson.loads(snapshot)
        n = len(bars)
        for j in rng.sample(range(n), max(1, n // 100)):  # 1% keyed corrections
            fix = {**bars[j], "close": round(bars[j]["close"] * (1 + 0.001 * (cycle + 1)), 2)}
            send(orjson.dumps(fix), names[j].encode(), owner(names[j], args.partitions))
        return n + max(1, n // 100)

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_GROUP_ID": f"soak-{run_id}",
        "SFA_INPUT_TOPIC": topics["in"],
        "SFA_OUTPUT_TOPIC": topics["out"],
        "SFA_DLQ_TOPIC": topics["dlq"],
        "SFA_STATE_TOPIC": topics["state"],
        "SFA_REPARTITION_TOPIC": topics["rep"],
        # SOAK_LOG_LEVEL=INFO keeps the progress lines and, with SFA_TRACEMALLOC_SECONDS,
        # the tracemalloc reports (service/memtrace.py) in var/soak/sfa-N.log.
        "SFA_LOG_LEVEL": os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
        "SFA_STALL_SECONDS": "60",
    }
    instances: list[Instance] = []
    for i in (1, 2):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "run"],
            env={**env, "SFA_INSTANCE_ID": f"soak-{run_id}-{i}", "SFA_METRICS_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=(OUT / f"sfa-{i}.log").open("wb"),
        )
        instances.append(Instance(i, proc, port))
    samples: list[Sample] = []
    try:
        for inst in instances:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{inst.port}/readyz", timeout=2
                    ) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or inst.proc.poll() is not None:
                    raise SystemExit(f"soak: sfa-{inst.index} did not become ready")
                time.sleep(0.5)

        # -- phase 1: backlog = capacity
        started = time.monotonic()
        total = sum(feed_day(i, 0) for i in range(len(days)))
        producer.flush(60)
        bars_fed = len(days) * args.symbols
        while True:
            time.sleep(1)
            text = [_metrics(inst.port) for inst in instances]
            processed = sum(_value(t, "sfa_bars_processed_total") for t in text)
            lag = sum(_value(t, "sfa_consumer_lag_messages") for t in text)
            if processed >= bars_fed and lag == 0:
                break
            if time.monotonic() - started > 600:
                raise SystemExit("soak: the backlog did not drain in 10 minutes")
        capacity = bars_fed / (time.monotonic() - started)
        rate_days = capacity / 2 / args.symbols
        print(
            f"soak: capacity {capacity:,.0f} bars/s ({total} records of the first pass); "
            f"feeding {rate_days:.1f} days/s (half) for {args.minutes:g} min",
            flush=True,
        )

        # -- phase 2: the soak
        t0 = time.monotonic()
        next_sample = t0
        i, cycle = 0, 1
        while (now := time.monotonic()) - t0 < args.minutes * 60:
            due = int((now - t0) * rate_days)
            while (i + cycle * len(days)) - len(days) < due:
                feed_day(i, cycle)
                i += 1
                if i == len(days):
                    i, cycle = 0, cycle + 1
            if now >= next_sample:
                for inst in instances:
                    samples.append(_sample(inst, now - t0))
                latest = samples[-2:]
                print(
                    f"  {(now - t0) / 60:5.1f} min  "
                    + "  ".join(
                        f"sfa-{x.instance}: rss {x.rss_mb:6.1f} MiB lag {x.lag:7.0f} "
                        f"p99 {x.p99_s if x.p99_s is not None else float('nan'):5.2f}s fds {x.fds}"
                        for x in latest
                    ),
                    flush=True,
                )
                next_sample += _SAMPLE_S
            producer.poll(0)
            time.sleep(0.02)
        producer.flush(60)
        fed.close()

        # -- phase 3: drain and compare
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if all(_value(_metrics(x.port), "sfa_consumer_lag_messages") == 0 for x in instances):
                break
            time.sleep(1)
        time.sleep(3)
        # The memory verdict first: it needs only the samples.
        _plot(samples, OUT / "soak.png")
        verdicts = _rss_verdicts(samples)
        matching, n_expected, duplicates = _compare(bootstrap, topics["out"], feed_path)
    finally:
        for inst in instances:
            inst.proc.send_signal(signal.SIGTERM)
        for inst in instances:
            try:
                inst.proc.wait(60)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
        with contextlib.suppress(Exception):  # best effort: a leftover uuid topic harms nobody
            admin.delete_topics(list(topics.values()))

    day_records = 1 + max(1, args.symbols // 100)  # messages per fed day
    # Bounded: after the first minute the lag never holds more than 30 s of feed (a
    # backlog that accumulated would pass that within minutes at half capacity).
    # per day: its records, plus at most one forwarded record per bar
    lag_bound = 30 * rate_days * (day_records + args.symbols)
    ok = (
        all(g < 1.0 for _, g, _, _, _ in verdicts)
        and all(s.lag <= lag_bound for s in samples if s.t >= 60)
        and all(s.healthy for s in samples)
        and duplicates == 0
        and matching == n_expected
    )
    print(f"lag bound after the first minute: {lag_bound:,.0f} (30 s of feed, in messages)")
    print(
        f"output: {matching}/{n_expected} symbols equal to replay, {duplicates} duplicates; "
        f"plot {OUT / 'soak.png'}"
    )
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
