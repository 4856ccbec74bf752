"""Metrics and health (SPEC 10): the exposition contract, scrape-time gauges, the probes and
the real HTTP endpoint on an ephemeral port. `promtool` is not installed here, so
`_promlint` re-implements the naming rules of `promtool check metrics` we rely on."""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import numpy as np
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from service.run.health import Health, MetricsServer
from service.run.metrics import (
    BATCH_SIZE_BUCKETS,
    END_TO_END_BUCKETS,
    LATENCY_BUCKETS,
    Metrics,
    StateStats,
)

# SPEC 10's table: exposed name -> (type, label names). Counters are listed with `_total`.
SPEC_FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "sfa_messages_consumed_total": ("counter", frozenset({"topic"})),
    "sfa_bars_processed_total": ("counter", frozenset()),
    "sfa_bars_forwarded_total": ("counter", frozenset()),
    "sfa_dead_letters_total": ("counter", frozenset({"reason"})),
    "sfa_results_produced_total": ("counter", frozenset({"status"})),
    "sfa_batches_total": ("counter", frozenset({"outcome"})),
    "sfa_batch_size_messages": ("histogram", frozenset()),
    "sfa_batch_latency_seconds": ("histogram", frozenset()),
    "sfa_end_to_end_latency_seconds": ("histogram", frozenset()),
    "sfa_analyses_total": ("counter", frozenset({"outcome"})),
    "sfa_success_ratio": ("gauge", frozenset()),
    "sfa_inflight_batches": ("gauge", frozenset()),
    "sfa_consumer_lag_messages": ("gauge", frozenset({"topic", "partition"})),
    "sfa_state_symbols": ("gauge", frozenset()),
    "sfa_state_bars": ("gauge", frozenset()),
    "sfa_state_bytes": ("gauge", frozenset()),
    "sfa_dask_workers": ("gauge", frozenset()),
    "sfa_dask_worker_memory_bytes": ("gauge", frozenset({"worker"})),
    "sfa_dask_fallback_active": ("gauge", frozenset()),
    "sfa_build_info": ("gauge", frozenset({"version"})),
    "sfa_schema_registry_up": ("gauge", frozenset()),
    "sfa_schema_registry_failures_total": ("counter", frozenset()),
    # Beyond SPEC 10's table: the dashboard's rebalance panel reads it.
    "sfa_rebalances_total": ("counter", frozenset({"kind"})),
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _families(m: Metrics) -> dict[str, Metric]:
    """Parsed families keyed by the name as exposed (counters with `_total`)."""
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = family
    return out


def _value(m: Metrics, sample: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def _busy(m: Metrics) -> Metrics:
    """Touch every family so each one has samples."""
    m.messages_consumed("bars", 10)
    m.bars_processed(9)
    m.bars_forwarded(4)
    m.dead_letter("invalid_json")
    m.result_produced("ok", 3)
    m.batch("ok")
    m.analyses("ok", 3)
    m.analyses("insufficient_history")
    m.observe_batch(10, 0.2)
    m.observe_end_to_end(0.5)
    m.set_fallback_active(True)
    m.schema_registry("cannot reach the schema registry")
    m.set_providers(
        state=lambda: StateStats(symbols=3, bars=120, nbytes=4096),
        lag=lambda: {("bars", 0): 5, ("bars", 1): 0},
        dask=lambda: {"tcp://10.0.0.1:4000": 1e9, "tcp://10.0.0.2:4000": 2e9},
        inflight=lambda: 2,
    )
    return m


# --- the exposition contract --------------------------------------------------------------


def test_every_spec_family_has_its_type_labels_and_samples() -> None:
    families = _families(_busy(Metrics("1.2.3")))
    for name, (kind, labels) in SPEC_FAMILIES.items():
        assert name in families, name
        family = families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no samples"
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)


def test_counters_end_in_total_in_the_raw_exposition() -> None:
    text = _busy(Metrics("1")).render().decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    counters = {n for n, t in types.items() if t == "counter" and n.startswith("sfa_")}
    assert counters == {n for n, (t, _) in SPEC_FAMILIES.items() if t == "counter"}
    assert all(n.endswith("_total") for n in counters)


