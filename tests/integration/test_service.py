"""`sfa run` end to end against the real broker: exactly-once output, dead letters,
crash recovery with durable state. The service runs as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from tests.integration.conftest import ServiceTopicsFactory
from tests.integration.kafka_io import comparable as _comparable
from tests.integration.kafka_io import produce_keyed as _produce
from tests.integration.kafka_io import read_committed as _read_all
from tests.integration.launcher import Launcher, SfaProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

BAD = [
    (b"{nope", "invalid_json"),
    (b"42", "not_an_object"),
    (orjson.dumps({"date": "2020-01-02", "close": 1.0}), "missing_field:symbol"),
    (orjson.dumps({"symbol": "BAD 1", "date": "2020-01-02", "close": 1.0}), "invalid_field:symbol"),
    (orjson.dumps({"symbol": "B.SH", "date": "2020/01/02", "close": 1.0}), "invalid_field:date"),
    (orjson.dumps({"symbol": "B.SH", "date": "1899-01-02", "close": 1.0}), "date_out_of_range"),
    (orjson.dumps({"symbol": "B.SH", "date": "2020-01-02", "close": -1}), "invalid_field:close"),
    (
        orjson.dumps({"symbol": "B.SH", "date": "2020-01-02", "close": 1, "volume": True}),
        "invalid_field:volume",
    ),
    (b"x" * 2000, "too_large"),
]


def _sfa(
    *args: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "service", *args], env=env, check=True, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("market") / "bars.jsonl"
    _sfa(
        "generate",
        "--symbols",
        "12",
        "--start-year",
        "2016",
        "--end-year",
        "2021",
        "--seed",
        "3",
        "--output",
        str(path),
    )
    return path


def _values(market: Path) -> list[bytes]:
    return [line for line in market.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def expected(market: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("replay") / "results.jsonl"
    env = {**os.environ, "DASK_ENABLE_DISTRIBUTED": "false", "SFA_MAX_MESSAGE_BYTES": "1000"}
    _sfa("replay", str(market), "--output", str(out), env=env, stderr=subprocess.DEVNULL)
    last: dict[str, dict] = {}
    for line in out.read_bytes().splitlines():
        result = orjson.loads(line)
        last[result["symbol"]] = result
    return last


def _committed_all(bootstrap: str, group: str, topic: str) -> bool:
    """Has `group` committed every record of `topic`? A transactional topic (the
    repartition topic) ends each transaction with a marker that is never consumed, and
    a transaction aborted at the end (a batch given up in a rebalance, whose input the
    new owner forwarded again) leaves records nobody reads: there the committed offset
    rests short of the end, and "done" means no committed record lies past it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        committed = consumer.committed(parts, timeout=10)
        transactional = topic.endswith("-repartition")
        for tp in committed:
            end = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if tp.offset == end or end == 0:
                continue
            if not transactional or tp.offset < 0 or _records_from(bootstrap, tp, end):
                return False
        return True
    finally:
        consumer.close()


