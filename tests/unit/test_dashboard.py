"""The Grafana dashboard: built in code, committed as JSON, valid, and querying only metrics
that exist.

The schema under deploy/grafana/schema/ was generated once from the npm package
`@grafana/schema` (see its SOURCE and generate.sh), so this test needs no npm.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest
import yaml
from distributed import Scheduler
from distributed.http.scheduler.prometheus.core import SchedulerMetricCollector
from prometheus_client.parser import text_string_to_metric_families

from service.run.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
COMMITTED = GRAFANA / "dashboards" / "sfa.json"
SCHEMA = GRAFANA / "schema" / "dashboard.schema.json"


def _load(name: str) -> ModuleType:
    """deploy/ is not a package: load a builder module from its file."""
    spec = importlib.util.spec_from_file_location(f"sfa_grafana_{name}", GRAFANA / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


board = _load("dashboard")
alerting = _load("alerting")


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def _exported_sfa_names() -> set[str]:
    """Sample and family names one Metrics instance exposes with every provider set."""
    metrics = Metrics("test")
    metrics.set_providers(
        state=lambda: (1, 2, 3),
        lag=lambda: {("bars", 0): 5},
        dask=lambda: {"tcp://w:1": 1.0},
        inflight=lambda: 1,
    )
    metrics.dead_letter("invalid_json")  # label-less until the first one
    metrics.messages_consumed("bars", 1)
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def _dask_scheduler_names() -> set[str]:
    async def collect() -> set[str]:
        async with Scheduler(host="127.0.0.1", port=0, dashboard=False) as scheduler:
            return {family.name for family in SchedulerMetricCollector(scheduler).collect()}

    return asyncio.run(collect())


def _queried() -> set[str]:
    return {
        name
        for panel in board.PANELS
        for query in panel.queries
        for name in board.metric_names(query.expr)
    }


def test_committed_json_is_the_built_dashboard() -> None:
    """Edit deploy/grafana/dashboard.py, then regenerate: see its docstring."""
    assert COMMITTED.read_text() == board.render(), (
        "deploy/grafana/dashboards/sfa.json drifted from deploy/grafana/dashboard.py; run "
        "`.venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/dashboards/sfa.json`"
    )


def test_dashboard_matches_the_grafana_schema() -> None:
    errors = [
        f"{e.json_path}: {e.message}"
        for e in _validator().iter_errors(json.loads(COMMITTED.read_text()))
    ]
    assert errors == []


@pytest.mark.parametrize(
    ("path", "value"),
    [(("panels", 0, "gridPos", "w"), "wide"), (("graphTooltip",), 7), (("refresh",), 30)],
)
def test_the_schema_rejects_a_broken_dashboard(path: tuple[str | int, ...], value: object) -> None:
    """The schema really constrains: a wrong type or an unknown enum value fails it."""
    doc = copy.deepcopy(json.loads(COMMITTED.read_text()))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(_validator().iter_errors(doc)) != []


def test_every_required_panel_is_there() -> None:
    titles = {panel["title"] for panel in json.loads(COMMITTED.read_text())["panels"]}
    assert titles == {
        "Throughput",
        "Consumer lag",
        "Batch latency",
        "End-to-end latency",
        "Success ratio",
        "Dead letters by reason",
        "Forwarded bars",
        "Batches by outcome",
        "State size",
        "Memory",
        "Dask workers",
        "In-flight batches",
        "Fallback and stall",
        "Rebalances",
    }


def test_every_queried_metric_exists() -> None:
    exported = _exported_sfa_names() | _dask_scheduler_names()
    assert sorted(_queried() - exported) == []


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le) (rate(sfa_batch_latency_seconds_bucket{a="b"}[5m]))',
            {"sfa_batch_latency_seconds"},
        ),
        ("a_total / on (instance) group_left (x) b > bool 0", {"a_total", "b"}),
        ('absent(up{job="sfa"} == 1) or vector(0)', {"up"}),
        ('count(x{l="and or y"}) offset 5m', {"x"}),
    ],
)
def test_metric_names_lexer(expr: str, names: set[str]) -> None:
    assert board.metric_names(expr) == names


def test_provisioned_alerts_are_the_prometheus_rules() -> None:
    committed = GRAFANA / "provisioning" / "alerting" / "sfa-alerts.yaml"
    assert committed.read_text() == alerting.render(), (
        "provisioning/alerting/sfa-alerts.yaml drifted from deploy/prometheus/alerts.yaml; "
        "regenerate it (see deploy/grafana/alerting.py)"
    )
    prometheus_rules = yaml.safe_load(alerting.RULES.read_text())["groups"][0]["rules"]
    grafana_rules = alerting.build()["groups"][0]["rules"]
    assert [r["title"] for r in grafana_rules] == [r["alert"] for r in prometheus_rules]
    for grafana, source in zip(grafana_rules, prometheus_rules, strict=True):
        assert grafana["for"] == source.get("for", "0s")
        assert " ".join(str(source["expr"]).split()) in grafana["data"][0]["model"]["expr"]


def test_provisioning_points_at_the_dashboard_and_the_datasource_uid() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    [source] = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090"
    uids = {
        target["datasource"]["uid"]
        for panel in json.loads(COMMITTED.read_text())["panels"]
        for target in panel["targets"]
    }
    assert uids == {source["uid"]}
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/sfa.yaml").read_text())
    assert provider["providers"][0]["options"]["path"].endswith("/sfa")
