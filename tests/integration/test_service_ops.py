"""`sfa run` as operators meet it, against the real broker: loading files with
`sfa produce`, two instances sharing a group (and one leaving mid-stream), at-least-once
delivery through a crash, metrics and health, clean shutdown, configuration errors,
secrets and JSON logs. Every service runs as a real subprocess; every test has its own
uuid topics and group."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from service.ownership import owner
from tests.integration.conftest import ServiceTopicsFactory
from tests.integration.kafka_io import comparable as _comparable
from tests.integration.kafka_io import read_committed as _read_all
from tests.integration.launcher import Launcher, SfaProcess

pytestmark = pytest.mark.integration

SECRET = f"s3cr3t-{uuid.uuid4().hex}"


# A SIGKILLed member keeps its partitions until its session times out (45 s by default);
# the broker's minimum keeps restarts after a crash quick.
def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """The well-keyed fast path (SPEC 7): each bar keyed by its symbol, on its owner
    partition, as `sfa produce` sends it, so nothing is forwarded and every figure these
    tests check (messages, batches, lag per partition) is the input's own. Forwarding
    has its tests in test_service.py and test_forwarding.py."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    partitions = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    for value in values:
        try:
            symbol = orjson.loads(value).get("symbol", "")
        except (orjson.JSONDecodeError, AttributeError):
            symbol = ""
        if symbol:
            producer.produce(topic, value, key=symbol.encode(), partition=owner(symbol, partitions))
        else:
            producer.produce(topic, value, partition=0)
        producer.poll(0)
    assert producer.flush(30) == 0


