"""Every family the dashboard and the alert rules query is on a fresh service's first
scrape, at zero where nothing has happened yet (SPEC 10; `service.run.metrics`' docstring).

The names come from the dashboard's panels and deploy/prometheus/alerts.yaml themselves,
so a panel or rule added for a family the service does not export fails here, not as a
blank panel in an incident.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.run.metrics import REBALANCE_KINDS, Metrics

ROOT = Path(__file__).resolve().parents[3]
#: Families whose label values are only learnt later: a placeholder series would be a lie
#: (the SfaNoInstanceReady rule counts lag series as "holds partitions").
LEARNT_LATER = {"sfa_consumer_lag_messages", "sfa_dask_worker_memory_bytes"}
#: Gauges whose value before anything happened is not zero, and why.
NOT_ZERO_AT_START = {
    "sfa_build_info": 1.0,  # always 1
    "sfa_success_ratio": 1.0,  # 1 before the first analysis, so start-up never alerts
}


def _dashboard() -> ModuleType:
    """deploy/ is not a package: load the dashboard builder from its file."""
    path = ROOT / "deploy" / "grafana" / "dashboard.py"
    spec = importlib.util.spec_from_file_location("sfa_grafana_dashboard_names", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _queried() -> set[str]:
    """Families of this service the panels and the alert rules select (the Dask
    scheduler's own families are its exporter's business; test_dashboard.py checks them)."""
    board = _dashboard()
    exprs = [query.expr for panel in board.PANELS for query in panel.queries]
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    exprs += [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    names = {name for expr in exprs for name in board.metric_names(expr)}
    return {name for name in names if not name.startswith("dask_scheduler_")}


def _first_scrape() -> dict[str, list[Sample]]:
    """Family name (with a counter's `_total`) -> its samples, as Prometheus would store."""
    text = Metrics("test", topics=("bars",)).render().decode()
    families: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = list(family.samples)
    return families


def test_the_dashboard_and_the_rules_name_what_this_test_expects() -> None:
    """Not vacuous: the lexer finds the families the panels are known to show."""
    queried = _queried()
    assert {"sfa_rebalances_total", "sfa_dead_letters_total", "sfa_state_symbols"} <= queried
    assert queried >= LEARNT_LATER


def test_every_queried_family_has_samples_on_the_first_scrape() -> None:
    families = _first_scrape()
    queried = _queried()
    absent = sorted(queried - families.keys())
    assert absent == [], f"not exported at all: {absent}"
    empty = sorted(name for name in queried - LEARNT_LATER if not families[name])
    assert empty == [], f"exported without a sample on the first scrape: {empty}"
    assert all(families[name] == [] for name in LEARNT_LATER)


def test_what_has_not_happened_yet_reads_zero() -> None:
    families = _first_scrape()
    for name in _queried() - LEARNT_LATER:
        for sample in families[name]:
            if sample.name.endswith(("_created", "_bucket")) or name.startswith("process_"):
                continue  # timestamps, histogram buckets (+Inf included), the process itself
            expected = NOT_ZERO_AT_START.get(name, 0.0)
            assert sample.value == expected, f"{sample.name}{sample.labels}"


def test_rebalances_are_counted_by_kind() -> None:
    metrics = Metrics("test")
    metrics.rebalance("assigned")
    metrics.rebalance("assigned")
    metrics.rebalance("lost")
    counted = {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        if family.name == "sfa_rebalances"
        for sample in family.samples
        if sample.name == "sfa_rebalances_total"
    }
    assert counted == {"assigned": 2.0, "revoked": 0.0, "lost": 1.0}
    assert set(REBALANCE_KINDS) == set(counted)


def test_an_unknown_rebalance_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="rebalance kind"):
        Metrics("test").rebalance("moved")  # type: ignore[arg-type]