def test_schema_registry_families_exist_only_once_a_registry_is_used() -> None:
    m = Metrics("1")
    assert "sfa_schema_registry_up" not in _families(m)
    m.schema_registry("refused")
    m.schema_registry("refused")
    m.schema_registry(None)
    families = _families(m)
    assert families["sfa_schema_registry_up"].samples[0].value == 1
    failures = families["sfa_schema_registry_failures_total"].samples
    assert [s.value for s in failures if s.name.endswith("_total")] == [2]


def test_default_process_and_python_collectors_are_on_the_registry() -> None:
    names = set(_families(Metrics("1")))
    assert "process_cpu_seconds_total" in names
    assert "process_resident_memory_bytes" in names
    assert "python_info" in names


def test_build_info_is_one_with_the_version() -> None:
    assert _value(Metrics("9.9.9"), "sfa_build_info", version="9.9.9") == 1.0


def test_instances_have_separate_registries() -> None:
    a, b = Metrics("1"), Metrics("1")  # a second instance must not raise "Duplicated timeseries"
    a.bars_processed(5)
    assert _value(a, "sfa_bars_processed_total") == 5.0
    assert _value(b, "sfa_bars_processed_total") == 0.0


def test_known_outcomes_exist_at_zero_and_unknown_ones_are_rejected() -> None:
    m = Metrics("1")
    for outcome in ("ok", "retried", "failed"):
        assert _value(m, "sfa_batches_total", outcome=outcome) == 0.0
    with pytest.raises(ValueError, match="batch outcome"):
        m.batch("weird")
    with pytest.raises(ValueError, match="analysis outcome"):
        m.analyses("weird")


def test_success_ratio_is_one_before_any_analysis_then_ok_over_all() -> None:
    m = Metrics("1")
    assert _value(m, "sfa_success_ratio") == 1.0
    m.analyses("ok", 3)
    m.analyses("error")
    assert _value(m, "sfa_success_ratio") == 0.75
    m.analyses("insufficient_history", 4)
    assert _value(m, "sfa_success_ratio") == pytest.approx(3 / 8)


# --- histograms -----------------------------------------------------------------------------


def test_bucket_bounds_cover_the_ranges_we_promised() -> None:
    assert BATCH_SIZE_BUCKETS[0] == 1 and BATCH_SIZE_BUCKETS[-1] == 100_000
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 300
    assert END_TO_END_BUCKETS[: len(LATENCY_BUCKETS)] == LATENCY_BUCKETS


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    m = Metrics("1")
    m.observe_batch(10, 0.1)  # exactly on bounds: counted in le="10.0" and le="0.1"
    m.observe_batch(11, 400.0)
    assert _value(m, "sfa_batch_size_messages_bucket", le="5.0") == 0
    assert _value(m, "sfa_batch_size_messages_bucket", le="10.0") == 1
    assert _value(m, "sfa_batch_size_messages_bucket", le="20.0") == 2
    assert _value(m, "sfa_batch_size_messages_bucket", le="+Inf") == 2
    assert _value(m, "sfa_batch_size_messages_sum") == 21
    assert _value(m, "sfa_batch_latency_seconds_bucket", le="0.1") == 1
    assert _value(m, "sfa_batch_latency_seconds_bucket", le="300.0") == 1
    assert _value(m, "sfa_batch_latency_seconds_count") == 2


def test_end_to_end_takes_scalars_lists_and_arrays() -> None:
    m = Metrics("1")
    m.observe_end_to_end(0.002)
    m.observe_end_to_end([0.002, 1.0])
    m.observe_end_to_end(np.array([-3.0, math.nan, math.inf, 5000.0]))  # skew->0, no-ts dropped
    assert _value(m, "sfa_end_to_end_latency_seconds_count") == 5
    assert _value(m, "sfa_end_to_end_latency_seconds_bucket", le="0.001") == 1
    assert _value(m, "sfa_end_to_end_latency_seconds_bucket", le="0.0025") == 3
    assert _value(m, "sfa_end_to_end_latency_seconds_bucket", le="3600.0") == 4
    assert _value(m, "sfa_end_to_end_latency_seconds_sum") == pytest.approx(5001.004)