def _records_from(bootstrap: str, start: TopicPartition, end: int) -> int:
    """Committed records a read_committed reader gets from `start` up to `end`."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        reader.assign([TopicPartition(start.topic, start.partition, start.offset)])
        count, deadline = 0, time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in reader.consume(100, 0.2):
                error = m.error()
                if error is None:
                    count += 1
                elif error.code() == KafkaError._PARTITION_EOF:
                    return count
        return count + 1  # no end seen in time: not done yet
    finally:
        reader.close()


def _start(sfa_run: Launcher, bootstrap: str, env_extra: dict[str, str]) -> SfaProcess:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SFA_METRICS_PORT": "0",
        "SFA_BATCH_MAX_MESSAGES": "2000",
        "SFA_BATCH_MAX_WAIT_MS": "200",
        "SFA_MAX_MESSAGE_BYTES": "1000",
        **env_extra,
    }
    return sfa_run(env)


def _wait_done(
    proc: SfaProcess, bootstrap: str, group: str, topic: str, timeout: float = 120.0
) -> None:
    # The input first: once it is committed, every forwarded bar is in the
    # repartition topic (same transactions), and then that one must be read too.
    proc.wait_for(
        "commit of the whole input",
        lambda: (
            _committed_all(bootstrap, group, topic)
            and _committed_all(bootstrap, group, f"{group}-repartition")
        ),
        timeout,
        poll=0.5,
    )


def _stop(proc: SfaProcess) -> int:
    return proc.stop(30)[0]


def _headers(message: Message) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v for k, v in pairs if isinstance(v, bytes)}


def _last_results(messages: list[Message]) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    last: dict[str, dict] = {}
    seen: list[tuple[str, str]] = []
    for msg in messages:
        result = orjson.loads(msg.value() or b"")
        assert (msg.key() or b"").decode() == result["symbol"]
        seen.append((result["symbol"], orjson.dumps(result["input"]).decode()))
        last[result["symbol"]] = result
    return last, seen


def _assert_once_and_as_replayed(
    bootstrap: str, output: str, expected: dict[str, dict]
) -> dict[str, dict]:
    """No duplicate (symbol, input) among committed results, and the last result per
    symbol equals `sfa replay` of the same input. Returns the last results."""
    last, seen = _last_results(_read_all(bootstrap, output))
    assert len(seen) == len(set(seen)), "duplicate (symbol, input) among committed results"
    assert {s: _comparable(r) for s, r in last.items()} == {
        s: _comparable(r) for s, r in expected.items()
    }
    return last


@pytest.fixture()
def topics(service_topics: ServiceTopicsFactory) -> dict[str, str]:
    return service_topics(3)


def _env(t: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "SFA_INPUT_TOPIC": t["input"],
        "SFA_OUTPUT_TOPIC": t["output"],
        "SFA_DLQ_TOPIC": t["dlq"],
        "SFA_STATE_TOPIC": t["state"],
        "KAFKA_GROUP_ID": t["group"],
        **extra,
    }


def test_exactly_once_matches_replay_and_dead_letters(
    kafka_bootstrap: str,
    topics: dict[str, str],
    market: Path,
    expected: dict[str, dict],
    sfa_run: Launcher,
) -> None:
    values = _values(market)
    mixed = values[:1000] + [v for v, _ in BAD] + values[1000:]
    _produce(kafka_bootstrap, topics["input"], mixed)
    proc = _start(sfa_run, kafka_bootstrap, _env(topics))
    _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"])
    assert _stop(proc) == 0

    last = _assert_once_and_as_replayed(kafka_bootstrap, topics["output"], expected)
    # produce_keyed partitions with librdkafka's crc32 default, not the service's murmur2:
    # most bars reach their owner through the repartition topic (SPEC 7).
    via = {r["input"]["topic"] for r in last.values()}
    assert via <= {topics["input"], f"{topics['group']}-repartition"}

    dead = _read_all(kafka_bootstrap, topics["dlq"])
    got = sorted((_headers(m)["sfa.reason"].decode(), m.value()) for m in dead)
    assert got == sorted((reason, value) for value, reason in BAD)
    for m in dead:
        headers = _headers(m)
        assert headers["sfa.source.topic"].decode() == topics["input"]
        assert int(headers["sfa.source.offset"]) >= 0
        assert "sfa.source.partition" in headers


def test_sigkill_three_times_no_loss_no_duplicates(
    kafka_bootstrap: str,
    topics: dict[str, str],
    market: Path,
    expected: dict[str, dict],
    sfa_run: Launcher,
) -> None:
    values = _values(market)
    env = _env(
        topics,
        SFA_BATCH_MAX_MESSAGES="500",
        DASK_ENABLE_DISTRIBUTED="false",
        # A killed member holds its partitions until its session times out (45 s by
        # default); the broker's minimum lets each restart take over within seconds.
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_HEARTBEAT_INTERVAL_MS="1000",
    )
    # The market is date-ordered: four slices of time, each one only makes sense on top of
    # the state the previous instances committed (and that a restart must restore).
    chunks = [values[i * len(values) // 4 : (i + 1) * len(values) // 4] for i in range(4)]
    watcher = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topics["group"]})
    parts = [TopicPartition(topics["input"], p) for p in range(3)]

    def committed() -> int:
        return sum(max(tp.offset, 0) for tp in watcher.committed(parts, timeout=10))

    _produce(kafka_bootstrap, topics["input"], chunks[0])
    produced = len(chunks[0])
    for chunk in chunks[1:]:
        proc = _start(sfa_run, kafka_bootstrap, env)
        # Let it commit everything so far, then feed it more and kill it without warning
        # as soon as it has committed some of the new input: mid-stream, every time.
        deadline = time.time() + 60
        while committed() < produced:
            proc.check_alive()
            assert time.time() < deadline, "no progress before the kill"
            time.sleep(0.1)
        _produce(kafka_bootstrap, topics["input"], chunk)
        while committed() <= produced and time.time() < deadline:
            time.sleep(0.05)
        produced += len(chunk)
        proc.kill()
    watcher.close()
    proc = _start(sfa_run, kafka_bootstrap, env)
    _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"])
    assert _stop(proc) == 0

    _assert_once_and_as_replayed(kafka_bootstrap, topics["output"], expected)


def test_a_zombie_with_the_same_transactional_id_is_fenced_and_exits(
    kafka_bootstrap: str,
    topics: dict[str, str],
    market: Path,
    expected: dict[str, dict],
    sfa_run: Launcher,
) -> None:
    """Two processes claiming one instance id: the newer one's init_transactions fences
    the older, whose next commit fails; it must exit non-zero (for its supervisor) and
    nothing it had in flight may become visible."""
    values = _values(market)
    half = len(values) // 2
    env = _env(
        topics,
        SFA_INSTANCE_ID="twin",
        DASK_ENABLE_DISTRIBUTED="false",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_HEARTBEAT_INTERVAL_MS="1000",
    )
    _produce(kafka_bootstrap, topics["input"], values[:half])
    zombie = _start(sfa_run, kafka_bootstrap, env)
    _wait_done(zombie, kafka_bootstrap, topics["group"], topics["input"])
    successor = _start(sfa_run, kafka_bootstrap, env)
    # It fences the zombie as it starts its producer, before it joins the group: once it
    # has restored the state of the partitions it was given, both are done.
    successor.wait_for(
        "the successor's partitions", lambda: "state restored" in successor.text(), 60
    )
    _produce(kafka_bootstrap, topics["input"], values[half:])
    try:
        code = zombie.wait(60)
    finally:
        zombie.close()
    assert code not in (0, None)
    stderr = zombie.text()
    assert "fenc" in stderr.lower(), stderr[-2000:]
    _wait_done(successor, kafka_bootstrap, topics["group"], topics["input"])
    assert _stop(successor) == 0

    _assert_once_and_as_replayed(kafka_bootstrap, topics["output"], expected)
