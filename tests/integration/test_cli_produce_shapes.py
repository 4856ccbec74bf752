"""`sfa produce` shapes against the real broker (SPEC 7): keyed records on their owner
partition, strictly increasing timestamps in line order, snapshots and unkeyed lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Message

from service.ownership import owner
from tests.integration.conftest import NewTopicFactory
from tests.integration.kafka_io import read_committed

pytestmark = pytest.mark.integration


def _sfa(bootstrap: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service", "produce", *args],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def _market(tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    """Single bars, a mixed-symbol array and corrections later in the file."""
    bars = [
        {"symbol": f"S{i}.SH", "date": f"2024-01-{d:02d}", "close": 10.0 + d}
        for d in range(2, 6)
        for i in range(12)
    ]
    lines = [orjson.dumps(b) for b in bars[:24]]
    lines.append(orjson.dumps(bars[24:]))  # one array, twelve symbols, two dates
    corrections = [{**b, "close": 99.0} for b in bars[:3]]
    lines += [orjson.dumps(c) for c in corrections]
    path = tmp_path / "bars.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, bars + corrections


def _values(m: Message) -> list[dict[str, object]]:
    value = orjson.loads(m.value() or b"null")
    return value if isinstance(value, list) else [value]


def _bars_in_order(messages: list[Message]) -> list[dict[str, object]]:
    """Every bar, in (timestamp, partition offset, array index) order: SPEC 1's event order."""
    out: list[tuple[int, int | None, int | None, int, dict[str, object]]] = []
    for m in messages:
        for i, bar in enumerate(_values(m)):
            out.append((m.timestamp()[1], m.partition(), m.offset(), i, bar))
    return [bar for *_, bar in sorted(out, key=lambda x: (x[0], x[2] or 0, x[3]))]


def _versions(bars: list[dict[str, object]]) -> dict[tuple[object, object], list[object]]:
    """Per (symbol, date), its closes in order: the order a correction must keep (SPEC 1)."""
    out: dict[tuple[object, object], list[object]] = {}
    for b in bars:
        out.setdefault((b["symbol"], b["date"]), []).append(b["close"])
    return out


@pytest.mark.parametrize("partitioner", ["murmur2", "crc32"])
def test_keyed_records_land_on_their_owner_with_increasing_timestamps(
    kafka_bootstrap: str, new_topic: NewTopicFactory, tmp_path: Path, partitioner: str
) -> None:
    topic = new_topic(partitions=8)
    path, expected = _market(tmp_path)
    _sfa(kafka_bootstrap, str(path), "--topic", topic, env={"SFA_PARTITIONER": partitioner})
    got = read_committed(kafka_bootstrap, topic)
    for m in got:
        key = (m.key() or b"").decode()
        assert {b["symbol"] for b in _values(m)} == {key}  # one symbol per record, keyed by it
        assert m.partition() == owner(key, 8, partitioner)  # type: ignore[arg-type]
    stamps = sorted(m.timestamp()[1] for m in got)
    assert len(set(stamps)) == len(stamps)  # strictly increasing: no two records share one
    # event order is line order for every (symbol, date), whatever partition it took
    assert _versions(_bars_in_order(got)) == _versions(expected)
    assert any(len(v) == 2 for v in _versions(expected).values())
    assert len({m.partition() for m in got}) > 4


def test_snapshot_sends_one_unkeyed_array_per_date(
    kafka_bootstrap: str, new_topic: NewTopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    path, expected = _market(tmp_path)
    _sfa(kafka_bootstrap, str(path), "--topic", topic, "--snapshot")
    got = read_committed(kafka_bootstrap, topic)
    assert all(m.key() is None for m in got)
    dates = [{b["date"] for b in _values(m)} for m in sorted(got, key=lambda m: m.timestamp()[1])]
    assert dates == [{"2024-01-02"}, {"2024-01-03"}, {"2024-01-04"}, {"2024-01-05"}]
    # inside a date, line order: each correction follows the bar it corrects
    assert _versions(_bars_in_order(got)) == _versions(expected)
    first_day = _values(sorted(got, key=lambda m: m.timestamp()[1])[0])
    assert [b["close"] for b in first_day if b["symbol"] == "S0.SH"] == [12.0, 99.0]

    first_day = _values(sorted(got, key=lambda m: m.timestamp()[1])[0])


def test_unkeyed_sends_each_line_without_a_key(
    kafka_bootstrap: str, new_topic: NewTopicFactory, tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    path, _ = _market(tmp_path)
    _sfa(kafka_bootstrap, str(path), "--topic", topic, "--unkeyed")
    got = sorted(read_committed(kafka_bootstrap, topic), key=lambda m: m.timestamp()[1])
    assert all(m.key() is None for m in got)
    assert [m.value() for m in got] == path.read_bytes().splitlines()
