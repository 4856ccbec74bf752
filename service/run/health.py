"""Liveness and readiness (SPEC 10), and the HTTP endpoint serving them next to /metrics.

`Health` is a small pure state holder with an injectable clock, so tests decide "stalled"
without sleeping. `MetricsServer` is the thin I/O shell: a standard-library
`ThreadingHTTPServer` in a daemon thread, so a hung scrape can never block the pipeline or
process exit, and no web framework joins the dependency list for three GET routes.

Liveness is deliberately narrow: the process is "stalled" only when there is work waiting
(total lag above zero) and no batch finished for `stall_seconds`. An idle pipeline with no
lag is alive, and an unknown lag (no provider yet, or a provider that raised) never fails
liveness: a restart is expensive and a metrics glitch is not evidence of a stall.

Nothing here may wait on a Kafka or Dask client (SPEC 10: all three routes answer within
100 ms): the providers read values the service loop keeps up to date. Readiness names the
stage start-up is in ("connecting to Kafka", "restoring state of partitions [0, 1]"), so
a pod that is not ready says why. A scrape the client abandons (closed early, timed out)
is the client's business: it is logged at DEBUG, never as an error with a traceback.

`GET /symbols/{symbol}` is served when a `SymbolSource` is given: the path is checked
here (400 for anything but a SPEC 1 symbol, without asking anyone), the answer comes
from the source (`service.run.queries.SymbolQueries`, or, in the probe helper, a loopback
request to the service process). A server given no metrics or no probes leaves those
routes out (the service's loopback server answers `/symbols/` only).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

__all__ = [
    "RUNNING",
    "Exposition",
    "Health",
    "HealthLagProvider",
    "MetricsServer",
    "Probe",
    "SymbolSource",
    "valid_symbol",
]

#: Lag per (topic, partition) (negative = unknown, ignored), or an already summed total.
HealthLagProvider = Callable[[], int | Mapping[tuple[str, int], int]]


class Exposition(Protocol):
    """What the endpoint needs from `service.run.metrics.Metrics` (kept structural so this
    module never imports the metrics module and both can be imported in any order)."""

    def render_for(self, accept: str | None) -> tuple[bytes, str]: ...


class ProbeSource(Protocol):
    """What the endpoint asks for the two probes (`Health`, or a snapshot of one)."""

    def liveness(self) -> Probe: ...
    def readiness(self) -> Probe: ...


class SymbolSource(Protocol):
    """Where `/symbols/{symbol}` gets its answer: (HTTP status, JSON body)."""

    def answer(self, symbol: str) -> tuple[int, bytes]: ...


_log = logging.getLogger(__name__)

# SPEC 1's symbol rule, as `service.decode.rules` applies it to bars (a unit test holds
# the two together); repeated here because the probe helper must not import numpy.
_SYMBOL_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")
_SYMBOLS = "/symbols/"


def valid_symbol(text: str) -> bool:
    """1-32 characters of A-Za-z0-9._- (SPEC 1)."""
    return _SYMBOL_RE.fullmatch(text) is not None


#: What a client hanging up mid-request looks like on our side.
_HUNG_UP = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout)
#: The stage of a service that has finished starting.
RUNNING = "running"


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe's verdict and the small JSON body that says why."""

    ok: bool
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return int(HTTPStatus.OK if self.ok else HTTPStatus.SERVICE_UNAVAILABLE)


