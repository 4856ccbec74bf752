"""Drills (issue 8 item 6): a market with the awkward cases, fed in a chosen shape to an
N-partition topic through K `sfa run` subprocesses whose membership changes on a
schedule, ending with THE CHECK: a read_committed reader gets, for every symbol, a last
result equal to `sfa replay` of the same file (the whole JSON minus `input`), no two
results with the same (symbol, input), and each bad record once in the dead-letter topic.

Why one harness: every drill is the same story with a different cast (feed shape,
partitions, instances, schedule), and its figures (symbols matching, duplicates, time to
resume after each membership change) must be measured the same way to be compared.

The feed is produced here, not by `sfa produce`, because a drill needs what the CLI
cannot do: input that keeps coming while members come and go (a paced feeder thread),
and corrections sent deliberately through a partition other than their symbol's owner.
The shapes are built with `service.feed`, the code behind `sfa produce`, and stamped like
it: strictly increasing timestamps in line order, so a correction wins in Kafka exactly
as in `sfa replay`.

Time to resume is read from the group's committed offsets, sampled a few times a second
with the group's membership: for a kill or a leave, from the signal to the first commit
that moves each partition the leaver held past what was committed when it was gone; for a
join or a restart, from the spawn (and from the first assignment) to the first advance of
each partition it was given. The figure is the slowest of those partitions.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from service.feed import keyed_records, snapshot_records
from service.market import generate_bars
from service.ownership import Partitioner
from tests.integration.kafka_io import comparable, read_committed
from tests.integration.launcher import SfaProcess
from tests.integration.topics import create_topics, delete_topics

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ChangeReport",
    "Drill",
    "DrillReport",
    "Instance",
    "Market",
    "Shape",
    "Step",
    "build_market",
    "reference",
    "run_drill",
]

REPO = Path(__file__).resolve().parents[2]
MAX_MESSAGE_BYTES = 32_768  # a snapshot array of a drill market fits; the too_large line not
Shape = Literal["keyed", "mixed"]
Kind = Literal["bar", "array", "correction", "bad"]

_BAD: list[tuple[bytes, str]] = [
    (b"{nope", "invalid_json"),
    (b"42", "not_an_object"),
    (orjson.dumps({"date": "2020-01-02", "close": 1.0}), "missing_field:symbol"),
    (orjson.dumps({"symbol": "BAD 1", "date": "2020-01-02", "close": 1.0}), "invalid_field:symbol"),
    (orjson.dumps({"symbol": "B.SH", "date": "2020/01/02", "close": 1.0}), "invalid_field:date"),
    (orjson.dumps({"symbol": "B.SH", "date": "1899-01-02", "close": 1.0}), "date_out_of_range"),
    (orjson.dumps({"symbol": "B.SH", "date": "2020-01-02", "close": -1}), "invalid_field:close"),
    (
        orjson.dumps({"symbol": "B.SH", "date": "2020-01-03", "close": 5, "low": 6, "high": 4}),
        "invalid_field:low",
    ),
    (
        orjson.dumps({"symbol": "B.SH", "date": "2020-01-02", "close": 1, "volume": True}),
        "invalid_field:volume",
    ),
    (b"x" * (MAX_MESSAGE_BYTES + 1000), "too_large"),
]
_BAD_IN_ARRAY: list[tuple[Any, str]] = [  # dead-lettered alone, their neighbours analysed
    ({"symbol": "B.SZ", "date": "2020-01-06", "close": 0}, "invalid_field:close"),
    (7, "not_an_object"),
]


def normalized(value: bytes) -> bytes:
    """A dead letter's identity: its JSON with sorted keys (an array element is re-encoded
    on its way, and a snapshot re-encodes every bar), or the bytes when they are no JSON."""
    try:
        return orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return value


# --- the market -----------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    """A JSONL file of bars in feed order, what each line is, and the dead letters due."""

    path: Path
    lines: list[bytes]
    kinds: list[Kind]
    dead: Counter[tuple[str, bytes]]
    symbols: int
    corrections: int


def _corrected(bar: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    close = round(bar["close"] * (1 + rng.choice((-1, 1)) * rng.uniform(0.02, 0.08)), 2)
    return {**bar, "close": close, "high": max(bar["high"], close), "low": min(bar["low"], close)}


def _days(symbols: int, start: int, end: int, seed: int, edges: bool) -> list[list[dict]]:
    """Day by day (bars of one date), the edge symbols' days (1901.., ..2099) spread evenly
    through the main market so they are fed all along, each symbol in date order."""
    streams: list[list[list[dict]]] = []
    for n, a, b, prefix in [(symbols, start, end, "")] + (
        [(1, 1901, 1903, "E01"), (1, 2097, 2099, "E99")] if edges else []
    ):
        days: dict[str, list[dict]] = {}
        for bar in generate_bars(n, a, b, seed):
            bar["symbol"] = prefix + bar["symbol"]
            days.setdefault(bar["date"], []).append(bar)
        streams.append(list(days.values()))
    keyed = [(i / len(s), k, day) for k, s in enumerate(streams) for i, day in enumerate(s)]
    return [day for *_, day in sorted(keyed, key=lambda x: (x[0], x[1]))]


def build_market(
    folder: Path,
    symbols: int = 12,
    start_year: int = 2016,
    end_year: int = 2021,
    seed: int = 5,
    edges: bool = True,
) -> Market:
    """The awkward cases in one file: mixed-symbol arrays (one with a correction of its own
    bar after it, some with a bad bar inside), corrections a few days later, far later
    (for dates long past) and twice over, bad records of every reason, and symbols trading
    in 1901-1903 and 2097-2099. Corrections pick bars near the festival (December to
    April), inside the windows, so applying them out of order changes the result."""
    rng = random.Random(seed)
    days = _days(symbols, start_year, end_year, seed, edges)
    lines: list[bytes] = []
    kinds: list[Kind] = []
    dead: Counter[tuple[str, bytes]] = Counter()
    due: dict[int, list[dict]] = {}  # day index -> corrections emitted after that day
    corrections = 0
    bad_at = {len(days) * (k + 1) // (len(_BAD) + 1): k for k in range(len(_BAD))}

    def emit(value: bytes, kind: Kind) -> None:
        lines.append(value)
        kinds.append(kind)

    for d, bars in enumerate(days):
        if d % 9 == 4 and len(bars) >= 4:
            for i in range(0, len(bars), 4):
                chunk: list[Any] = list(bars[i : i + 4])
                if d % 27 == 4 and i == 0:
                    chunk.append(_corrected(chunk[0], rng))  # index order is event order
                    corrections += 1
                if d % 90 == 4 and i == 0:
                    bad, reason = _BAD_IN_ARRAY[(d // 90) % len(_BAD_IN_ARRAY)]
                    chunk.insert(1, bad)
                    dead[(reason, normalized(orjson.dumps(bad)))] += 1
                emit(orjson.dumps(chunk), "array")
        else:
            for bar in bars:
                emit(orjson.dumps(bar), "bar")
        for bar in bars:
            if int(bar["date"][5:7]) in (12, 1, 2, 3, 4) and rng.random() < 0.006:
                later = d + rng.choice((0, 1, 3, 7, len(days) // 3))
                fixed = _corrected(bar, rng)
                due.setdefault(min(later, len(days) - 1), []).append(fixed)
                corrections += 1
                if rng.random() < 0.2:  # corrected again, later still: the last one wins
                    due.setdefault(min(later + 5, len(days) - 1), []).append(_corrected(bar, rng))
                    corrections += 1
        for fixed in due.pop(d, []):
            emit(orjson.dumps(fixed), "correction")
        if d in bad_at:
            value, reason = _BAD[bad_at[d]]
            emit(value, "bad")
            dead[(reason, normalized(value))] += 1
    # Last of all, corrections of the very first days: dates long past, sent last.
    for bar in days[1][:3] + days[2][:2]:
        emit(orjson.dumps(_corrected(bar, rng)), "correction")
        corrections += 1
    path = folder / "drill-market.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    names = {b["symbol"] for day in days for b in day}
    return Market(path, lines, kinds, dead, len(names), corrections)


def reference(market: Market, folder: Path) -> dict[str, dict]:
    """`sfa replay` of the market file: the last result per symbol, minus `input`."""
    out, errors = folder / "reference.jsonl", folder / "reference-errors.jsonl"
    env = {
        **os.environ,
        "DASK_ENABLE_DISTRIBUTED": "false",
        "SFA_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
    }
    command = ["replay", str(market.path), "--output", str(out), "--errors", str(errors)]
    done = subprocess.run(
        [sys.executable, "-m", "service", *command],
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    rejected = [line for line in errors.read_bytes().splitlines() if line.strip()]
    assert len(rejected) == sum(market.dead.values()), "the market's bad records are off"
    last: dict[str, dict] = {}
    for line in out.read_bytes().splitlines():
        result = orjson.loads(line)
        last[result["symbol"]] = comparable(result)
    assert len(last) == market.symbols
    return last


# --- the feed -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes
    partition: int


def plan(
    market: Market,
    shape: Shape,
    partitions: int,
    partitioner: Partitioner = "murmur2",
    run_lines: int = 400,
) -> list[Record]:
    """The records to send, in stamping order. `keyed`: what `sfa produce` sends (one
    symbol per record, on its owner). `mixed`: runs of `run_lines` lines taking turns as
    snapshot arrays, unkeyed lines and keyed records, with every correction line keyed by
    its symbol but sent to the partition after its owner (a producer with another
    partitioner), so it travels apart from the bars it corrects."""
    spread = iter(range(1 << 62))  # unkeyed records go round the partitions

    def placed(records: Iterable[Any], shift: int = 0) -> list[Record]:
        out = []
        for r in records:
            p = next(spread) % partitions if r.partition is None else r.partition
            out.append(Record(r.key, r.value, (p + shift) % partitions))
        return out

    def messages(lines: list[tuple[int, bytes]]) -> list[tuple[bytes, str, int]]:
        return [(value, str(market.path), i + 1) for i, value in lines]

    if shape == "keyed":
        every = messages(list(enumerate(market.lines)))
        return placed(keyed_records(every, partitions, partitioner))
    runs: list[tuple[str, list[tuple[int, bytes]]]] = []
    for i, (value, kind) in enumerate(zip(market.lines, market.kinds, strict=True)):
        how = (
            "misrouted"
            if kind == "correction"
            else ("snapshot", "unkeyed", "keyed")[(i // run_lines) % 3]
        )
        if not runs or runs[-1][0] != how:
            runs.append((how, []))
        runs[-1][1].append((i, value))
    out: list[Record] = []
    for how, lines in runs:
        if how == "snapshot":
            arrays, leftovers = snapshot_records(messages(lines), MAX_MESSAGE_BYTES)
            out += placed(leftovers) + placed(arrays)
        else:
            keyed = keyed_records(messages(lines), partitions, partitioner, how != "unkeyed")
            out += placed(keyed, shift=1 if how == "misrouted" else 0)
    return out


class Feeder(threading.Thread):
    """Sends the records at an even pace over `seconds`, each stamped later than the one
    before (the wall clock, or the previous stamp + 1 ms when faster than that)."""

    def __init__(self, bootstrap: str, topic: str, records: list[Record], seconds: float) -> None:
        super().__init__(name="drill-feeder", daemon=True)
        self.bootstrap, self.topic, self.records = bootstrap, topic, records
        self.rate = len(records) / max(seconds, 0.001)
        self.sent = 0
        self.errors: list[str] = []
        self.finished = threading.Event()

    @property
    def fraction(self) -> float:
        return self.sent / max(1, len(self.records))

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def run(self) -> None:
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "enable.idempotence": True}
        )
        started, last = time.monotonic(), 0
        try:
            for i, r in enumerate(self.records):
                ahead = started + i / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                last = max(last + 1, int(time.time() * 1000))
                producer.produce(
                    self.topic, r.value, key=r.key, partition=r.partition, timestamp=last,
                    on_delivery=self._delivered,
                )  # fmt: skip
                producer.poll(0)
                self.sent = i + 1
            if producer.flush(60) != 0:
                self.errors.append("records left unflushed")
        finally:
            self.finished.set()


# --- the instances --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Instance(SfaProcess):
    """One `sfa run` subprocess with its own SFA_INSTANCE_ID and metrics port, started by
    the shared launcher (stdout and stderr in one file, one per start)."""

    def __init__(self, instance_id: str, env: dict[str, str], log: Path) -> None:
        self.instance_id = instance_id
        self.port = free_port()
        own = {"SFA_INSTANCE_ID": instance_id, "SFA_METRICS_PORT": str(self.port)}
        super().__init__({**env, **own}, log)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.instance_id} exited {self.proc.returncode}:\n{self.tail()}"
            )


# --- watching the group ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # time.monotonic()
    committed: dict[tuple[str, int], int]
    owners: dict[str, tuple[str, set[int]]] | None  # member id -> (instance, input partitions)

    def held(self, instance_id: str, ignore: set[str] | frozenset[str] = frozenset()) -> set[int]:
        """What the instance's members hold, those in `ignore` (a dead process's) aside."""
        return set().union(
            *(
                parts
                for member, (ident, parts) in (self.owners or {}).items()
                if ident == instance_id and member not in ignore
            )
        )

    def members(self, instance_id: str) -> set[str]:
        return {m for m, (ident, _) in (self.owners or {}).items() if ident == instance_id}


_COORDINATOR_MOVING = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
)


class Group:
    """Reads the group's committed offsets and members (never joins it)."""

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self.group, self.topics = group, topics
        # read_uncommitted: a read_committed client asks for stable offsets and waits
        # while a killed member's transaction is pending, up to its timeout (KIP-447).
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            }
        )
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._bootstrap = bootstrap
        self._parts: list[TopicPartition] = []
        self._listed = -1e9
        self._lock = threading.Lock()

    def partitions(self) -> list[TopicPartition]:
        """Those of every topic that exists: the repartition topic appears when the
        service creates it (once forwarding is built), so it is looked for again."""
        with self._lock:  # the monitor thread and the drill's own both ask
            known = {tp.topic for tp in self._parts}
            if len(known) < len(self.topics) and time.monotonic() >= self._listed + 2.0:
                self._listed = time.monotonic()
                meta = self._consumer.list_topics(timeout=10).topics
                self._parts = [
                    TopicPartition(t, p)
                    for t in self.topics
                    if t in meta
                    for p in sorted(meta[t].partitions)
                ]
            return list(self._parts)

    def committed(self) -> dict[tuple[str, int], int]:
        """Waits out a coordinator that is moving or loading (a broker just thawed or
        restarted answers NOT_COORDINATOR for a while): that passes by itself."""
        deadline = time.monotonic() + 60
        while True:
            try:
                found = self._consumer.committed(self.partitions(), timeout=10)
                return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in found}
            except KafkaException as exc:
                if exc.args[0].code() not in _COORDINATOR_MOVING or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def ends(self) -> dict[tuple[str, int], int]:
        return {
            (tp.topic, tp.partition): self._consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in self.partitions()
        }

    def nothing_after(self, where: dict[tuple[str, int], int]) -> bool:
        """No record a read_committed reader would get at these offsets. A topic the
        service writes in transactions (repartition) ends with a commit marker, which
        takes an offset no consumer ever commits past."""
        probe = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"drill-probe-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        try:
            probe.assign([TopicPartition(t, p, o) for (t, p), o in where.items()])
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                if any(m.error() is None for m in probe.consume(100, 0.2)):
                    return False
            return True
        finally:
            probe.close()

    def owners(self, instance_ids: Iterable[str]) -> dict[str, tuple[str, set[int]]]:
        """Member id -> (instance id, input partitions). A restarted process is a new
        member (a new member id) even where it takes its old identity back."""
        described = self._admin.describe_consumer_groups([self.group], request_timeout=5)
        members = described[self.group].result(timeout=10).members
        out: dict[str, tuple[str, set[int]]] = {}
        for member in members:
            ident = next(
                (
                    i
                    for i in instance_ids
                    if member.group_instance_id == i or member.client_id.endswith(f"-{i}")
                ),
                member.client_id,
            )
            tps = member.assignment.topic_partitions or []
            out[member.member_id] = (
                ident,
                {tp.partition for tp in tps if tp.topic == self.topics[0]},
            )
        return out

    def close(self) -> None:
        self._consumer.close()


