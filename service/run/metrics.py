"""Every Prometheus metric of the service (SPEC 10); no other module declares one.

Names, types and label sets are a contract with dashboards and alerts, so they live in one
reviewable place and a unit test lints them the way `promtool check metrics` does. Each
`Metrics` owns a private `CollectorRegistry`: several pipelines in one process (and every
test) get their own series instead of colliding on prometheus-client's global registry.

Gauges that mirror live state (window store, consumer lag, Dask workers, in-flight batches)
are not pushed by the pipeline. They are computed at scrape time from provider callbacks the
service registers (the dask/distributed habit), so they cannot go stale and the hot path pays
nothing for them. A provider that raises costs its own family's samples, never the scrape.

The histograms are kept here as numpy bucket counts rather than prometheus-client
`Histogram`s because end-to-end latency arrives as one value per message (up to 100k per
batch): `observe_end_to_end_many` bins a whole array in one `searchsorted` call.

Every family the dashboard (deploy/grafana/dashboard.py) and the alert rules
(deploy/prometheus/alerts.yaml) query is on the first scrape, at zero where nothing has
happened yet: a counter born at its first increment has no "before", so `rate()` and
`increase()` miss that first step, and a panel stays blank. Label values known up front
(outcomes, statuses, rebalance kinds, SPEC 1 reasons, the topics the service reads) are
created at start; only series whose labels are learnt later (a partition's lag, a Dask
worker's memory) wait for them. `tests/unit/run/test_metrics_first_scrape.py` holds this to the
dashboard and the rules.

Callers only see plain Python types; no Prometheus type leaks out of this module. The
probes and the HTTP endpoint live in `service.run.health` and are re-exported here, so the
service wires everything from one import.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from service.run.health import Health, MetricsServer, Probe

__all__ = [
    "ANALYSIS_OUTCOMES",
    "BATCH_OUTCOMES",
    "BATCH_SIZE_BUCKETS",
    "CONTENT_TYPE",
    "DEAD_LETTER_REASONS",
    "END_TO_END_BUCKETS",
    "LATENCY_BUCKETS",
    "REBALANCE_KINDS",
    "DaskProvider",
    "Health",
    "InflightProvider",
    "LagProvider",
    "Metrics",
    "MetricsServer",
    "Probe",
    "RebalanceKind",
    "StateProvider",
    "StateStats",
]

_log = logging.getLogger(__name__)

#: Content type of `Metrics.render()` (the classic text format every scraper understands).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Label values SPEC 10 allows; anything else is a programming error (and would grow cardinality).
BATCH_OUTCOMES = ("ok", "retried", "failed")
ANALYSIS_OUTCOMES = ("ok", "insufficient_history", "error")
_RESULT_STATUSES = ("ok", "insufficient_history")  # pre-created so rate() works from the start
#: What a rebalance did to this member: partitions given, taken back in order, or lost
#: (taken without a chance to commit: the session expired or the member was fenced).
RebalanceKind = Literal["assigned", "revoked", "lost"]
REBALANCE_KINDS: tuple[RebalanceKind, ...] = get_args(RebalanceKind)
#: SPEC 1's reason codes, pre-created at zero; other reasons (the wire formats') are
#: created by their first dead letter.
DEAD_LETTER_REASONS = (
    "invalid_json",
    "not_an_object",
    "too_large",
    *(f"missing_field:{name}" for name in ("symbol", "date", "close")),
    *(
        f"invalid_field:{name}"
        for name in ("symbol", "date", "close", "open", "high", "low", "volume")
    ),
    "date_out_of_range",
    "invalid_forward",
)

#: 1 .. 100k messages, roughly 1-2-5 per decade.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0,
    1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
)  # fmt: skip
#: 1 ms .. 5 min.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
#: End-to-end also covers catching up on a backlog, where minutes to an hour are the news.
END_TO_END_BUCKETS: tuple[float, ...] = (*LATENCY_BUCKETS, 600.0, 1800.0, 3600.0)


class StateStats(NamedTuple):
    """Size of the per-symbol window store; a plain `(symbols, bars, nbytes)` tuple works too."""

    symbols: int
    bars: int
    nbytes: int


#: Returns the window store's size as `StateStats` or a plain `(symbols, bars, nbytes)` tuple.
StateProvider = Callable[[], tuple[int, int, int]]
#: Returns lag in messages per (topic, partition); negative values mean "unknown" and are skipped.
LagProvider = Callable[[], Mapping[tuple[str, int], int]]
#: Returns managed memory in bytes per Dask worker address; empty when no cluster is attached.
DaskProvider = Callable[[], Mapping[str, float]]
#: Returns the number of batches consumed but not yet committed.
InflightProvider = Callable[[], int]


class _Histogram:
    """A thread-safe cumulative histogram over fixed bounds, binned with numpy."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        bounds_array = np.asarray(bounds, dtype=np.float64)
        if bounds_array.size == 0 or not np.all(np.diff(bounds_array) > 0):
            raise ValueError(f"{name}: bucket bounds must be non-empty and strictly increasing")
        self.name = name
        self.documentation = documentation
        self._bounds = bounds_array
        self._labels = [floatToGoString(b) for b in bounds] + ["+Inf"]
        self._counts = np.zeros(bounds_array.size + 1, dtype=np.int64)  # last slot: +Inf only
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        if values.size == 0:
            return
        # side="left": a value equal to a bound belongs to that bucket (Prometheus `le`).
        slots = np.searchsorted(self._bounds, values, side="left")
        binned = np.bincount(slots, minlength=self._counts.size)
        total = float(values.sum())
        with self._lock:
            self._counts += binned
            self._sum += total

    def empty_family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=[])

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(label, float(c)) for label, c in zip(self._labels, cumulative, strict=True)]
        return HistogramMetricFamily(self.name, self.documentation, buckets, sum_value=total)


