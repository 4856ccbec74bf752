"""The dashboard and the alerts against a real Prometheus scraping a real `sfa run`.

Debian's `prometheus` server (scrape and rule evaluation every second, storage in a temp
dir) scrapes one `sfa run` (real broker, uuid topics) computing on a real `dask scheduler`
with two `dask worker --no-nanny` processes (so SIGSTOP reaches the process that works),
and the scheduler's own /metrics. While bars keep arriving, every dashboard query and
every alert expression is evaluated through the HTTP API, then a stall is injected by
stopping the workers: SfaStalled goes pending, and clears after SIGCONT.

Time is shortened in a copy of the rules, not in alerts.yaml: every duration in a range
selector or `for:` is divided by 30 (5m -> 10s, 1m -> 2s), so rules keep their shape
and a stall shows within seconds. Dashboard queries get `$__rate_interval` = 15s.

Set SFA_DASHBOARD_PNG=docs/img/dashboard.png to keep the panels' data plotted from
query_range (one subplot per dashboard panel); by default it goes to the test's temp dir.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROMETHEUS = shutil.which("prometheus") or ""
RATE_INTERVAL = "15s"
SCALE = 30

if not PROMETHEUS:  # `make deploy-test` installs it first: missing means nothing was tested
    pytest.fail("prometheus missing (apt-get install prometheus)", pytrace=False)


def _load_dashboard() -> ModuleType:
    path = ROOT / "deploy" / "grafana" / "dashboard.py"
    spec = importlib.util.spec_from_file_location("sfa_grafana_dashboard_live", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


board = _load_dashboard()


# --- time-shortened rules ------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smh])")


def _shorten(duration: str) -> str:
    seconds = int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]
    return f"{max(1, seconds // SCALE)}s"


def _shorten_expr(expr: str) -> str:
    """Durations inside `[...]` (ranges and subquery steps), nothing else."""
    return re.sub(
        r"\[[^\]]*\]", lambda m: _DURATION.sub(lambda d: _shorten(d.group()), m.group()), expr
    )


def short_rules() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _shorten_expr(str(rule["expr"]))
            if "for" in rule:
                rule["for"] = _shorten(rule["for"])
    return dict(doc)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in short_rules()["groups"] for rule in group["rules"]]


def test_shortening_keeps_the_rules_and_only_changes_durations() -> None:
    assert _shorten_expr("rate(x[5m]) > 0 and deriv(s[5m:1m])") == (
        "rate(x[10s]) > 0 and deriv(s[10s:2s])"
    )
    original = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yaml").read_text())
    names = [r["alert"] for g in original["groups"] for r in g["rules"]]
    assert [r["alert"] for r in _rules()] == names


# --- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _wait(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if check():
                return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Stack:
    """Addresses and processes of one running setup."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.scheduler_http = f"127.0.0.1:{_free_port()}"
        self.sfa_http = f"127.0.0.1:{_free_port()}"
        self.prom = f"http://127.0.0.1:{_free_port()}"

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed in the teardown)
        self.logs.append(log)
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} | ({"time": str(at)} if at is not None else {})
        status, body = _http(f"{self.prom}/api/v1/query?{urllib.parse.urlencode(params)}")
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", (expr, doc)
        return list(doc["data"]["result"])

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": str(start), "end": str(end), "step": "1"}
        _, body = _http(f"{self.prom}/api/v1/query_range?{urllib.parse.urlencode(params)}")
        return list(json.loads(body)["data"]["result"])

    def alert_states(self, name: str) -> set[str]:
        _, body = _http(f"{self.prom}/api/v1/alerts")
        alerts = json.loads(body)["data"]["alerts"]
        return {a["state"] for a in alerts if a["labels"]["alertname"] == name}


def _market(tmp: Path) -> list[bytes]:
    path = tmp / "bars.jsonl"
    subprocess.run(
        [sys.executable, "-m", "service", "generate", "--symbols", "8", "--start-year", "2014",
         "--end-year", "2021", "--seed", "11", "--output", str(path)],
        check=True, cwd=ROOT,
    )  # fmt: skip
    return [line for line in path.read_bytes().splitlines() if line.strip()]