class Monitor(threading.Thread):
    """Samples the group a few times a second until stopped."""

    def __init__(self, group: Group, instance_ids: list[str], period: float = 0.25) -> None:
        super().__init__(name="drill-monitor", daemon=True)
        self.group, self.instance_ids, self.period = group, instance_ids, period
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                committed = self.group.committed()
            except KafkaException:
                committed = None  # a coordinator move: try again next time
            try:
                owners: dict[str, tuple[str, set[int]]] | None = self.group.owners(
                    self.instance_ids
                )
            except KafkaException:
                owners = None
            if committed is not None:
                self.samples.append(Sample(t, committed, owners))
            self.halt.wait(max(0.0, self.period - (time.monotonic() - t)))


# --- the schedule ---------------------------------------------------------------------


Action = Literal["join", "kill", "restart", "leave", "call"]


@dataclass(frozen=True)
class Step:
    """At `at` (fraction of the feed sent), do `action` to instance `name`; `call` runs
    `hook(run)` instead (a Dask process killed, a probe), `env` overrides a (re)start's."""

    at: float
    action: Action
    name: str = ""
    hook: Callable[[DrillRun], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drill:
    name: str
    shape: Shape
    partitions: int
    instances: list[str]  # started before the feed
    steps: list[Step]
    feed_seconds: float = 20.0
    env: dict[str, str] = field(default_factory=dict)  # every instance's extra environment
    done_timeout: float = 120.0
    # Where the instances (only they) reach the broker: a fault proxy's address
    # (tests/integration/faults.py); the feeder, the monitor and the check go direct.
    service_bootstrap: str | None = None


@dataclass
class ChangeReport:
    kind: str
    name: str
    at: float  # seconds since the feed started
    partitions: list[int]
    resume: float | None  # slowest partition; None: nothing to resume (no input after)
    assigned: float | None = None  # join/restart: spawn -> first assignment
    per_partition: dict[int, float] = field(default_factory=dict)

    def render(self) -> str:
        resume = "n/a" if self.resume is None else f"{self.resume:.1f} s"
        extra = "" if self.assigned is None else f", assigned after {self.assigned:.1f} s"
        return (
            f"{self.kind} {self.name} at {self.at:.1f} s: partitions {self.partitions} "
            f"resumed in {resume}{extra}"
        )


@dataclass
class _Change:
    kind: str
    name: str
    t0: float
    held: set[int] = field(default_factory=set)  # kill/leave: what the leaver held
    ignore: set[str] = field(default_factory=set)  # join/restart: members of dead processes
    base: dict[tuple[str, int], int] = field(default_factory=dict)  # committed once gone
    gone_at: float = 0.0


@dataclass
class DrillReport:
    name: str
    symbols_matching: int
    symbols_total: int
    mismatched: list[str]
    duplicates: int
    dead_letters: int
    dead_letters_expected: int
    dead_letter_errors: list[str]
    changes: list[ChangeReport]
    exit_codes: dict[str, int]
    seconds: float
    non_json: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.symbols_matching == self.symbols_total
            and not self.mismatched
            and self.duplicates == 0
            and not self.dead_letter_errors
            and all(code == 0 for code in self.exit_codes.values())
            and not self.non_json
        )

    def render(self) -> str:
        lines = [
            f"drill {self.name}: {'OK' if self.ok else 'FAILED'} in {self.seconds:.0f} s",
            f"  symbols matching sfa replay: {self.symbols_matching}/{self.symbols_total}"
            + (f" (differ: {', '.join(self.mismatched[:8])})" if self.mismatched else ""),
            f"  duplicate (symbol, input) results: {self.duplicates}",
            f"  dead letters: {self.dead_letters} (expected {self.dead_letters_expected})"
            + (f" {self.dead_letter_errors[:4]}" if self.dead_letter_errors else ""),
            f"  exit codes on SIGTERM: {self.exit_codes}",
            f"  lines printed that are not JSON: {len(self.non_json)}"
            + (f" e.g. {self.non_json[:3]}" if self.non_json else ""),
        ]
        lines += [f"  {c.render()}" for c in self.changes]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


