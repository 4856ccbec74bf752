"""The sfa Grafana dashboard, built in typed Python (grafana-foundation-sdk, Grafana 11.x).

Hand-edited dashboard JSON drifts from the metrics it queries and nobody notices until a
panel goes blank in an incident. Here every panel is code next to the metric contract:
`tests/unit/test_dashboard.py` rebuilds this module's output and fails when it differs from
the committed `dashboards/sfa.json`, validates it against the Dashboard schema of
`@grafana/schema` and checks every metric it names against `service/run/metrics.py`.

Regenerate the committed JSON after a change:

    .venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/dashboards/sfa.json

Queries use `$__rate_interval` (Grafana picks a window of at least four scrapes) and the
provisioned Prometheus datasource `uid: prometheus` (provisioning/datasources/).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, GridPos

__all__ = [
    "PANELS",
    "PanelSpec",
    "Query",
    "build",
    "metric_names",
    "render",
]

UID = "sfa-service"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    """One PromQL target and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """What a panel shows; `kind` picks the visualisation, `unit` is a Grafana unit id."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    max_value: float | None = None


def _quantiles(metric: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


#: Every panel, in reading order (two per row). Titles are the runbook's headings in
#: docs/monitoring.md.
PANELS: tuple[PanelSpec, ...] = (
    PanelSpec(
        "Throughput",
        "Messages consumed, valid bars applied and results produced per second, per instance.",
        (
            Query(
                f"sum by (instance) (rate(sfa_messages_consumed_total[{RATE}]))",
                "msgs {{instance}}",
            ),
            Query(
                f"sum by (instance) (rate(sfa_bars_processed_total[{RATE}]))", "bars {{instance}}"
            ),
            Query(
                f"sum by (instance) (rate(sfa_results_produced_total[{RATE}]))",
                "results {{instance}}",
            ),
        ),
        unit="ops",
    ),
    PanelSpec(
        "Consumer lag",
        "Messages behind the high watermark per input partition, and the group's total.",
        (
            Query(
                "sum by (topic, partition) (sfa_consumer_lag_messages)", "{{topic}}/{{partition}}"
            ),
            Query("sum(sfa_consumer_lag_messages)", "total"),
        ),
    ),
    PanelSpec(
        "Batch latency",
        "Batch closed until its output was committed (p50/p95/p99 over all instances).",
        _quantiles("sfa_batch_latency_seconds"),
        unit="s",
    ),
    PanelSpec(
        "End-to-end latency",
        "Message timestamp until the output it fed was committed (includes catching up).",
        _quantiles("sfa_end_to_end_latency_seconds"),
        unit="s",
    ),
    PanelSpec(
        "Success ratio",
        "ok analyses / all analyses: since start (the exported gauge) and over the window.",
        (
            Query("sfa_success_ratio", "since start {{instance}}"),
            Query(
                f'sum(rate(sfa_analyses_total{{outcome="ok"}}[{RATE}])) '
                f"/ sum(rate(sfa_analyses_total[{RATE}]))",
                "window",
            ),
        ),
        unit="percentunit",
        max_value=1.0,
    ),
    PanelSpec(
        "Dead letters by reason",
        "Records sent to the dead-letter topic per second, by SPEC 1 reason code.",
        (Query(f"sum by (reason) (rate(sfa_dead_letters_total[{RATE}]))", "{{reason}}"),),
        unit="ops",
    ),
    PanelSpec(
        "Forwarded bars",
        "Bars read from a partition that does not own their symbol, sent to the "
        "repartition topic (SPEC 7).",
        (Query(f"sum by (instance) (rate(sfa_bars_forwarded_total[{RATE}]))", "{{instance}}"),),
        unit="ops",
    ),
    PanelSpec(
        "Batches by outcome",
        "Finished batches per second: ok, retried, failed.",
        (Query(f"sum by (outcome) (rate(sfa_batches_total[{RATE}]))", "{{outcome}}"),),
        unit="ops",
    ),
    PanelSpec(
        "State size",
        "Symbols and bars held in the window store, per instance.",
        (
            Query("sfa_state_symbols", "symbols {{instance}}"),
            Query("sfa_state_bars", "bars {{instance}}"),
        ),
    ),
    PanelSpec(
        "Memory",
        "Resident memory of each sfa process, its window store, and each Dask worker.",
        (
            Query('process_resident_memory_bytes{job="sfa"}', "rss {{instance}}"),
            Query("sfa_state_bytes", "state {{instance}}"),
            Query("max by (worker) (sfa_dask_worker_memory_bytes)", "dask {{worker}}"),
        ),
        unit="bytes",
    ),
    PanelSpec(
        "Dask workers",
        "Workers each instance sees, and the scheduler's workers by state (paused = over "
        "the memory pause fraction).",
        (
            Query("sfa_dask_workers", "seen by {{instance}}"),
            Query("sum by (state) (dask_scheduler_workers)", "scheduler {{state}}"),
        ),
    ),
    PanelSpec(
        "In-flight batches",
        "Batches consumed but not committed; at SFA_MAX_INFLIGHT_BATCHES the consumer pauses.",
        (Query("sfa_inflight_batches", "{{instance}}"),),
    ),
    PanelSpec(
        "Fallback and stall",
        "1 while an instance computes without Dask, or has lag and finishes no batch.",
        (
            Query("sfa_dask_fallback_active", "fallback {{instance}}"),
            Query(
                "(sum by (instance) (sfa_consumer_lag_messages) > bool 0) * on (instance) "
                f'(sum by (instance) (rate(sfa_batches_total{{outcome="ok"}}[{RATE}])) == bool 0)',
                "stalled {{instance}}",
            ),
        ),
        kind="state-timeline",
    ),
    PanelSpec(
        "Rebalances",
        "Input partitions each instance holds (a step is a rebalance), and rebalance "
        "events (assigned, revoked, lost).",
        (
            Query("count by (instance) (sfa_consumer_lag_messages)", "partitions {{instance}}"),
            Query(
                f"sum by (instance) (increase(sfa_rebalances_total[{RATE}]))", "events {{instance}}"
            ),
        ),
    ),
)


def _targets(spec: PanelSpec) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery()
        .expr(q.expr)
        .legend_format(q.legend)
        .ref_id(chr(ord("A") + i))
        .datasource(DATASOURCE)
        for i, q in enumerate(spec.queries)
    ]


def _panel(spec: PanelSpec, index: int) -> timeseries.Panel | statetimeline.Panel:
    pos = GridPos(h=8, w=12, x=12 * (index % 2), y=8 * (index // 2))
    panel: timeseries.Panel | statetimeline.Panel
    if spec.kind == "state-timeline":
        panel = statetimeline.Panel().min(0).max(1)
    else:
        panel = (
            timeseries.Panel()
            .line_width(1)
            .fill_opacity(10)
            .legend(
                common_builder.VizLegendOptions()
                .display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM)
                .show_legend(True)
            )
        )
        if spec.max_value is not None:
            panel = panel.min(0).max(spec.max_value)
    panel = (
        panel.id(index + 1)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .grid_pos(pos)
    )
    for target in _targets(spec):
        panel = panel.with_target(target)
    return panel


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*")  # not inside "5m" or "1e3"
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric families a PromQL expression selects (histogram series folded to the family).

    A small lexer rather than a PromQL parser: strings, label matchers, ranges and label
    lists are removed, then every identifier not followed by `(` and not a keyword is a
    metric. Enough for the expressions of this dashboard and deploy/prometheus/alerts.yaml,
    which the tests hold to it (and the live Prometheus test checks against real data).
    """
    text = _LABEL_LISTS.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub(" ", expr)))
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        name = match.group()
        if rest.startswith("(") or name.lower() in _KEYWORDS or name.startswith("$"):
            continue
        for suffix in _HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.startswith("sfa_"):
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def build() -> dash.Dashboard:
    """The dashboard builder (call `.build()` for the model)."""
    board = (
        dash.Dashboard("sfa: Spring Festival alignment service")
        .uid(UID)
        .description("Throughput, lag, latency, quality and resources of `sfa run` (SPEC 10).")
        .tags(["sfa", "kafka", "dask"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
    )
    for index, spec in enumerate(PANELS):
        board = board.with_panel(_panel(spec, index))
    return board


def render() -> str:
    """The dashboard as the committed JSON text (stable key order, trailing newline)."""
    model = build().build()
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