def test_vectorised_end_to_end_handles_a_big_batch() -> None:
    m = Metrics("1")
    m.observe_end_to_end(np.linspace(0.0, 1.0, 100_001))
    assert _value(m, "sfa_end_to_end_latency_seconds_count") == 100_001
    assert _value(m, "sfa_end_to_end_latency_seconds_bucket", le="0.5") == 50_001


def test_negative_batch_size_is_a_bug() -> None:
    with pytest.raises(ValueError):
        Metrics("1").observe_batch(-1, 0.1)


# --- scrape-time gauges ---------------------------------------------------------------------


def test_scrape_time_gauges_follow_the_providers() -> None:
    m = Metrics("1")
    lag: dict[tuple[str, int], int] = {("bars", 0): 7, ("bars", 1): -1001}  # -1001: unknown
    workers = {"tcp://w1:1": 1.5e9}
    size = [3]
    m.set_providers(
        state=lambda: (size[0], 100, 2048),  # a plain tuple works as well as StateStats
        lag=lambda: lag,
        dask=lambda: workers,
        inflight=lambda: 1,
    )
    assert _value(m, "sfa_state_symbols") == 3
    assert _value(m, "sfa_state_bars") == 100
    assert _value(m, "sfa_state_bytes") == 2048
    assert _value(m, "sfa_inflight_batches") == 1
    assert _value(m, "sfa_consumer_lag_messages", topic="bars", partition="0") == 7
    assert _value(m, "sfa_consumer_lag_messages", topic="bars", partition="1") is None
    assert _value(m, "sfa_dask_workers") == 1
    assert _value(m, "sfa_dask_worker_memory_bytes", worker="tcp://w1:1") == 1.5e9
    size[0], lag[("bars", 0)] = 4, 2
    workers["tcp://w2:1"] = 1.0
    assert _value(m, "sfa_state_symbols") == 4  # read at scrape time, never stale
    assert _value(m, "sfa_consumer_lag_messages", topic="bars", partition="0") == 2
    assert _value(m, "sfa_dask_workers") == 2


def test_before_any_provider_the_gauges_read_nothing_held() -> None:
    """A service that has just started holds nothing: zero, not "unknown" (the dashboard
    shows a line from the first scrape); lag has no series until partitions arrive."""
    m = Metrics("1")
    for name in ("sfa_state_symbols", "sfa_state_bars", "sfa_state_bytes"):
        assert _value(m, name) == 0
    assert _value(m, "sfa_inflight_batches") == 0
    assert _value(m, "sfa_dask_workers") == 0
    assert _families(m)["sfa_consumer_lag_messages"].samples == []


def test_cleared_providers_expose_headers_only() -> None:
    m = Metrics("1")
    m.clear_providers()
    families = _families(m)
    for name in ("sfa_state_symbols", "sfa_consumer_lag_messages", "sfa_dask_workers"):
        assert families[name].samples == []


def test_a_raising_provider_costs_only_its_own_samples_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = Metrics("1")
    broken = [True]

    def state() -> StateStats:
        if broken[0]:
            raise RuntimeError("store closed")
        return StateStats(1, 2, 3)

    m.set_providers(state=state, inflight=lambda: 5)
    with caplog.at_level(logging.WARNING, logger="service.run.metrics"):
        for _ in range(3):
            families = _families(m)
            assert "sfa_state_symbols" in families and families["sfa_state_symbols"].samples == []
            assert _value(m, "sfa_inflight_batches") == 5
    assert sum("'state' failed" in r.getMessage() for r in caplog.records) == 1
    broken[0] = False
    assert _value(m, "sfa_state_symbols") == 1