# --- running a drill ------------------------------------------------------------------


class DrillRun:
    """One drill in progress: its topics, instances, feeder and monitor. Hooks get it."""

    def __init__(self, drill: Drill, bootstrap: str, folder: Path) -> None:
        self.drill, self.bootstrap, self.folder = drill, bootstrap, folder
        tag = uuid.uuid4().hex[:10]
        self.tag = tag
        self.topics = {
            "input": f"drill-in-{tag}",
            "output": f"drill-out-{tag}",
            "dlq": f"drill-dlq-{tag}",
            "state": f"drill-state-{tag}",
            "repartition": f"drill-rep-{tag}",
        }
        self.group_id = f"drill-g-{tag}"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": drill.service_bootstrap or bootstrap,
            "KAFKA_GROUP_ID": self.group_id,
            "SFA_INPUT_TOPIC": self.topics["input"],
            "SFA_OUTPUT_TOPIC": self.topics["output"],
            "SFA_DLQ_TOPIC": self.topics["dlq"],
            "SFA_STATE_TOPIC": self.topics["state"],
            "SFA_REPARTITION_TOPIC": self.topics["repartition"],
            "SFA_BATCH_MAX_MESSAGES": "500",
            "SFA_BATCH_MAX_WAIT_MS": "200",
            "SFA_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
            "DASK_ENABLE_DISTRIBUTED": "false",
            **drill.env,
        }
        self.live: dict[str, Instance] = {}
        self.every: list[Instance] = []
        self.exit_codes: dict[str, int] = {}
        self.changes: list[_Change] = []
        self.dead: set[str] = set()  # member ids of processes killed or gone
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.group = Group(
            bootstrap, self.group_id, [self.topics["input"], self.topics["repartition"]]
        )
        self.monitor = Monitor(self.group, [self.instance_id(n) for n in self._names()])
        self.feed_started = 0.0
        self.notes: list[str] = []  # what hooks saw (faults, probes), printed in the report

    def _names(self) -> list[str]:
        return list(dict.fromkeys(self.drill.instances + [s.name for s in self.drill.steps]))

    def instance_id(self, name: str) -> str:
        return f"{name}-{self.tag}"

    def start(self, name: str, env: dict[str, str] | None = None) -> Instance:
        n = sum(1 for i in self.every if i.instance_id == self.instance_id(name))
        log = self.folder / f"{self.drill.name}-{name}-{n}.log"
        instance = Instance(self.instance_id(name), {**self.env, **(env or {})}, log)
        self.live[name] = instance
        self.every.append(instance)
        return instance

    def check_alive(self) -> None:
        for instance in self.live.values():
            instance.check_alive()

    def wait(
        self,
        what: str,
        condition: Callable[[], bool],
        timeout: float,
        detail: Callable[[], str] = str,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}:\n{i.tail(12)}" for n, i in self.live.items())
                notes = "\n".join(self.notes)
                raise AssertionError(
                    f"{self.drill.name}: no {what} in {timeout:.0f} s {detail()}\n{notes}\n{tails}"
                )
            time.sleep(0.2)

    def create_input(self) -> None:
        create_topics(self.admin, [self.topics["input"]], self.drill.partitions)

    def do(self, step: Step) -> None:
        now = time.monotonic()
        if step.action == "call":
            assert step.hook is not None
            step.hook(self)
        elif step.action in ("join", "restart"):
            self.start(step.name, step.env)
            self.changes.append(_Change(step.action, step.name, now, ignore=set(self.dead)))
        else:
            instance = self.live.pop(step.name)
            last = next((s for s in reversed(self.monitor.samples) if s.owners is not None), None)
            held = last.held(instance.instance_id) if last else set()
            self.dead |= last.members(instance.instance_id) if last else set()
            if step.action == "kill":
                instance.kill()
            else:
                self.exit_codes[f"{step.name} (leave)"] = instance.term()
            gone = _Change(step.action, step.name, now, held, base=self.group.committed())
            gone.gone_at = time.monotonic()
            self.changes.append(gone)

    def behind(self) -> str:
        """(topic, partition): (committed, end) where the group is behind."""
        committed, ends = self.group.committed(), self.group.ends()
        return str({k: (committed.get(k), e) for k, e in ends.items() if committed.get(k) != e})

    def done(self) -> bool:
        committed, ends = self.group.committed(), self.group.ends()
        if self.topics["input"] not in {t for t, _ in ends}:
            return False
        behind = {k: committed.get(k, 0) for k, e in ends.items() if committed.get(k, 0) != e}
        if any(ends[k] - o > 3 for k, o in behind.items()):
            return False  # more than markers left: no need to look
        return not behind or self.group.nothing_after(behind)

    def cleanup(self) -> None:
        for instance in self.every:
            instance.close()
        self.monitor.halt.set()
        self.group.close()
        delete_topics(self.admin, self.topics.values())


