"""Avro input through a real schema registry (Apicurio) and the real broker: `sfa
produce --format avro`, `sfa run` decoding a topic that mixes JSON and wire-format
messages, schema evolution, bad payloads and a registry outage, each checked against
`sfa replay` of the equivalent JSON file."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from service.registry import RegistryError
from service.wireformat import BAR_SCHEMA, BAR_SCHEMA_TEXT, AvroBarEncoder, wire_header
from tests.integration.conftest import NewTopicFactory, ServiceTopicsFactory
from tests.integration.kafka_io import comparable, produce_keyed, read_committed
from tests.integration.launcher import Launcher
from tests.integration.registry import Registry, schema_registry
from tests.integration.test_service import _env, _stop, _wait_done

pytestmark = pytest.mark.integration
__all__ = ["schema_registry"]  # the fixture, imported to be found

# A producer's next version: one more optional field (BACKWARD compatible).
EVOLVED = dict(
    BAR_SCHEMA,
    fields=[*BAR_SCHEMA["fields"], {"name": "vwap", "type": ["null", "double"], "default": None}],
)
# A version that adds a required field: old records cannot be read with it.
REQUIRED = dict(BAR_SCHEMA, fields=[*BAR_SCHEMA["fields"], {"name": "venue", "type": "string"}])


def _sfa(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env=env, capture_output=True, check=False
    )


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wire") / "bars.jsonl"
    done = _sfa(
        "generate", "--symbols", "8", "--start-year", "2017", "--end-year", "2021",
        "--seed", "5", "--output", str(path), env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def expected(market: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("wire-replay") / "results.jsonl"
    env = {**os.environ, "DASK_ENABLE_DISTRIBUTED": "false"}
    done = _sfa("replay", str(market), "--output", str(out), env=env)
    assert done.returncode == 0, done.stderr
    return {r["symbol"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}


def _split(market: Path, parts: int) -> list[Path]:
    """Line i of the market into part i % parts (each part a file of its own)."""
    lines = market.read_bytes().splitlines(keepends=True)
    paths = [market.with_name(f"part{k}.jsonl") for k in range(parts)]
    for k, path in enumerate(paths):
        path.write_bytes(b"".join(lines[k::parts]))
    return paths


def _service_env(kafka: str, topics: dict[str, str], url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "SFA_SCHEMA_REGISTRY_URL": url,
        "SFA_METRICS_PORT": "0",
        "SFA_BATCH_MAX_MESSAGES": "2000",
        "SFA_BATCH_MAX_WAIT_MS": "200",
        "DASK_ENABLE_DISTRIBUTED": "false",
        **_env(topics),
        **extra,
    }


def _last(kafka: str, topic: str) -> dict[str, dict]:
    results = (orjson.loads(m.value() or b"") for m in read_committed(kafka, topic))
    return {r["symbol"]: r for r in results}


def _dead(kafka: str, topic: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for m in read_committed(kafka, topic):
        headers: dict[str, Any] = dict(m.headers() or [])
        out.append((bytes(headers["sfa.reason"]).decode(), m.value() or b""))
    return sorted(out)


def _avro(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO(wire_header(schema_id))
    out.seek(5)
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def test_json_avro_protobuf_and_json_schema_in_one_topic_equal_replay(
    kafka_bootstrap: str,
    service_topics: ServiceTopicsFactory,
    schema_registry: Registry,
    market: Path,
    expected: dict[str, dict],
    sfa_run: Launcher,
) -> None:
    topics = service_topics(3)
    url = schema_registry.url
    env = _service_env(kafka_bootstrap, topics, url)
    plain, avro, evolved, protobuf, jsonschema = _split(market, 5)
    # A fifth each as JSON, Avro, Protobuf and JSON Schema through `sfa produce`, which
    # registers the schemas (one subject per kind: a subject holds one kind).
    for path, fmt in ((plain, "json"), (avro, "avro"), (protobuf, "protobuf")):
        args = ["--format", fmt, "--subject", f"{topics['input']}-{fmt}"] if fmt != "json" else []
        done = _sfa("produce", str(path), *args, "--no-progress", env=env)
        assert done.returncode == 0, done.stderr
    done = _sfa("produce", str(jsonschema), "--format", "jsonschema", "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    client = schema_registry.client()
    subject = f"{topics['input']}-avro"
    first = client.register(subject, BAR_SCHEMA_TEXT)  # already there: the same id
    # Evolution: an optional field is accepted under BACKWARD, a required one refused.
    second = client.register(subject, json.dumps(EVOLVED))
    assert second != first
    with pytest.raises(RegistryError, match="409"):
        client.register(subject, json.dumps(REQUIRED))
    encoder = AvroBarEncoder(second, EVOLVED)
    values = []
    for line in evolved.read_bytes().splitlines():
        encoded = encoder.encode(line)
        assert isinstance(encoded, bytes)
        values.append(encoded)
    bar = {"symbol": "ZZ.SH", "date": "2020-01-02", "close": 1.0}
    record = {f["name"]: bar.get(f["name"]) for f in BAR_SCHEMA["fields"]}
    good = _avro(first, BAR_SCHEMA, record)
    bad = [
        (_avro(first + second + 1000, BAR_SCHEMA, record), "unknown_schema"),
        (good[:-4], "invalid_avro"),  # truncated
        (_avro(first, REQUIRED, {**record, "venue": "XSHG"}), "invalid_avro"),  # other schema
    ]
    produce_keyed(kafka_bootstrap, topics["input"], values[:50] + [b for b, _ in bad] + values[50:])
    # `sfa tail` prints every value it can decode as its record, the rest as text.
    total = len(market.read_bytes().splitlines()) + len(bad)
    tail = _sfa(
        "tail", topics["input"], "--from-beginning", "--max", str(total), "--timeout", "10", env=env
    )
    assert tail.returncode == 0, tail.stderr
    shown = [orjson.loads(line)["value"] for line in tail.stdout.splitlines()]
    assert len(shown) == total
    assert sum(isinstance(v, str) for v in shown) == len(bad)
    assert {v["symbol"] for v in shown if isinstance(v, dict)} == set(expected)

    proc = sfa_run(env)
    _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"])
    assert _stop(proc) == 0
    got = _last(kafka_bootstrap, topics["output"])
    assert {s: comparable(r) for s, r in got.items()} == {
        s: comparable(r) for s, r in expected.items()
    }
    assert _dead(kafka_bootstrap, topics["dlq"]) == sorted((r, b) for b, r in bad)


def test_produce_names_what_a_format_cannot_carry(
    kafka_bootstrap: str, new_topic: NewTopicFactory, schema_registry: Registry, tmp_path: Path
) -> None:
    topic = new_topic()
    bars = tmp_path / "bars.jsonl"
    bars.write_text(
        '{"symbol": "A.SH", "date": "2020-01-02", "close": 1.5}\n'
        '{"symbol": "A.SH", "date": "2020-01-03"}\n'
        '{"symbol": "A.SH", "date": "2020-01-06", "close": 1.6}\n'
    )
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    no_registry = _sfa("produce", str(bars), "--topic", topic, "--format", "avro", env=env)
    assert no_registry.returncode == 2
    assert no_registry.stderr.decode().strip().splitlines() == [
        "sfa: configuration error: SFA_SCHEMA_REGISTRY_URL: must be set for --format avro"
    ]
    env["SFA_SCHEMA_REGISTRY_URL"] = schema_registry.url
    for fmt in ("avro", "protobuf", "jsonschema"):
        done = _sfa(
            "produce", str(bars), "--topic", topic, "--format", fmt,
            "--subject", f"{topic}-{fmt}", "--no-progress", env=env,
        )  # fmt: skip
        assert done.returncode == 3, done.stderr
        named = [line for line in done.stderr.decode().splitlines() if "skipped" in line]
        assert named[0] == (
            f"sfa: skipped {bars} line 2: cannot be written as {fmt}: close missing or not a number"
        )
    sent = read_committed(kafka_bootstrap, topic)
    assert len(sent) == 6 and all((m.value() or b"")[:1] == b"\x00" for m in sent)


def test_start_with_the_registry_unreachable_is_one_line(
    kafka_bootstrap: str, service_topics: ServiceTopicsFactory
) -> None:
    topics = service_topics(1)
    closed = _free_port()
    env = _service_env(
        kafka_bootstrap,
        topics,
        f"http://127.0.0.1:{closed}/apis/ccompat/v7",
        SFA_SCHEMA_REGISTRY_CONNECT_SECONDS="1",
    )
    done = subprocess.run(
        [sys.executable, "-m", "service", "run"], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("sfa: cannot reach the schema registry at http://127.0.0.1:")
    assert "SFA_SCHEMA_REGISTRY_URL" in lines[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def test_a_registry_outage_of_20_s_loses_nothing_and_healthz_says_so(
    kafka_bootstrap: str,
    service_topics: ServiceTopicsFactory,
    schema_registry: Registry,
    market: Path,
    expected: dict[str, dict],
    sfa_run: Launcher,
) -> None:
    if not schema_registry.ours:
        pytest.skip("the registry was not started by this session: not stopping it")
    topics = service_topics(2)
    port = _free_port()
    env = _service_env(kafka_bootstrap, topics, schema_registry.url, SFA_METRICS_PORT=str(port))
    client = schema_registry.client()
    subject = f"{topics['input']}-value"
    client.set_compatibility(subject, "BACKWARD")
    encoder = AvroBarEncoder(client.register(subject, BAR_SCHEMA_TEXT))
    plain, avro = _split(market, 2)
    done = _sfa("produce", str(plain), "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    proc = sfa_run(env)
    try:
        _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"])
        schema_registry.stop()
        stopped = time.monotonic()
        # The service has not seen this schema yet: it must ask, and wait.
        values = [encoder.encode(line) for line in avro.read_bytes().splitlines()]
        produce_keyed(kafka_bootstrap, topics["input"], [v for v in values if isinstance(v, bytes)])
        seen_down = False
        while time.monotonic() - stopped < 20:
            proc.check_alive()
            body = _healthz(port)
            seen_down = seen_down or body.get("schema_registry", "").startswith("unreachable")
            time.sleep(0.5)
        assert seen_down, "/healthz never said the registry was unreachable"
        schema_registry.start()  # with its schemas, as a production registry comes back
        _wait_done(proc, kafka_bootstrap, topics["group"], topics["input"])
        assert _healthz(port)["schema_registry"] == "reachable"
    finally:
        assert _stop(proc) == 0
    got = _last(kafka_bootstrap, topics["output"])
    assert {s: comparable(r) for s, r in got.items()} == {
        s: comparable(r) for s, r in expected.items()
    }
    assert read_committed(kafka_bootstrap, topics["dlq"]) == []