def test_clear_providers_stops_calling_them() -> None:
    m = Metrics("1")
    m.set_providers(inflight=lambda: 5)
    m.clear_providers()
    assert _value(m, "sfa_inflight_batches") is None


# --- promtool-style lint ------------------------------------------------------------------

_NON_BASE_UNITS = re.compile(
    r"_(milli|micro|nano)?(seconds?_ms|ms|us|ns|milliseconds|microseconds|nanoseconds|minutes?"
    r"|hours?|days?|kilobytes|megabytes|gigabytes|kb|mb|gb|kib|mib|gib|percent)(_|$)"
)
_NEEDS_SECONDS = re.compile(r"(latency|duration|elapsed|time)(_|$)")
_NEEDS_BYTES = re.compile(r"(memory|size)(_|$)")
_SNAKE = re.compile(r"^[a-z_][a-z0-9_]*$")
_SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum", "_info")


def _promlint(text: str) -> list[str]:
    """The naming rules of `promtool check metrics` (promlint) that apply to our output."""
    helps = dict(re.findall(r"^# HELP (\S+) ?(.*)$", text, flags=re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    problems = []
    for name, kind in types.items():
        if not helps.get(name, "").strip():
            problems.append(f"{name}: no help text")
        if ":" in name:
            problems.append(f"{name}: metric names should not contain ':'")
        if not _SNAKE.match(name):
            problems.append(f"{name}: metric names should be written in snake_case")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f'{name}: counter metrics should have "_total" suffix')
        if kind != "counter" and name.endswith("_total"):
            problems.append(f'{name}: non-counter metrics should not have "_total" suffix')
        if kind not in ("histogram", "summary") and name.endswith(("_bucket", "_count", "_sum")):
            problems.append(f"{name}: reserved histogram/summary suffix")
        if _NON_BASE_UNITS.search(name):
            problems.append(f"{name}: use base units (seconds, bytes, ratio)")
        for word in ("counter", "gauge", "histogram", "summary"):
            if word in name.split("_"):
                problems.append(f"{name}: metric name should not include type '{word}'")
        stem = name
        for suffix in _SUFFIXES:
            stem = stem.removesuffix(suffix)
        if _NEEDS_SECONDS.search(stem) and not stem.endswith("_seconds"):
            problems.append(f"{name}: a duration should be in _seconds")
        if _NEEDS_BYTES.search(stem) and not stem.endswith(("_bytes", "_messages")):
            problems.append(f"{name}: a size should carry its unit (_bytes, _messages)")
    for label in set(re.findall(r"[{,]([^=,{}]+)=\"", text)):
        if not _SNAKE.match(label):
            problems.append(f"label {label}: label names should be written in snake_case")
    return problems


def test_exposition_passes_the_promtool_style_lint() -> None:
    assert _promlint(_busy(Metrics("1")).render().decode()) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# HELP a_things x\n# TYPE a_things counter\na_things 1\n", '"_total" suffix'),
        ("# HELP a_total x\n# TYPE a_total gauge\na_total 1\n", "non-counter"),
        ("# HELP a:b x\n# TYPE a:b gauge\na:b 1\n", "':'"),
        ("# TYPE a_b gauge\na_b 1\n", "no help text"),
        ("# HELP a_latency_ms x\n# TYPE a_latency_ms gauge\na_latency_ms 1\n", "base units"),
        ("# HELP a_latency x\n# TYPE a_latency gauge\na_latency 1\n", "_seconds"),
        ("# HELP a_memory x\n# TYPE a_memory gauge\na_memory 1\n", "unit"),
        ('# HELP a_b x\n# TYPE a_b gauge\na_b{workerId="1"} 1\n', "label workerId"),
    ],
)
def test_the_lint_catches_what_promtool_would(text: str, problem: str) -> None:
    assert any(problem in p for p in _promlint(text)), _promlint(text)


# --- probes ---------------------------------------------------------------------------------