def _resume(run: DrillRun, change: _Change) -> ChangeReport:
    samples = run.monitor.samples
    input_topic = run.topics["input"]
    at = change.t0 - run.feed_started
    final = samples[-1].committed if samples else {}
    if change.kind in ("kill", "leave"):
        parts, base, since, assigned = change.held, change.base, change.gone_at, None
    else:
        iid = run.instance_id(change.name)
        first = next((s for s in samples if s.t >= change.t0 and s.held(iid, change.ignore)), None)
        if first is None:
            return ChangeReport(change.kind, change.name, at, [], None)
        parts = set().union(
            *(s.held(iid, change.ignore) for s in samples if first.t <= s.t <= first.t + 3)
        )
        base, since, assigned = first.committed, first.t, first.t - change.t0
    per: dict[int, float] = {}
    for p in sorted(parts):
        key = (input_topic, p)
        if final.get(key, 0) <= base.get(key, 0):
            continue  # nothing arrived for it after the change: nothing to resume
        moved = next(s for s in samples if s.t > since and s.committed.get(key, 0) > base[key])
        per[p] = moved.t - change.t0
    resume = max(per.values()) if per else None
    return ChangeReport(change.kind, change.name, at, sorted(parts), resume, assigned, per)


def _check(run: DrillRun, market: Market, expected: dict[str, dict]) -> tuple[Any, ...]:
    outputs = read_committed(run.bootstrap, run.topics["output"], timeout=120)
    last: dict[str, dict] = {}
    seen: Counter[tuple[str, bytes]] = Counter()
    for m in outputs:
        result = orjson.loads(m.value() or b"")
        seen[(result["symbol"], orjson.dumps(result["input"]))] += 1
        last[result["symbol"]] = comparable(result)
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    mismatched = sorted(s for s in expected if last.get(s) != expected[s])
    mismatched += sorted(f"{s} (not in replay)" for s in set(last) - set(expected))
    got: Counter[tuple[str, bytes]] = Counter()
    if run.topics["dlq"] in run.admin.list_topics(timeout=10).topics:
        for m in read_committed(run.bootstrap, run.topics["dlq"], timeout=60):
            reason = dict(m.headers() or []).get("sfa.reason")
            text = reason.decode() if isinstance(reason, bytes) else str(reason)
            got[(text, normalized(m.value() or b""))] += 1
    errors = [f"missing {k[0]} x{n}" for k, n in (market.dead - got).items()]
    errors += [f"extra {k[0]} x{n}" for k, n in (got - market.dead).items()]
    matching = len(expected) - sum(1 for s in expected if last.get(s) != expected[s])
    return matching, mismatched, duplicates, sum(got.values()), errors


