"""`sfa topics`, `sfa produce` and `sfa tail` against the real broker, run as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from tests.integration.conftest import NewTopicFactory
from tests.integration.kafka_io import read_committed
from tests.integration.topics import delete_topics

pytestmark = pytest.mark.integration


def _sfa(
    bootstrap: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _bar(day: int, symbol: str = "A.SH", **extra: object) -> bytes:
    return orjson.dumps(
        {"symbol": symbol, "date": f"2020-01-{day:02d}", "close": 1.0 + day, **extra}
    )


def test_produce_skips_a_line_too_large_for_the_topic(
    kafka_bootstrap: str, new_topic: NewTopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(partitions=2, config={"max.message.bytes": "20000"})
    lines = [_bar(d, "A.SH" if d % 2 else "B.SH") for d in range(1, 29)]
    lines.insert(5, _bar(1, "C.SH", pad="x" * 50_000))  # line 6
    bars = tmp_path / "bars.jsonl"
    bars.write_bytes(b"\n".join(lines) + b"\n")
    done = _sfa(kafka_bootstrap, "produce", str(bars), "--topic", topic)
    assert done.returncode == 3, done.stderr
    skipped = [line for line in done.stderr.splitlines() if "skipped" in line and "line" in line]
    assert skipped == [
        f"sfa: skipped {bars} line 6: message of {len(lines[5]) + len(b'C.SH'):,} bytes "
        "is too large for the topic (max.message.bytes 20,000, record framing included)"
    ]
    assert "Traceback" not in done.stderr
    got = read_committed(kafka_bootstrap, topic)
    assert sorted(m.value() or b"" for m in got) == sorted(lines[:5] + lines[6:])
    assert {m.key() for m in got} == {b"A.SH", b"B.SH"}


def test_produce_to_a_missing_topic_fails_in_seconds(kafka_bootstrap: str, tmp_path: Path) -> None:
    bars = tmp_path / "bars.jsonl"
    bars.write_bytes(_bar(1) + b"\n")
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    done = _sfa(kafka_bootstrap, "produce", str(bars), "--topic", missing)
    assert time.monotonic() - started < 15  # librdkafka alone waits for the topic 30 s+
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sfa: topic '{missing}' does not exist on {kafka_bootstrap} "
        "(create it with: sfa topics create)"
    ]


def test_produce_sends_the_readable_part_of_a_broken_file(
    kafka_bootstrap: str, new_topic: NewTopicFactory, tmp_path: Path
) -> None:
    topic = new_topic()
    good = tmp_path / "good.csv"
    good.write_text("symbol,date,close\nA.SH,2020-01-02,3\nA.SH,2020-01-03,4\n")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    done = _sfa(kafka_bootstrap, "produce", str(broken), str(good), "--topic", topic)
    assert done.returncode == 3, done.stderr
    named = [line for line in done.stderr.splitlines() if "broken.parquet" in line]
    assert len(named) == 1 and named[0].startswith(f"sfa: input file {broken} not read: ")
    assert len(read_committed(kafka_bootstrap, topic)) == 2


@pytest.fixture()
def names(kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    base = f"q-{uuid.uuid4().hex[:10]}"
    env = {
        "SFA_INPUT_TOPIC": f"{base}-in",
        "SFA_OUTPUT_TOPIC": f"{base}-out",
        "SFA_DLQ_TOPIC": f"{base}-dlq",
        "SFA_STATE_TOPIC": f"{base}-state",
        "SFA_REPARTITION_TOPIC": f"{base}-repartition",
    }
    yield env
    delete_topics(kafka_admin, env.values())


def test_topics_create_is_idempotent_and_checks_the_shape(
    kafka_bootstrap: str, kafka_admin: AdminClient, names: dict[str, str]
) -> None:
    first = _sfa(kafka_bootstrap, "topics", "create", "--partitions", "3", "--all", env=names)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"topics: {names[v]} ({v}): created, 3 partition(s)" for v in names
    ]
    meta = kafka_admin.list_topics(timeout=10).topics
    assert {len(meta[t].partitions) for t in names.values()} == {3}
    state = ConfigResource(ResourceType.TOPIC, names["SFA_STATE_TOPIC"])
    config = kafka_admin.describe_configs([state])[state].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"
    # the repartition topic as `sfa run` makes it: deleting, a day's retention
    twin = ConfigResource(ResourceType.TOPIC, names["SFA_REPARTITION_TOPIC"])
    config = kafka_admin.describe_configs([twin])[twin].result(timeout=10)
    assert (config["cleanup.policy"].value, config["retention.ms"].value) == ("delete", "86400000")
    again = _sfa(kafka_bootstrap, "topics", "create", "--partitions", "3", "--all", env=names)
    assert again.returncode == 0 and again.stdout.count(": exists,") == 5
    wrong = _sfa(kafka_bootstrap, "topics", "create", "--partitions", "2", env=names)
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines() == [
        f"sfa: SFA_INPUT_TOPIC: topic '{names['SFA_INPUT_TOPIC']}' exists with 3 partition(s), "
        "not 2; delete it or ask for --partitions 3"
    ]


def test_tail_prints_committed_records_with_their_headers(
    kafka_bootstrap: str, new_topic: NewTopicFactory
) -> None:
    topic = new_topic(partitions=2)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(
        topic,
        b"{oops",
        key=b"X.SH",
        partition=0,
        headers=[("sfa.reason", b"invalid_json"), ("sfa.source.offset", b"7")],
    )
    producer.produce(topic, _bar(3), key=b"A.SH", partition=1)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b'{"aborted":true}', key=b"Z", partition=0)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"\xff\xfe", partition=0)
    producer.commit_transaction(30)
    done = _sfa(kafka_bootstrap, "tail", topic, "--from-beginning", "--timeout", "3")
    assert done.returncode == 0, done.stderr
    records = sorted(
        (orjson.loads(x) for x in done.stdout.splitlines()),
        key=lambda r: (r["partition"], r["offset"]),
    )
    assert [(r["partition"], r["key"], r["value"], r["headers"]) for r in records] == [
        (0, "X.SH", "{oops", {"sfa.reason": "invalid_json", "sfa.source.offset": "7"}),
        (0, None, "base64://4=", {}),
        (1, "A.SH", orjson.loads(_bar(3)), {}),
    ]
    assert all(isinstance(r["offset"], int) and r["timestamp"] > 0 for r in records)
    one = _sfa(kafka_bootstrap, "tail", topic, "--from-beginning", "--max", "1")
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 1
    missing = _sfa(kafka_bootstrap, "tail", f"nope-{uuid.uuid4().hex[:8]}", "--max", "1")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