class Feed(threading.Thread):
    """Keeps input coming: the market over and over, under fresh symbol names each round
    (new symbols need new analyses, so Dask always has work), plus a few bad records."""

    BAD = (b"{nope", b"42", orjson.dumps({"symbol": "X.SH", "date": "2020-01-02"}))

    def __init__(self, bootstrap: str, topic: str, lines: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        self.topic, self.lines = topic, [orjson.loads(line) for line in lines]
        self.stop = threading.Event()

    def run(self) -> None:
        round_no = 0
        while not self.stop.is_set():
            for i, bar in enumerate(self.lines):
                if self.stop.is_set():
                    break
                symbol = f"r{round_no}-{bar['symbol']}"
                self.producer.produce(
                    self.topic, orjson.dumps({**bar, "symbol": symbol}), key=symbol.encode()
                )
                if i % 500 == 0:
                    for bad in self.BAD:
                        self.producer.produce(self.topic, bad)
                    self.producer.poll(0)
                    time.sleep(0.15)  # ~3k bars/s: a steady stream, not a flood
            round_no += 1
        self.producer.flush(10)


@pytest.fixture()
def stack(
    tmp_path: Path,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
) -> Iterator[tuple[Stack, Feed]]:
    stack = Stack(tmp_path)
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    dask = str(VENV_BIN / "dask")
    scheduler = f"tcp://127.0.0.1:{_free_port()}"
    feed: Feed | None = None
    try:
        stack.spawn(
            "scheduler",
            [dask, "scheduler", "--host", "127.0.0.1", "--port", scheduler.rsplit(":", 1)[1],
             "--dashboard-address", stack.scheduler_http,
             "--preload", "service.compute.preload"],
            base,
        )  # fmt: skip
        for i in range(2):
            stack.workers.append(
                stack.spawn(
                    f"worker{i}",
                    [
                        dask,
                        "worker",
                        scheduler,
                        "--no-nanny",
                        "--nthreads",
                        "1",
                        "--memory-limit",
                        "1GB",
                        "--no-dashboard",
                    ],
                    base,
                )
            )
        topic = new_topic(partitions=2)
        tag = uuid.uuid4().hex[:8]
        env = {
            **base,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_GROUP_ID": f"g-{tag}",
            "SFA_INPUT_TOPIC": topic,
            "SFA_OUTPUT_TOPIC": f"out-{tag}",
            "SFA_DLQ_TOPIC": f"dlq-{tag}",
            "SFA_STATE_TOPIC": f"state-{tag}",
            "SFA_REPARTITION_TOPIC": f"rep-{tag}",
            "SFA_INSTANCE_ID": f"prom-{tag}",
            "SFA_METRICS_PORT": stack.sfa_http.rsplit(":", 1)[1],
            "SFA_BATCH_MAX_MESSAGES": "2000",
            "SFA_BATCH_MAX_WAIT_MS": "200",
            "SFA_STALL_SECONDS": "3",
            "SFA_DASK_FALLBACK": "fail",  # a stall must stay a stall, not turn local
            "DASK_SCHEDULER_ADDRESS": scheduler,
        }
        feed = Feed(kafka_bootstrap, topic, _market(tmp_path))
        sfa = stack.spawn("sfa", [sys.executable, "-m", "service", "run"], env)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yaml"],
            "scrape_configs": [
                {"job_name": "sfa", "static_configs": [{"targets": [stack.sfa_http]}]},
                {"job_name": "dask-scheduler",
                 "static_configs": [{"targets": [stack.scheduler_http]}]},
            ],
        }  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(short_rules()))
        stack.spawn(
            "prometheus",
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={stack.prom.removeprefix('http://')}"],
            base,
        )  # fmt: skip
        _wait(
            "sfa /readyz",
            lambda: sfa.poll() is None and _http(f"http://{stack.sfa_http}/readyz")[0] == 200,
            120,
        )
        assert sfa.poll() is None, stack.log("sfa")
        feed.start()
        yield stack, feed
    finally:
        if feed is not None:
            feed.stop.set()
            if feed.is_alive():
                feed.join(30)
        for proc in reversed(stack.procs):
            _stop(proc)
        for log in stack.logs:
            log.close()


# --- the test ----------------------------------------------------------------------------


def _dashboard_expr(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL)


def _exposed(url: str) -> set[str]:
    _, body = _http(url)
    names: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def _returns_data(stack: Stack, expr: str) -> bool:
    return bool(stack.query(expr))