class Health:
    """What /healthz and /readyz decide from; the pipeline reports into it.

    The stall timer starts at construction, so a process that never finishes its first
    batch while lag waits is reported stalled too.
    """

    def __init__(
        self, stall_seconds: float = 120.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if stall_seconds <= 0:
            raise ValueError(f"stall_seconds must be > 0, got {stall_seconds}")
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last_batch = clock()
        self._assigned = False
        self._dask_ready = False
        self._fallback = False
        self._lag: HealthLagProvider | None = None
        self._contact: Callable[[], float | None] | None = None
        self._stage = RUNNING
        self._registry: str | None = None  # None: no registry in use

    def batch_finished(self) -> None:
        """A batch was committed (or finished for good): the pipeline is making progress."""
        now = self._clock()
        with self._lock:
            self._last_batch = now

    def set_assigned(self, assigned: bool) -> None:
        """Partitions are (or are no longer) assigned to this consumer."""
        with self._lock:
            self._assigned = assigned

    def set_stage(self, stage: str) -> None:
        """What the service is doing before it can serve ("connecting to Kafka"), or
        `RUNNING`; /readyz reports anything but `RUNNING` as its reason."""
        with self._lock:
            self._stage = stage

    @property
    def stage(self) -> str:
        with self._lock:
            return self._stage

    def set_dask_ready(self, ready: bool) -> None:
        with self._lock:
            self._dask_ready = ready

    def set_fallback_active(self, active: bool) -> None:
        """Work runs locally without Dask; that counts as ready (SPEC 10)."""
        with self._lock:
            self._fallback = active

    def set_schema_registry(self, problem: str | None) -> None:
        """The registry answers (None) or why it does not; both bodies say which, and
        /readyz is not ready while lookups are being retried."""
        with self._lock:
            self._registry = "reachable" if problem is None else f"unreachable: {problem}"

    def set_lag_provider(self, provider: HealthLagProvider | None) -> None:
        """Lag per (topic, partition) (the callable given to `Metrics.set_providers`) or a total."""
        with self._lock:
            self._lag = provider

    def set_contact_provider(self, provider: Callable[[], float | None] | None) -> None:
        """Seconds since any Kafka broker last answered (None: unknown).

        A frozen network or broker sends no fetch response, so the lag seen last (often
        0) stays on display while the real lag grows: silence from every broker for
        `stall_seconds` is a stall on its own (service/kafka/contact.py).
        """
        with self._lock:
            self._contact = provider

    def _contact_age(self) -> float | None:
        with self._lock:
            provider = self._contact
        if provider is None:
            return None
        try:
            return provider()
        except Exception:
            _log.warning("contact provider failed; treated as unknown", exc_info=True)
            return None

    def total_lag(self) -> int | None:
        """Sum of known partition lags; None when unknown (no provider, or it raised)."""
        with self._lock:
            provider = self._lag
        if provider is None:
            return None
        try:
            lag = provider()
            if isinstance(lag, Mapping):
                return sum(n for n in lag.values() if n > 0)
            return max(0, int(lag))
        except Exception:
            _log.warning("lag provider failed; liveness treats lag as unknown", exc_info=True)
            return None

    def liveness(self) -> Probe:
        lag = self.total_lag()
        now = self._clock()
        with self._lock:
            idle = max(0.0, now - self._last_batch)
            registry = self._registry
        contact = self._contact_age()
        body: dict[str, Any] = {
            "lag_messages": lag,
            "seconds_since_batch": round(idle, 3),
            "seconds_since_broker_contact": None if contact is None else round(contact, 3),
            "stall_seconds": self.stall_seconds,
        }
        if registry is not None:
            body["schema_registry"] = registry
        if contact is not None and contact > self.stall_seconds:
            reason = f"no answer from any Kafka broker for {contact:.0f} s"
            return Probe(False, {"status": "stalled", **body, "reason": reason})
        if lag is not None and lag > 0 and idle > self.stall_seconds:
            reason = f"{lag} messages waiting and no batch finished for {idle:.0f} s"
            return Probe(False, {"status": "stalled", **body, "reason": reason})
        if lag is None:
            reason = "lag unknown; not judged stalled"
        elif lag == 0:
            reason = "no lag"
        else:
            reason = "batches are finishing"
        return Probe(True, {"status": "ok", **body, "reason": reason})

    def readiness(self) -> Probe:
        with self._lock:
            assigned, dask_ready, fallback = self._assigned, self._dask_ready, self._fallback
            stage, registry = self._stage, self._registry
        body: dict[str, Any] = {
            "stage": stage,
            "assigned": assigned,
            "dask_ready": dask_ready,
            "fallback_active": fallback,
        }
        if registry is not None:
            body["schema_registry"] = registry
        missing = []
        if stage != RUNNING:
            missing.append(stage)
        elif not assigned:
            missing.append(
                "no partitions assigned (joining the group, or more members than partitions)"
            )
        if stage == RUNNING and not (dask_ready or fallback):
            missing.append("Dask not reachable and local fallback not active")
        if registry is not None and registry != "reachable":
            missing.append(f"schema registry {registry}")
        if missing:
            return Probe(False, {"status": "not_ready", **body, "reason": "; ".join(missing)})
        return Probe(True, {"status": "ready", **body, "reason": "ready"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Exposition | None,
        health: ProbeSource | None,
        symbols: SymbolSource | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.health = health
        self.symbols = symbols

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _HUNG_UP):
            _log.debug("scrape from %s abandoned by the client: %s", client_address, exc)
            return
        _log.warning("metrics endpoint error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # a stuck client must not pin a thread forever
    server_version = "sfa"

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        server = cast(_Server, self.server)
        path = urlsplit(self.path).path
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0":
            # Nothing here takes input: refuse a body instead of reading it, and close, so
            # unread bytes can never be parsed as the next request on this connection.
            self.close_connection = True
            reason = {"reason": "requests to this endpoint carry no body"}
            self._send_json(HTTPStatus.BAD_REQUEST, reason, head)
            return
        try:
            if path == "/metrics" and server.metrics is not None:
                body, content_type = server.metrics.render_for(self.headers.get("Accept"))
                self._send(HTTPStatus.OK, body, content_type, head)
            elif path == "/healthz" and server.health is not None:
                self._send_probe(server.health.liveness(), head)
            elif path == "/readyz" and server.health is not None:
                self._send_probe(server.health.readiness(), head)
            elif path.startswith(_SYMBOLS) and server.symbols is not None:
                self._send_symbol(server.symbols, path[len(_SYMBOLS) :], head)
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"reason": f"no route {path}"}, head)
        except _HUNG_UP as exc:
            _log.debug("scrape of %s abandoned by the client: %s", path, exc)
            self.close_connection = True
        except Exception:
            _log.exception("metrics endpoint failed on %s", path)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"reason": "internal error"}, head)

    def _send_symbol(self, symbols: SymbolSource, symbol: str, head: bool) -> None:
        if not valid_symbol(symbol):  # no need to ask: the same rule as the service's
            reason = "not a symbol: 1-32 characters of A-Za-z0-9._- (SPEC 1)"
            self._send_json(HTTPStatus.BAD_REQUEST, {"symbol": symbol[:64], "reason": reason}, head)
            return
        status, body = symbols.answer(symbol)
        self._send(HTTPStatus(status), body, "application/json", head)

    def _send_probe(self, probe: Probe, head: bool) -> None:
        self._send_json(HTTPStatus(probe.status), probe.body, head)

    def _send_json(self, status: HTTPStatus, body: Mapping[str, Any], head: bool) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self._send(status, data, "application/json", head)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Every scrape would otherwise print a line to stderr, outside the JSON log.
        _log.debug("http %s " + format, self.address_string(), *args)


class MetricsServer:
    """Serves /metrics, /healthz and /readyz (and /symbols/{symbol} with `symbols`) on
    `host:port`, in this process; port 0 turns it off (SPEC 10).

    `start()` and `stop()` are idempotent; use it as a context manager in tests.
    """

    def __init__(
        self,
        metrics: Exposition,
        health: Health,
        port: int,
        host: str = "0.0.0.0",
        symbols: SymbolSource | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {port}")
        self._metrics = metrics
        self._health = health
        self._symbols = symbols
        self._requested_port = port
        self._host = host
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._requested_port != 0

    @property
    def port(self) -> int:
        """The bound port while running, else 0."""
        return 0 if self._server is None else int(self._server.server_address[1])

    def start(self) -> None:
        if not self.enabled or self._server is not None:
            return
        server = _Server(
            (self._host, self._requested_port), self._metrics, self._health, self._symbols
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"sfa-metrics-{self._requested_port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        _log.info("metrics endpoint listening", extra={"host": self._host, "port": self.port})

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has left its loop
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