QUICK_SESSION = {"KAFKA_SESSION_TIMEOUT_MS": "6000", "KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
SPLIT_DATE = "2019-01-01"  # first half / second half of every symbol's history

BAD = [
    (b"{nope", "invalid_json"),
    (b"42", "not_an_object"),
    (orjson.dumps({"date": "2020-01-02", "close": 1.0}), "missing_field:symbol"),
    (orjson.dumps({"symbol": "B.SH", "date": "2020/01/02", "close": 1.0}), "invalid_field:date"),
    (orjson.dumps({"symbol": "B.SH", "date": "2020-01-02", "close": 0}), "invalid_field:close"),
    (orjson.dumps({"symbol": "B.SH", "date": "2020-01-02", "close": -1}), "invalid_field:close"),
    (b"x" * 2000, "too_large"),
]

# SPEC 10: name -> (type, label names). Counters are parsed under their name minus _total.
FAMILIES: dict[str, tuple[str, set[str]]] = {
    "sfa_messages_consumed_total": ("counter", {"topic"}),
    "sfa_bars_processed_total": ("counter", set()),
    "sfa_dead_letters_total": ("counter", {"reason"}),
    "sfa_results_produced_total": ("counter", {"status"}),
    "sfa_batches_total": ("counter", {"outcome"}),
    "sfa_batch_size_messages": ("histogram", set()),
    "sfa_batch_latency_seconds": ("histogram", set()),
    "sfa_end_to_end_latency_seconds": ("histogram", set()),
    "sfa_analyses_total": ("counter", {"outcome"}),
    "sfa_success_ratio": ("gauge", set()),
    "sfa_inflight_batches": ("gauge", set()),
    "sfa_consumer_lag_messages": ("gauge", {"topic", "partition"}),
    "sfa_state_symbols": ("gauge", set()),
    "sfa_state_bars": ("gauge", set()),
    "sfa_state_bytes": ("gauge", set()),
    "sfa_dask_workers": ("gauge", set()),
    "sfa_dask_worker_memory_bytes": ("gauge", {"worker"}),
    "sfa_dask_fallback_active": ("gauge", set()),
    "sfa_build_info": ("gauge", {"version"}),
}


# --- running the CLI -----------------------------------------------------------------


def _cli(
    *args: str, env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("market") / "bars.jsonl"
    args = ["--symbols", "12", "--start-year", "2016", "--end-year", "2021", "--seed", "3"]
    done = _cli("generate", *args, "--output", str(path), env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    return [line for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def expected(market: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """`sfa replay` of the market: the last result per symbol, without `input`."""
    folder = tmp_path_factory.mktemp("replay")
    (folder / "bars.jsonl").write_bytes(b"\n".join(market) + b"\n")
    env = {**os.environ, "DASK_ENABLE_DISTRIBUTED": "false"}
    done = _cli(
        "replay", str(folder / "bars.jsonl"), "--output", str(folder / "out.jsonl"), env=env
    )
    assert done.returncode == 0, done.stderr
    last: dict[str, dict] = {}
    for line in (folder / "out.jsonl").read_bytes().splitlines():
        result = orjson.loads(line)
        last[result["symbol"]] = _comparable(result)
    return last


def _halves(market: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Every symbol's bars before SPLIT_DATE, then the rest: results of the second half
    depend on state built from the first."""
    first = [v for v in market if orjson.loads(v)["date"] < SPLIT_DATE]
    second = [v for v in market if orjson.loads(v)["date"] >= SPLIT_DATE]
    return first, second


# --- Kafka helpers -------------------------------------------------------------------


class Progress:
    """The group's committed offsets on the input topic, against its end offsets."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        meta = self._consumer.list_topics(topic, timeout=10)
        self._parts = [TopicPartition(topic, p) for p in sorted(meta.topics[topic].partitions)]
        self._repartition = f"{group}-repartition"

    def committed(self) -> dict[int, int]:
        found = self._consumer.committed(self._parts, timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in found}

    def ends(self) -> dict[int, int]:
        return {
            tp.partition: self._consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in self._parts
        }

    def done(self) -> bool:
        """The input committed to its end, and the repartition topic too (nothing there
        for a well-keyed feed; a forwarded bar is not done until its owner read it)."""
        if self.committed() != self.ends():
            return False
        meta = self._consumer.list_topics(self._repartition, timeout=10).topics
        parts = [TopicPartition(self._repartition, p) for p in meta[self._repartition].partitions]
        for tp in self._consumer.committed(parts, timeout=10) if parts else []:
            end = self._consumer.get_watermark_offsets(tp, timeout=10)[1]
            # transactional: the last offset of a partition is a commit marker, never read
            if end and tp.offset not in (end, end - 1):
                return False
        return True

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture()
def progress(kafka_bootstrap: str) -> Iterator[Callable[[str, str], Progress]]:
    made: list[Progress] = []

    def make(group: str, topic: str) -> Progress:
        made.append(Progress(kafka_bootstrap, group, topic))
        return made[-1]

    yield make
    for p in made:
        p.close()


def _wait(
    what: str, condition: Callable[[], bool], services: list[SfaProcess], timeout: float = 90.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for service in services:
            service.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _results(messages: list[Message]) -> tuple[dict[str, dict], list[dict]]:
    """Last result per symbol, and all results in order; asserts no duplicate (symbol, input)."""
    last: dict[str, dict] = {}
    every: list[dict] = []
    for msg in messages:
        result = orjson.loads(msg.value() or b"")
        assert (msg.key() or b"").decode() == result["symbol"]
        every.append(result)
        last[result["symbol"]] = result
    seen = Counter((r["symbol"], orjson.dumps(r["input"])) for r in every)
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"duplicate (symbol, input) among committed results: {dupes[:5]}"
    return last, every


def _assert_matches_replay(last: dict[str, dict], expected: dict[str, dict]) -> None:
    assert sorted(last) == sorted(expected), "symbols missing or extra"
    for symbol, result in last.items():
        assert _comparable(result) == expected[symbol], f"{symbol} differs from sfa replay"


def _members(admin: AdminClient, group: str) -> dict[str, set[int]]:
    """client.id -> assigned input partitions, as the group coordinator describes them."""
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        m.client_id: {tp.partition for tp in (m.assignment.topic_partitions or [])}
        for m in described.members
    }


def _assert_json_log(lines: list[str]) -> None:
    """SPEC: the service logs one JSON object per line (shippers parse it)."""
    assert lines, "no log at all"
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line is not JSON: {line[:300]}") from None
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "msg"} <= record.keys(), line


# --- HTTP ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except OSError:
        return 0, ""  # not listening yet


def _scrape(port: int) -> dict[str, Any]:
    status, text = _get(port, "/metrics")
    assert status == 200, status
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], sample: str, **labels: str) -> float:
    """Sum of the samples called `sample` whose labels include `labels`."""
    return sum(
        s.value
        for family in families.values()
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


# --- topics and environment ----------------------------------------------------------


def _env(bootstrap: str, t: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SFA_INPUT_TOPIC": t["input"],
        "SFA_OUTPUT_TOPIC": t["output"],
        "SFA_DLQ_TOPIC": t["dlq"],
        "SFA_STATE_TOPIC": t["state"],
        "KAFKA_GROUP_ID": t["group"],
        "SFA_METRICS_PORT": "0",
        "SFA_BATCH_MAX_MESSAGES": "2000",
        "SFA_BATCH_MAX_WAIT_MS": "100",
        "SFA_MAX_MESSAGE_BYTES": "1000",
        "DASK_ENABLE_DISTRIBUTED": "false",
        **extra,
    }


# --- 1. sfa produce ------------------------------------------------------------------


def test_produce_loads_jsonl_and_csv_keyed_by_symbol_and_the_service_consumes_it(
    kafka_bootstrap: str,
    service_topics: ServiceTopicsFactory,
    sfa_run: Launcher,
    progress: Callable[[str, str], Progress],
    market: list[bytes],
    expected: dict[str, dict],
    tmp_path: Path,
) -> None:
    t = service_topics(4)
    first, second = _halves(market)
    jsonl = tmp_path / "first.jsonl"
    jsonl.write_bytes(b"\n".join(first) + b"\n")
    # The second half as CSV with the original system's column names (SPEC 1 aliases).
    table = tmp_path / "second.csv"
    columns = ["stock_code", "trade_date", "open_price", "high_price", "low_price", "close_price"]
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "volume"])
        for value in second:
            bar = orjson.loads(value)
            fields = ("symbol", "date", "open", "high", "low", "close", "volume")
            writer.writerow([bar[k] for k in fields])

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    done = _cli("produce", str(jsonl), str(table), "--topic", t["input"], env=env)
    assert done.returncode == 0, done.stderr
    assert f"{len(market)} messages to {t['input']}" in done.stderr

    loaded = _read_all(kafka_bootstrap, t["input"])
    assert len(loaded) == len(market)
    partitions_of: dict[str, set[int]] = {}
    for msg in loaded:
        bar = orjson.loads(msg.value() or b"")
        symbol = bar.get("symbol", bar.get("stock_code"))
        assert msg.key() == symbol.encode()
        partitions_of.setdefault(symbol, set()).add(msg.partition() or 0)
    assert all(len(p) == 1 for p in partitions_of.values()), "a symbol spans partitions"
    assert len(set().union(*partitions_of.values())) > 1, "everything landed on one partition"

    service = sfa_run(_env(kafka_bootstrap, t))
    watch = progress(t["group"], t["input"])
    _wait("the whole input committed", watch.done, [service])
    code, _ = service.stop()
    assert code == 0
    last, _ = _results(_read_all(kafka_bootstrap, t["output"]))
    _assert_matches_replay(last, expected)
    assert {r["input"]["topic"] for r in last.values()} == {t["input"]}


# --- 2. two instances, one group -----------------------------------------------------


def test_two_instances_share_partitions_and_state_moves_when_one_stops(
    kafka_bootstrap: str,
    kafka_admin: AdminClient,
    service_topics: ServiceTopicsFactory,
    sfa_run: Launcher,
    progress: Callable[[str, str], Progress],
    market: list[bytes],
    expected: dict[str, dict],
) -> None:
    t = service_topics(4)
    first, second = _halves(market)
    ports = {"a": _free_port(), "b": _free_port()}
    run_id = uuid.uuid4().hex[:6]
    services = {
        name: sfa_run(
            _env(
                kafka_bootstrap,
                t,
                SFA_INSTANCE_ID=f"{name}-{run_id}",
                SFA_METRICS_PORT=str(port),
                SFA_BATCH_MAX_MESSAGES="300",
                **QUICK_SESSION,
            )
        )
        for name, port in ports.items()
    }
    both = list(services.values())
    client = {name: f"sfa-{name}-{run_id}" for name in services}

    def split_between_both() -> bool:
        members = _members(kafka_admin, t["group"])
        return (
            set(members) == set(client.values())
            and all(members.values())
            and set().union(*members.values()) == {0, 1, 2, 3}
        )

    _wait("both instances to own partitions", split_between_both, both)
    _wait(
        "both /readyz 200", lambda: all(_get(p, "/readyz")[0] == 200 for p in ports.values()), both
    )

    watch = progress(t["group"], t["input"])
    _produce(kafka_bootstrap, t["input"], first)
    _wait("the first half committed", watch.done, both)
    for name, port in ports.items():
        consumed = _value(_scrape(port), "sfa_messages_consumed_total")
        assert 0 < consumed < len(first), f"instance {name} consumed {consumed} of {len(first)}"

    # Stop `a` while the second half streams in: its partitions, with the state of their
    # symbols, must move to `b` through the state topic.
    _produce(kafka_bootstrap, t["input"], second)
    code, seconds = services["a"].stop()
    assert code == 0
    assert seconds < 30
    _wait(
        "b to own every partition",
        lambda: _members(kafka_admin, t["group"]) == {client["b"]: {0, 1, 2, 3}},
        [services["b"]],
    )
    _wait("the whole input committed", watch.done, [services["b"]])
    code, _ = services["b"].stop()
    assert code == 0

    last, _ = _results(_read_all(kafka_bootstrap, t["output"]))
    _assert_matches_replay(last, expected)
    for service in both:
        _assert_json_log(service.lines())
    restored = [r for r in services["b"].records() if r["msg"] == "state restored"]
    assert restored[-1]["records"] > 0, "b took over a's partitions without restoring state"
    assert restored[-1]["symbols"] == len(expected)


# --- 3. at least once ----------------------------------------------------------------


def test_at_least_once_through_a_crash_misses_nothing(
    kafka_bootstrap: str,
    service_topics: ServiceTopicsFactory,
    sfa_run: Launcher,
    progress: Callable[[str, str], Progress],
    market: list[bytes],
    expected: dict[str, dict],
) -> None:
    t = service_topics(3)
    first, second = _halves(market)
    env = _env(
        kafka_bootstrap,
        t,
        SFA_PROCESSING_GUARANTEE="at_least_once",
        SFA_BATCH_MAX_MESSAGES="300",
        **QUICK_SESSION,
    )
    watch = progress(t["group"], t["input"])
    _produce(kafka_bootstrap, t["input"], first)
    service = sfa_run(env)
    _wait("the first half committed", watch.done, [service])
    _produce(kafka_bootstrap, t["input"], second)
    time.sleep(0.3)
    service.kill()

    service = sfa_run(env)
    _wait("the whole input committed", watch.done, [service])
    code, _ = service.stop()
    assert code == 0

    messages = _read_all(kafka_bootstrap, t["output"])
    last = {}
    for msg in messages:  # repeats are allowed here; gaps are not
        result = orjson.loads(msg.value() or b"")
        last[result["symbol"]] = result
    _assert_matches_replay(last, expected)
    _assert_json_log(service.lines())


# --- 4. metrics and health -----------------------------------------------------------


def test_metrics_and_health_of_a_running_service(
    kafka_bootstrap: str,
    service_topics: ServiceTopicsFactory,
    sfa_run: Launcher,
    progress: Callable[[str, str], Progress],
    market: list[bytes],
) -> None:
    t = service_topics(2)
    values = market[:3000] + [v for v, _ in BAD] + market[3000:]
    _produce(kafka_bootstrap, t["input"], values)
    port = _free_port()
    unreachable = f"tcp://127.0.0.1:{_free_port()}"
    service = sfa_run(
        _env(
            kafka_bootstrap,
            t,
            SFA_METRICS_PORT=str(port),
            DASK_SCHEDULER_ADDRESS=unreachable,
            SFA_DASK_FALLBACK="local",
            DASK_CONNECT_TIMEOUT="1s",
            KAFKA_SASL_PASSWORD=SECRET,
            # A deprecated property: librdkafka warns about it in every client, and that
            # warning must arrive as JSON like every other log line. (A consumer-only one
            # no longer reaches the producer, so it no longer warns.)
            KAFKA_SOCKET_BLOCKING_MAX_MS="100",
        )
    )
    _wait("/healthz 200", lambda: _get(port, "/healthz")[0] == 200, [service])
    _wait("/readyz 200", lambda: _get(port, "/readyz")[0] == 200, [service])
    ready = json.loads(_get(port, "/readyz")[1])
    assert ready["assigned"] is True
    assert ready["fallback_active"] is True

    watch = progress(t["group"], t["input"])
    _wait("the whole input committed", watch.done, [service])
    results = _read_all(kafka_bootstrap, t["output"])
    statuses = Counter(orjson.loads(m.value() or b"")["status"] for m in results)

    def caught_up() -> bool:
        families = _scrape(port)
        lags = families["sfa_consumer_lag_messages"].samples
        # The repartition twins show up once they have been fetched from; empty, they never are.
        input_lags = [s for s in lags if s.labels["topic"] == t["input"]]
        return (
            _value(families, "sfa_messages_consumed_total") == len(values)
            and _value(families, "sfa_results_produced_total") == len(results)
            and len(input_lags) == 2
            and all(s.value == 0 for s in lags)
        )

    _wait("metrics to show the whole input", caught_up, [service], timeout=30)
    families = _scrape(port)

    for name, (kind, labels) in FAMILIES.items():
        parsed = name.removesuffix("_total") if kind == "counter" else name
        assert parsed in families, f"{name} missing from /metrics"
        assert families[parsed].type == kind, f"{name} is {families[parsed].type}, not {kind}"
        for sample in families[parsed].samples:
            assert set(sample.labels) - {"le"} == labels, f"{sample.name} labels {sample.labels}"
    assert any(name.startswith("process_") for name in families)

    assert _value(families, "sfa_messages_consumed_total", topic=t["input"]) == len(values)
    assert _value(families, "sfa_bars_processed_total") == len(market)
    assert families["sfa_bars_forwarded"].type == "counter"
    assert _value(families, "sfa_bars_forwarded_total") == 0  # a well-keyed feed
    for reason, n in Counter(reason for _, reason in BAD).items():
        assert _value(families, "sfa_dead_letters_total", reason=reason) == n, reason
    assert _value(families, "sfa_dead_letters_total") == len(BAD)
    for status, n in statuses.items():
        assert _value(families, "sfa_results_produced_total", status=status) == n, status
        assert _value(families, "sfa_analyses_total", outcome=status) == n, status
    batches = _value(families, "sfa_batches_total", outcome="ok")
    assert batches >= 1
    assert _value(families, "sfa_batches_total", outcome="failed") == 0
    assert _value(families, "sfa_batch_size_messages_count") == batches
    assert _value(families, "sfa_batch_size_messages_sum") == len(values)
    assert _value(families, "sfa_end_to_end_latency_seconds_count") == len(values)
    assert _value(families, "sfa_state_symbols") == 12
    assert _value(families, "sfa_state_bars") > 0
    assert _value(families, "sfa_inflight_batches") == 0
    assert _value(families, "sfa_dask_fallback_active") == 1
    assert _value(families, "sfa_dask_workers") == 0
    build = families["sfa_build_info"].samples
    assert len(build) == 1 and build[0].value == 1 and build[0].labels["version"]
    assert _get(port, "/healthz")[0] == 200
    assert _get(port, "/readyz")[0] == 200

    code, _ = service.stop()
    assert code == 0
    lines = service.lines()
    _assert_json_log(lines)
    records = [json.loads(line) for line in lines]
    assert any(
        r["level"] == "WARNING"
        and r["logger"] == "service.compute.stream"
        and unreachable in r["msg"]
        for r in records
    ), "no warning that Dask is unreachable"
    assert any(r["logger"] == "service.kafka.librdkafka" for r in records)
    assert SECRET not in service.log_path.read_text()
    starting = next(r for r in records if r["msg"] == "starting")
    assert starting["settings"]["kafka_extra"]["sasl.password"] == "***"


# --- 5. clean shutdown ---------------------------------------------------------------


def test_sigterm_mid_stream_exits_cleanly_and_a_restart_finishes_without_duplicates(
    kafka_bootstrap: str,
    service_topics: ServiceTopicsFactory,
    sfa_run: Launcher,
    progress: Callable[[str, str], Progress],
    market: list[bytes],
    expected: dict[str, dict],
) -> None:
    t = service_topics(3)
    _produce(kafka_bootstrap, t["input"], market)
    env = _env(kafka_bootstrap, t, SFA_BATCH_MAX_MESSAGES="100", SFA_BATCH_MAX_WAIT_MS="50")
    watch = progress(t["group"], t["input"])
    service = sfa_run(env)
    _wait("a first commit", lambda: sum(watch.committed().values()) > 0, [service])
    code, seconds = service.stop()
    assert code == 0
    assert seconds < 30
    assert service.records()[-1]["msg"] == "stopped"
    _assert_json_log(service.lines())

    # What is committed is consistent: output exists exactly for committed input.
    committed = watch.committed()
    assert sum(committed.values()) < len(market), "finished before SIGTERM: not mid-stream"
    _, every = _results(_read_all(kafka_bootstrap, t["output"]))
    assert every
    for result in every:
        where = result["input"]
        assert where["offset"] < committed[where["partition"]], "output of uncommitted input"

    # Small batches above kept the first run mid-stream; the rest can go in big ones.
    service = sfa_run({**env, "SFA_BATCH_MAX_MESSAGES": "2000"})
    _wait("the whole input committed", watch.done, [service])
    code, _ = service.stop()
    assert code == 0
    last, _ = _results(_read_all(kafka_bootstrap, t["output"]))
    _assert_matches_replay(last, expected)


# --- 6. configuration errors and secrets ---------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SFA_WINDOW_DAYS", "500"),
        ("SFA_PROCESSING_GUARANTEE", "maybe"),
        ("SFA_BATCH_MAX_MESSAGES", "lots"),
        ("DASK_CONNECT_TIMEOUT", "soon"),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_variable(
    kafka_bootstrap: str, variable: str, value: str
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_SASL_PASSWORD": SECRET,
        "SFA_METRICS_PORT": "0",
        variable: value,
    }
    done = _cli("run", env=env, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0]
    assert SECRET not in done.stderr


def test_a_missing_input_topic_fails_at_start_naming_sfa_input_topic(kafka_bootstrap: str) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_SASL_PASSWORD": SECRET,
        "SFA_METRICS_PORT": "0",
        "SFA_INPUT_TOPIC": missing,
        "DASK_ENABLE_DISTRIBUTED": "false",
    }
    done = _cli("run", env=env, timeout=30)
    assert done.returncode == 1  # nothing could be done, as in produce and tail (docs/cli.md)
    lines = done.stderr.strip().splitlines()
    naming = [line for line in lines if "SFA_INPUT_TOPIC" in line]
    assert len(naming) == 1, done.stderr
    assert missing in naming[0]
    assert naming[0] == lines[-1]
    _assert_json_log(lines[:-1])  # everything logged before the CLI's error line
    assert SECRET not in done.stderr


def test_a_taken_metrics_port_fails_with_one_line_naming_sfa_metrics_port(
    kafka_bootstrap: str,
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SFA_METRICS_PORT": str(taken.getsockname()[1]),
        }
        done = _cli("run", env=env, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if "SFA_METRICS_PORT" in line] == [lines[-1]], done.stderr
    _assert_json_log(lines[:-1])