def test_dashboard_and_alerts_on_a_real_prometheus(stack: tuple[Stack, Feed]) -> None:
    prom, feed = stack
    started = time.time()
    _wait(
        "both targets up",
        lambda: (
            {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
            == {"sfa": "1", "dask-scheduler": "1"}
        ),
        60,
    )

    # Every metric the dashboard names is exposed.
    queried = {n for p in board.PANELS for q in p.queries for n in board.metric_names(q.expr)}
    exposed = _exposed(f"http://{prom.sfa_http}/metrics") | _exposed(
        f"http://{prom.scheduler_http}/metrics"
    )
    assert queried - exposed == set()

    # Every dashboard query returns data (once the stream has run through a few windows).
    pending = [(p.title, _dashboard_expr(q.expr)) for p in board.PANELS for q in p.queries]
    _wait(
        "data for every dashboard query",
        lambda: all(_returns_data(prom, expr) for _, expr in pending),
        180,
        every=2.0,
    )
    for title, expr in pending:
        assert prom.query(expr), f"{title}: {expr} returned no data"

    # Alert expressions: valid, their inputs present; while healthy the instance is ready.
    for rule in _rules():
        prom.query(str(rule["expr"]))
        prom.query(f"({rule['expr']}) * 0 + 1")  # the Grafana-provisioned form
        for name in board.metric_names(str(rule["expr"])):
            assert prom.query(f'{{__name__=~"{name}|{name}_bucket"}}'), f"{rule['alert']}: {name}"
    assert prom.alert_states("SfaNoInstanceReady") == set()
    assert prom.alert_states("SfaStalled") == set()

    # Stall: the workers stop while input keeps coming -> pending (then firing, which the
    # shortened `for` allows in seconds); SIGCONT -> cleared.
    time.sleep(max(0.0, started + 30 - time.time()))  # a baseline for the plot
    stalled_at = time.time()
    for worker in prom.workers:
        os.kill(worker.pid, signal.SIGSTOP)
    try:
        _wait("SfaStalled pending", lambda: "pending" in prom.alert_states("SfaStalled"), 90)
        _wait("/healthz 503", lambda: _http(f"http://{prom.sfa_http}/healthz")[0] == 503, 30)
        _wait("SfaStalled firing", lambda: "firing" in prom.alert_states("SfaStalled"), 60)
    finally:
        for worker in prom.workers:
            os.kill(worker.pid, signal.SIGCONT)
    resumed_at = time.time()
    _wait("SfaStalled cleared", lambda: prom.alert_states("SfaStalled") == set(), 90)
    _wait("/healthz 200", lambda: _http(f"http://{prom.sfa_http}/healthz")[0] == 200, 60)
    time.sleep(15)  # recovery on the plot
    feed.stop.set()

    out = Path(os.environ.get("SFA_DASHBOARD_PNG") or prom.tmp / "dashboard.png")
    _plot_panels(prom, started, time.time(), out, (stalled_at, resumed_at))
    assert out.stat().st_size > 20_000


def _legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's `{{label}}` legend format."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: labels.get(m.group(1), ""), template)


def _plot_panels(
    prom: Stack, start: float, end: float, out: Path, stall: tuple[float, float]
) -> None:
    """One subplot per dashboard panel, from query_range: the dashboard's data as a PNG."""
    from matplotlib.figure import Figure

    panels = board.PANELS
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(14, 2.6 * rows), layout="constrained")
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, index + 1)
        drawn = 0
        for query in panel.queries:
            for series in prom.query_range(_dashboard_expr(query.expr), start, end):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, linewidth=1, label=_legend(query.legend, series["metric"])[:40])
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center",
                    va="center", transform=ax.transAxes, color="grey")  # fmt: skip
        ax.axvspan(stall[0] - start, stall[1] - start, color="tab:red", alpha=0.08)
        ax.set_xlim(0, end - start)
        ax.set_title(panel.title, fontsize=10)
        ax.tick_params(labelsize=7)
        if drawn:
            ax.legend(fontsize=6, loc="upper left", ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle(
        "sfa dashboard panels from a real Prometheus, one `sfa run` on two Dask workers "
        "(x: seconds; shaded: workers SIGSTOPped)",
        fontsize=11,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
