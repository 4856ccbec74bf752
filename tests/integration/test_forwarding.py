"""Ownership, forwarding and event-time corrections (SPEC 1, 7) against the real broker.

A mixed feed on a 4-partition topic, the way real feeds arrive: end-of-day snapshot
arrays of every symbol, unkeyed lines, keyed lines, and corrections stamped later than
the bars they correct but travelling on other partitions (keyed corrections go straight
to the owner while the bars they correct are still on their way through the
repartition topic; unkeyed ones land anywhere). Each run ends with the drill check: a
read_committed reader gets, for every symbol, a last result equal to `sfa replay` of
the same lines, no two results with the same symbol and `input`, every bad record
exactly once in the dead-letter topic, and every result published from its symbol's
owner partition, by the one instance holding it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from service.kafka.repartition import decode_record
from service.ownership import owner
from tests.integration.conftest import NewTopicFactory, ServiceTopicsFactory
from tests.integration.kafka_io import read_committed
from tests.integration.launcher import Launcher
from tests.integration.test_service import (
    _assert_once_and_as_replayed,
    _start,
    _stop,
    _wait_done,
)

pytestmark = pytest.mark.integration

N = 4
BAD = [b"{nope", b"42", orjson.dumps({"symbol": "BAD 1", "date": "2020-01-02", "close": 1.0})]
BAD_KEYED = [orjson.dumps({"symbol": "600000.SH", "date": "2020/01/02", "close": 1.0})]
ENV = {"SFA_MAX_MESSAGE_BYTES": "1048576", "DASK_ENABLE_DISTRIBUTED": "false"}


def _run_sfa(bootstrap: str, *args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **ENV, **env},
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _corrections(lines: list[bytes], rng: random.Random, n: int) -> list[bytes]:
    out = []
    for line in rng.sample(lines, n):
        bar = orjson.loads(line)
        bar["close"] = round(bar["close"] * rng.uniform(0.7, 1.3), 2)
        out.append(orjson.dumps(bar))
    return out


class Feed:
    """The mixed feed as five `sfa produce` invocations, and the same lines as one file
    (in the same order, which is the event order: each invocation stamps later)."""

    def __init__(self, root: Path, bootstrap: str) -> None:
        market = root / "market.jsonl"
        _run_sfa(
            bootstrap,
            *("generate", "--symbols", "12", "--start-year", "2016", "--end-year", "2020"),
            *("--seed", "11", "--output", str(market)),
            env={},
        )
        lines = [line for line in market.read_bytes().splitlines() if line.strip()]
        rng = random.Random(4)
        a, b = int(len(lines) * 0.4), int(len(lines) * 0.7)
        snapshot, unkeyed, keyed = lines[:a], lines[a:b] + BAD, lines[b:] + BAD_KEYED
        self.segments: list[tuple[list[bytes], list[str]]] = [
            (snapshot, ["--snapshot"]),
            (unkeyed, ["--unkeyed"]),
            (keyed, []),
            # corrections of older bars, keyed: on the owner before the forwarded originals
            (_corrections(lines[:b], rng, 80), []),
            # corrections of the keyed stretch, unkeyed: any partition
            (_corrections(lines[b:], rng, 30), ["--unkeyed"]),
        ]
        self.root = root
        self.bad = sorted(BAD + BAD_KEYED)
        all_lines = [line for seg, _ in self.segments for line in seg]
        self.file = _write(root / "all.jsonl", all_lines)

    def produce(self, bootstrap: str, topic: str) -> None:
        for i, (seg, flags) in enumerate(self.segments):
            path = _write(self.root / f"segment-{i}.jsonl", seg)
            _run_sfa(
                bootstrap,
                "produce",
                str(path),
                "--no-progress",
                *flags,
                env={
                    "SFA_INPUT_TOPIC": topic,
                },
            )

    def replayed(self, bootstrap: str) -> dict[str, dict]:
        out = self.root / "replayed.jsonl"
        _run_sfa(bootstrap, "replay", str(self.file), "--output", str(out), env={})
        last: dict[str, dict] = {}
        for line in out.read_bytes().splitlines():
            result = orjson.loads(line)
            last[result["symbol"]] = result
        return last


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Feed:
    return Feed(tmp_path_factory.mktemp("feed"), kafka_bootstrap)


@pytest.fixture(scope="module")
def expected(feed: Feed, kafka_bootstrap: str) -> dict[str, dict]:
    return feed.replayed(kafka_bootstrap)


@pytest.fixture()
def topics(service_topics: ServiceTopicsFactory) -> dict[str, str]:
    return service_topics(N)


def _env(t: dict[str, str], instance: str) -> dict[str, str]:
    return {
        **ENV,
        "SFA_INPUT_TOPIC": t["input"],
        "SFA_OUTPUT_TOPIC": t["output"],
        "SFA_DLQ_TOPIC": t["dlq"],
        "SFA_STATE_TOPIC": t["state"],
        "KAFKA_GROUP_ID": t["group"],
        "SFA_INSTANCE_ID": instance,
        "SFA_BATCH_MAX_MESSAGES": "500",
    }


def _members(admin: AdminClient, group: str) -> dict[str, set[tuple[str, int]]]:
    """client.id -> the (topic, partition)s the broker says it holds."""
    [future] = admin.describe_consumer_groups([group]).values()
    description = future.result(timeout=10)
    return {
        m.client_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
        for m in description.members
    }


def _wait_for_members(admin: AdminClient, group: str, n: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            members = _members(admin, group)
            held = [tp for tps in members.values() for tp in tps]
            if len(members) == n and len(held) == 2 * N and all(members.values()):
                return members
        except Exception:  # the group does not exist yet
            pass
        assert time.monotonic() < deadline, f"group {group} never had {n} settled members"
        time.sleep(0.5)


def _check(
    bootstrap: str, t: dict[str, str], feed: Feed, expected: dict[str, dict]
) -> dict[str, dict]:
    last = _assert_once_and_as_replayed(bootstrap, t["output"], expected)
    dead = sorted(m.value() or b"" for m in read_committed(bootstrap, t["dlq"]))
    assert dead == feed.bad  # each bad record once, dead-lettered where it was read
    repartition = f"{t['group']}-repartition"
    for m in read_committed(bootstrap, t["output"]):
        result = orjson.loads(m.value() or b"")
        where = result["input"]
        # Published by the holder of the owner partition, from the input or the repartition
        # topic: nobody else held the symbol's state.
        assert where["partition"] == owner(result["symbol"], N), result["symbol"]
        assert where["topic"] in (t["input"], repartition)
    forwarded = read_committed(bootstrap, repartition)
    assert forwarded, "a mixed feed must forward"
    for m in forwarded:  # every bar of a record goes to its symbol's owner
        record = decode_record(m.value() or b"")
        assert {owner(s, N) for s in record.uniques} == {m.partition()}, record.uniques
    return last


def test_a_mixed_feed_through_one_instance_matches_replay(
    kafka_bootstrap: str,
    topics: dict[str, str],
    feed: Feed,
    expected: dict[str, dict],
    sfa_run: Launcher,
) -> None:
    feed.produce(kafka_bootstrap, topics["input"])
    proc = _start(sfa_run, kafka_bootstrap, _env(topics, "solo"))
    try:
        _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"], timeout=150)
    finally:
        assert _stop(proc) == 0
    _check(kafka_bootstrap, topics, feed, expected)


def test_a_mixed_feed_through_two_instances_matches_replay(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    topics: dict[str, str],
    feed: Feed,
    expected: dict[str, dict],
    sfa_run: Launcher,
) -> None:
    procs = [_start(sfa_run, kafka_bootstrap, _env(topics, name)) for name in ("left", "right")]
    try:
        repartition = f"{topics['group']}-repartition"
        deadline = time.monotonic() + 60
        while True:  # a describe during a rebalance can show a member between assignments
            members = _wait_for_members(kafka_admin, topics["group"], 2)
            if all(any(t == topics["input"] for t, _ in held) for held in members.values()):
                break
            assert time.monotonic() < deadline, f"no settled assignment: {members}"
            time.sleep(0.5)
        for held in members.values():
            # range co-partitions: input p and repartition p with the same member
            inputs = {p for t, p in held if t == topics["input"]}
            assert inputs and {(repartition, p) for p in inputs} <= held
        feed.produce(kafka_bootstrap, topics["input"])
        for proc in procs:
            _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"], timeout=150)
        assert _members(kafka_admin, topics["group"]) == members  # no rebalance meanwhile
    finally:
        codes = [_stop(proc) for proc in procs]
    assert codes == [0, 0]
    last = _check(kafka_bootstrap, topics, feed, expected)
    # With the assignment unchanged throughout, a symbol's owner partition names the one
    # instance that published it: both instances did publish, none the same symbol.
    by_instance = Counter(
        next(c for c, held in members.items() if (topics["input"], owner(s, N)) in held)
        for s in last
    )
    assert len(by_instance) == 2


def test_a_well_keyed_feed_forwards_nothing(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path, sfa_run: Launcher
) -> None:
    bars = [
        orjson.dumps({"symbol": f"S{i}.SH", "date": f"2020-01-{d:02d}", "close": 1.0 + d})
        for d in range(2, 20)
        for i in range(8)
    ]
    path = _write(tmp_path / "keyed.jsonl", bars)
    _run_sfa(
        kafka_bootstrap,
        "produce",
        str(path),
        "--no-progress",
        env={
            "SFA_INPUT_TOPIC": topics["input"],
        },
    )
    proc = _start(sfa_run, kafka_bootstrap, _env(topics, "keyed"))
    try:
        _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"])
    finally:
        assert _stop(proc) == 0
    results = read_committed(kafka_bootstrap, topics["output"])
    assert {orjson.loads(m.value() or b"")["symbol"] for m in results} == {
        f"S{i}.SH" for i in range(8)
    }
    assert read_committed(kafka_bootstrap, f"{topics['group']}-repartition") == []


def test_a_repartition_topic_of_another_shape_is_refused_in_one_line(
    kafka_bootstrap: str, topics: dict[str, str], new_topic: NewTopicFactory
) -> None:
    """SPEC 7: partition p of the repartition topic is input partition p's twin, so the
    counts must match; the service says so in one line and does not start."""
    env = {
        **os.environ,
        **_env(topics, "shape"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SFA_METRICS_PORT": "0",
        "SFA_REPARTITION_TOPIC": new_topic(partitions=N - 2),
    }
    done = subprocess.run(
        [sys.executable, "-m", "service", "run"], env=env, capture_output=True, timeout=120
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.decode().splitlines() if '"level":"ERROR"' in line]
    assert len(errors) == 1, errors
    message = orjson.loads(errors[0])["msg"]
    assert "SFA_REPARTITION_TOPIC" in message and "must match" in message, message