def _as_array(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _latencies(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Drop non-finite values (no timestamp) and clamp negatives (clock skew) to zero."""
    array = _as_array(values)
    array = array[np.isfinite(array)]
    return np.maximum(array, 0.0)


#: Builds the families fed by one provider; live=False builds headers only (no samples),
#: used by `describe` and in place of a provider that raised.
_Builder = Callable[[bool], list[Metric]]


class _LiveCollector(Collector):
    """Runs the scrape-time builders; a builder that raises costs only its own samples."""

    def __init__(self, builders: Sequence[tuple[str, _Builder]]) -> None:
        self._builders = tuple(builders)
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        # Lets the registry detect name clashes without calling any provider at registration.
        return [family for _, build in self._builders for family in build(False)]

    def collect(self) -> Iterable[Metric]:
        for key, build in self._builders:
            yield from self._safely(key, build)

    def _safely(self, key: str, build: _Builder) -> list[Metric]:
        """Log once per failure streak: a scrape every 15 s must not flood the log."""
        try:
            families = build(True)
        except Exception:
            with self._lock:
                first = key not in self._failing
                self._failing.add(key)
            if first:
                _log.warning(
                    "metrics provider %r failed; its samples are skipped", key, exc_info=True
                )
            return build(False)
        with self._lock:
            recovered = key in self._failing
            self._failing.discard(key)
        if recovered:
            _log.info("metrics provider %r recovered", key)
        return families


class Metrics:
    """The metric families of SPEC 10 on a registry of their own, behind a plain API.

    Counter methods take plain strings and ints; `render()` returns the exposition bytes.
    Live-state gauges come from providers set with `set_providers`. Before the first one
    is set they read zero (nothing held, nothing in flight, no Dask worker yet: true of a
    service that has just started); while a provider fails, and after `clear_providers`,
    its family is exposed without samples, which Prometheus treats as "unknown" rather
    than a misleading value. `topics` are the topics the service will read, so their
    consumed counters exist before the first message.
    """

    def __init__(self, version: str, *, topics: Iterable[str] = ()) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        reg = self._registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)

        self._consumed = Counter(
            "sfa_messages_consumed", "Kafka messages consumed.", ["topic"], registry=reg
        )
        self._bars = Counter("sfa_bars_processed", "Valid bars applied to state.", registry=reg)
        self._forwarded = Counter(
            "sfa_bars_forwarded",
            "Valid bars sent to the repartition topic, their owner partition's (SPEC 7).",
            registry=reg,
        )
        self._dead = Counter(
            "sfa_dead_letters", "Records sent to the dead-letter output.", ["reason"], registry=reg
        )
        self._results = Counter(
            "sfa_results_produced", "Results produced, by status.", ["status"], registry=reg
        )
        self._batches = Counter(
            "sfa_batches", "Finished batches, by outcome.", ["outcome"], registry=reg
        )
        self._analyses = Counter(
            "sfa_analyses", "Symbol analyses run, by outcome.", ["outcome"], registry=reg
        )
        self._fallback = Gauge(
            "sfa_dask_fallback_active", "1 while work runs locally without Dask.", registry=reg
        )
        # Declared on first use: a service without a registry exposes no such family.
        self._registry_up: Gauge | None = None
        self._registry_failures: Counter | None = None
        build_info = Gauge(
            "sfa_build_info",
            "Always 1; the version label names the build.",
            ["version"],
            registry=reg,
        )
        build_info.labels(version=version).set(1)
        for status in _RESULT_STATUSES:
            self._results.labels(status=status)
        for outcome in BATCH_OUTCOMES:
            self._batches.labels(outcome=outcome)
        for outcome in ANALYSIS_OUTCOMES:
            self._analyses.labels(outcome=outcome)
        self._rebalances = Counter(
            "sfa_rebalances",
            "Rebalance events of this group member, by kind (assigned, revoked, lost).",
            ["kind"],
            registry=reg,
        )
        for kind in REBALANCE_KINDS:
            self._rebalances.labels(kind=kind)
        for reason in DEAD_LETTER_REASONS:
            self._dead.labels(reason=reason)
        for topic in topics:
            self._consumed.labels(topic=topic)

        self._batch_size = _Histogram(
            "sfa_batch_size_messages", "Messages per batch.", BATCH_SIZE_BUCKETS
        )
        self._batch_latency = _Histogram(
            "sfa_batch_latency_seconds",
            "Batch closed until its output was committed.",
            LATENCY_BUCKETS,
        )
        self._end_to_end = _Histogram(
            "sfa_end_to_end_latency_seconds",
            "Message timestamp until the output it fed was committed.",
            END_TO_END_BUCKETS,
        )
        self._histograms = (self._batch_size, self._batch_latency, self._end_to_end)

        self._analysis_lock = threading.Lock()
        self._analyses_ok = 0
        self._analyses_all = 0
        # Zero until the service hands over the real ones (see the class docstring).
        self._state: StateProvider | None = _nothing_held
        self._lag: LagProvider | None = _no_partitions
        self._dask: DaskProvider | None = _no_workers
        self._inflight: InflightProvider | None = _none_in_flight
        builders: list[tuple[str, _Builder]] = [
            ("state", self._state_families),
            ("inflight", self._inflight_families),
            ("lag", self._lag_families),
            ("dask", self._dask_families),
            ("success_ratio", self._ratio_families),
            ("histograms", self._histogram_families),
        ]
        reg.register(_LiveCollector(builders))

    # --- events the pipeline reports -------------------------------------------------

    def messages_consumed(self, topic: str, n: int) -> None:
        self._consumed.labels(topic=topic).inc(n)

    def bars_processed(self, n: int) -> None:
        self._bars.inc(n)

    def bars_forwarded(self, n: int) -> None:
        """Counted once their batch committed; the owner counts them again as processed
        when it applies them (a forwarded bar is processed once, by its owner)."""
        self._forwarded.inc(n)

    def dead_letter(self, reason: str, n: int = 1) -> None:
        self._dead.labels(reason=reason).inc(n)

    def result_produced(self, status: str, n: int = 1) -> None:
        self._results.labels(status=status).inc(n)

    def batch(self, outcome: str) -> None:
        """Count a finished batch; `outcome` is one of `BATCH_OUTCOMES`."""
        _check(outcome, BATCH_OUTCOMES, "batch outcome")
        self._batches.labels(outcome=outcome).inc()

    def analyses(self, outcome: str, n: int = 1) -> None:
        """Count analyses; `outcome` is one of `ANALYSIS_OUTCOMES`. Feeds the success ratio."""
        _check(outcome, ANALYSIS_OUTCOMES, "analysis outcome")
        self._analyses.labels(outcome=outcome).inc(n)
        with self._analysis_lock:
            self._analyses_all += n
            if outcome == "ok":
                self._analyses_ok += n

    def rebalance(self, kind: RebalanceKind) -> None:
        """Count one rebalance event of this member; `kind` is one of `REBALANCE_KINDS`."""
        _check(kind, REBALANCE_KINDS, "rebalance kind")
        self._rebalances.labels(kind=kind).inc()

    def observe_batch(self, size_messages: int, latency_s: float) -> None:
        """Record one committed batch: its size and the time from close to commit."""
        if size_messages < 0:
            raise ValueError(f"batch size must be >= 0, got {size_messages}")
        self._batch_size.observe_many(_as_array([size_messages]))
        self._batch_latency.observe_many(_latencies([latency_s]))

    def observe_end_to_end(self, seconds: float | Sequence[float] | npt.NDArray[Any]) -> None:
        """Record end-to-end latencies: one value, or a batch's list/array in one vectorised call.

        Negative values (producer clock ahead of ours) count as 0; NaN/inf (no timestamp) are
        dropped rather than poisoning the sum.
        """
        self._end_to_end.observe_many(_latencies(seconds))

    def set_fallback_active(self, active: bool) -> None:
        self._fallback.set(1 if active else 0)

    def schema_registry(self, problem: str | None) -> None:
        """A lookup failed (`problem`, retried) or the registry answers again (None)."""
        if self._registry_up is None or self._registry_failures is None:
            self._registry_up = Gauge(
                "sfa_schema_registry_up",
                "1 while the schema registry answers, 0 while schema lookups are retried.",
                registry=self._registry,
            )
            self._registry_failures = Counter(
                "sfa_schema_registry_failures",
                "Schema lookups that could not reach the registry (each is retried).",
                registry=self._registry,
            )
        self._registry_up.set(0 if problem is not None else 1)
        if problem is not None:
            self._registry_failures.inc()

    def set_providers(
        self,
        *,
        state: StateProvider | None = None,
        lag: LagProvider | None = None,
        dask: DaskProvider | None = None,
        inflight: InflightProvider | None = None,
    ) -> None:
        """Register scrape-time sources; each one given replaces its predecessor, None keeps it."""
        if state is not None:
            self._state = state
        if lag is not None:
            self._lag = lag
        if dask is not None:
            self._dask = dask
        if inflight is not None:
            self._inflight = inflight

    def clear_providers(self) -> None:
        """Forget all providers (on shutdown) so a late scrape never touches a closed client."""
        self._state = self._lag = self._dask = self._inflight = None

    def render(self) -> bytes:
        """The exposition in the classic text format (content type `CONTENT_TYPE`)."""
        return generate_latest(self._registry)

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format an HTTP `Accept` header asks for, and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._registry), content_type

    # --- scrape-time family builders (see `_Builder`) -----------------------------------

    def _state_families(self, live: bool) -> list[Metric]:
        symbols = GaugeMetricFamily("sfa_state_symbols", "Symbols in the window store.", labels=[])
        bars = GaugeMetricFamily("sfa_state_bars", "Bars held in the window store.", labels=[])
        nbytes = GaugeMetricFamily(
            "sfa_state_bytes", "Approximate memory of the window store.", labels=[]
        )
        if live and self._state is not None:
            n_symbols, n_bars, n_bytes = self._state()
            symbols.add_metric([], float(n_symbols))
            bars.add_metric([], float(n_bars))
            nbytes.add_metric([], float(n_bytes))
        return [symbols, bars, nbytes]

    def _inflight_families(self, live: bool) -> list[Metric]:
        family = GaugeMetricFamily(
            "sfa_inflight_batches", "Batches consumed but not yet committed.", labels=[]
        )
        if live and self._inflight is not None:
            family.add_metric([], float(self._inflight()))
        return [family]

    def _lag_families(self, live: bool) -> list[Metric]:
        family = GaugeMetricFamily(
            "sfa_consumer_lag_messages",
            "Messages behind the high watermark, per assigned partition.",
            labels=["topic", "partition"],
        )
        if live and self._lag is not None:
            for (topic, partition), lag in sorted(self._lag().items()):
                if lag >= 0:  # librdkafka reports unknown offsets as negative numbers
                    family.add_metric([topic, str(partition)], float(lag))
        return [family]

    def _dask_families(self, live: bool) -> list[Metric]:
        workers = GaugeMetricFamily("sfa_dask_workers", "Dask workers connected.", labels=[])
        memory = GaugeMetricFamily(
            "sfa_dask_worker_memory_bytes", "Memory used by each Dask worker.", labels=["worker"]
        )
        if live and self._dask is not None:
            per_worker = dict(self._dask())
            workers.add_metric([], float(len(per_worker)))
            for worker, nbytes in sorted(per_worker.items()):
                memory.add_metric([worker], float(nbytes))
        return [workers, memory]

    def _ratio_families(self, live: bool) -> list[Metric]:
        family = GaugeMetricFamily(
            "sfa_success_ratio",
            "Analyses with status ok / all analyses since start (1 before the first one).",
            labels=[],
        )
        if live:
            family.add_metric([], self.success_ratio())
        return [family]

    def _histogram_families(self, live: bool) -> list[Metric]:
        if not live:
            return [h.empty_family() for h in self._histograms]
        return [h.family() for h in self._histograms]

    def success_ratio(self) -> float:
        """ok / all analyses since start; 1.0 before any analysis, so start-up never alerts."""
        with self._analysis_lock:
            ok, total = self._analyses_ok, self._analyses_all
        return 1.0 if total == 0 else ok / total


def _nothing_held() -> tuple[int, int, int]:
    return (0, 0, 0)


def _no_partitions() -> Mapping[tuple[str, int], int]:
    return {}


def _no_workers() -> Mapping[str, float]:
    return {}


def _none_in_flight() -> int:
    return 0


def _check(value: str, allowed: Iterable[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")