def _reached(feeder: Feeder, fraction: float) -> Callable[[], bool]:
    return lambda: feeder.fraction >= fraction


def run_drill(
    drill: Drill, market: Market, expected: dict[str, dict], bootstrap: str, folder: Path
) -> DrillReport:
    """Run it, measure it, check it; print the report and return it (the caller asserts)."""
    started = time.monotonic()
    run = DrillRun(drill, bootstrap, folder)
    try:
        run.create_input()
        records = plan(market, drill.shape, drill.partitions)
        run.monitor.start()
        for name in drill.instances:
            run.start(name)
        everyone = {run.instance_id(n) for n in drill.instances}

        def members_hold_everything() -> bool:
            last = run.monitor.samples[-1] if run.monitor.samples else None
            if last is None or not last.owners:
                return False
            idents = {ident for ident, _ in last.owners.values()}
            held = set().union(*(parts for _, parts in last.owners.values()))
            return everyone <= idents and held == set(range(drill.partitions))

        run.wait("assignment of every partition", members_hold_everything, 120)
        feeder = Feeder(bootstrap, run.topics["input"], records, drill.feed_seconds)
        run.feed_started = time.monotonic()
        feeder.start()
        for step in sorted(drill.steps, key=lambda s: s.at):
            run.wait(f"{step.at:.0%} of the feed", _reached(feeder, step.at), 300)
            run.do(step)
        run.wait("end of the feed", feeder.finished.is_set, 300)
        assert not feeder.errors, feeder.errors[:5]
        run.wait("every offset committed", run.done, drill.done_timeout, run.behind)
        time.sleep(1.0)  # one more sample past the end for the resume figures
        run.monitor.halt.set()
        run.monitor.join(30)
        changes = [_resume(run, c) for c in run.changes]
        for name, instance in list(run.live.items()):
            run.exit_codes[name] = instance.term()
        matching, mismatched, duplicates, dead, errors = _check(run, market, expected)
        report = DrillReport(
            drill.name,
            matching,
            len(expected),
            mismatched,
            duplicates,
            dead,
            sum(market.dead.values()),
            errors,
            changes,
            run.exit_codes,
            time.monotonic() - started,
            [line for instance in run.every for line in instance.non_json_lines()],
            run.notes,
        )
        print(report.render(), flush=True)
        return report
    finally:
        run.cleanup()