def test_healthz_stalls_only_with_lag_and_no_recent_batch() -> None:
    clock = FakeClock()
    lag: dict[tuple[str, int], int] = {("bars", 0): 0}
    health = Health(stall_seconds=120, clock=clock)
    health.set_lag_provider(lambda: lag)
    clock.now += 500
    assert health.liveness().ok  # idle without lag is alive
    lag[("bars", 0)] = 10
    probe = health.liveness()
    assert not probe.ok and probe.status == 503
    assert probe.body["status"] == "stalled" and probe.body["lag_messages"] == 10
    health.batch_finished()
    assert health.liveness().ok
    clock.now += 120
    assert health.liveness().ok  # exactly at the limit is not yet a stall
    clock.now += 1
    assert not health.liveness().ok


def test_healthz_counts_from_start_and_ignores_unknown_lag() -> None:
    clock = FakeClock()
    health = Health(stall_seconds=10, clock=clock)
    clock.now += 60
    assert health.liveness().ok  # no lag provider yet: unknown, not stalled

    def broken() -> Mapping[tuple[str, int], int]:
        raise RuntimeError("consumer closed")

    health.set_lag_provider(broken)
    assert health.liveness().ok
    health.set_lag_provider(lambda: 3)  # a summed total is accepted too
    assert not health.liveness().ok  # never finished a batch since start


def test_readyz_needs_partitions_and_dask_or_fallback() -> None:
    health = Health()
    assert not health.readiness().ok
    health.set_assigned(True)
    probe = health.readiness()
    assert not probe.ok and "Dask" in probe.body["reason"]
    health.set_fallback_active(True)
    assert health.readiness().ok
    health.set_fallback_active(False)
    health.set_dask_ready(True)
    assert health.readiness().ok
    health.set_assigned(False)
    assert health.readiness().body["reason"].startswith("no partitions assigned")


def test_stall_seconds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Health(stall_seconds=0)


# --- the HTTP endpoint --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read()


@pytest.fixture
def served() -> Iterator[tuple[str, Metrics, Health, FakeClock]]:
    clock = FakeClock()
    metrics, health = Metrics("1.0"), Health(stall_seconds=30, clock=clock)
    with MetricsServer(metrics, health, port=_free_port(), host="127.0.0.1") as server:
        yield f"http://127.0.0.1:{server.port}", metrics, health, clock


def test_metrics_endpoint_serves_the_text_format(
    served: tuple[str, Metrics, Health, FakeClock],
) -> None:
    url, metrics, _, _ = served
    metrics.bars_processed(4)
    status, content_type, body = _get(url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"sfa_bars_processed", "sfa_build_info", "process_cpu_seconds"} <= names


def test_healthz_flips_on_a_stall_and_back_after_a_batch(
    served: tuple[str, Metrics, Health, FakeClock],
) -> None:
    url, _, health, clock = served
    health.set_lag_provider(lambda: {("bars", 0): 42})
    assert _get(url + "/healthz")[0] == 200
    clock.now += 31
    status, content_type, body = _get(url + "/healthz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body)["status"] == "stalled"
    health.batch_finished()
    status, _, body = _get(url + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_readyz_over_http(served: tuple[str, Metrics, Health, FakeClock]) -> None:
    url, _, health, _ = served
    status, _, body = _get(url + "/readyz")
    assert status == 503 and json.loads(body)["assigned"] is False
    health.set_assigned(True)
    health.set_dask_ready(True)
    assert _get(url + "/readyz")[0] == 200


def test_unknown_path_is_404(served: tuple[str, Metrics, Health, FakeClock]) -> None:
    assert _get(served[0] + "/nope")[0] == 404


def test_port_zero_disables_the_server() -> None:
    server = MetricsServer(Metrics("1"), Health(), port=0)
    server.start()
    assert not server.enabled and server.port == 0
    server.stop()


def test_stop_releases_the_port_and_is_idempotent() -> None:
    port = _free_port()
    server = MetricsServer(Metrics("1"), Health(), port=port, host="127.0.0.1")
    server.start()
    server.start()
    assert server.port == port
    server.stop()
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
