"""/metrics, /healthz and /readyz served from a helper process; /symbols through it.

A thread of the service process cannot promise an answer within 100 ms (SPEC 10): every
request needs the GIL, which the consumer (building 20,000 messages), the decoder and
the state hold in long C calls, and on a busy two-core host the thread holding it may
not even be running. Measured with tests/integration/test_ops_health.py on such a host:
p99 130-340 ms in-process. So `ProbeProcess` starts a small server process (the way
every helper starts: `service.helpers`) that imports nothing but the standard library
and `service.run.health`, and answers from what the service last sent it:

- the two probe verdicts, sent by a thread of the service every `interval_s`. They also
  say the service is alive: when the last one is older than SFA_STALL_SECONDS, /healthz
  reports the service process itself as stalled.
- the metrics, rendered only when scraped: a rendering younger than `REUSE_S` (the
  age the old every-0.25-s push allowed) is served as it is; otherwise the helper asks
  for the format the scrape wants (a line on its stdout) and waits up to `FRESH_WAIT_S`
  for it. A service too busy to render in time costs the scrape its freshness (it gets
  the previous rendering, or the text format's in place of an OpenMetrics one not
  rendered yet), never its 100 ms. Prometheus scraping every 15 s costs the service one
  rendering per scrape instead of eight a second in two formats.

`GET /symbols/{symbol}` needs the service's results, which no snapshot carries. The
service answers it on an HTTP server of its own on 127.0.0.1 (any free port, told to the
helper at start), and the helper forwards the request there, waiting `QUERY_TIMEOUT_S`
before it says 503: a busy service costs a query, not a scrape. The helper exits when its
stdin closes or its parent dies, so it never outlives the service.

    service process                              helper process (service.run.probes)
      Health  --verdicts, every interval_s------> stdin (length-prefixed JSON)
      Metrics <--"render metrics", per scrape---- stdout       HTTP <- scrapes
              ---the rendering, at once---------> stdin
      SymbolQueries on 127.0.0.1:<any> <--HTTP--- forwards     HTTP <- /symbols/X
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import selectors
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from service import helpers
from service.run.health import Exposition, Health, Probe, SymbolSource, _Server

__all__ = ["FRESH_WAIT_S", "QUERY_TIMEOUT_S", "REUSE_S", "ProbeProcess"]

#: How long the helper waits for the service's answer to a symbol query.
QUERY_TIMEOUT_S = 0.2
#: How long a scrape waits for a fresh rendering before it takes the latest one.
FRESH_WAIT_S = 0.025
#: A rendering this young is served again without asking for a new one.
REUSE_S = 0.25

_log = logging.getLogger(__name__)
_HEADER = struct.Struct("!I")
_OPENMETRICS = "application/openmetrics-text"
_TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: Snapshot key of each exposition format -> the Accept header that renders it.
_FORMATS: dict[str, str | None] = {"metrics": None, "openmetrics": _OPENMETRICS}
_START_TIMEOUT_S = 30.0


class ProbeProcess:
    """The probe server as a helper process fed by the service; port 0 turns it off.

    `start()` raises OSError (with the helper's reason) when the port cannot be bound.
    It is also the service side's `SymbolSource`: `answer` asks what `set_queries` gave.
    """

    def __init__(
        self,
        metrics: Exposition,
        health: Health,
        port: int,
        host: str = "0.0.0.0",
        interval_s: float = 0.25,
        queries: SymbolSource | None = None,
        query_timeout_s: float = QUERY_TIMEOUT_S,
        fresh_wait_s: float = FRESH_WAIT_S,
        reuse_s: float = REUSE_S,
    ) -> None:
        self._metrics = metrics
        self._fresh_wait_s = fresh_wait_s
        self._reuse_s = reuse_s
        self._health = health
        self._queries = queries
        self._query_timeout_s = query_timeout_s
        self._requested_port = port
        self._host = host
        self._interval_s = interval_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._symbols: _Server | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # a rendering was asked for
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._threads: list[threading.Thread] = []

    @property
    def enabled(self) -> bool:
        return self._requested_port != 0

    @property
    def port(self) -> int:
        return self._port

    def set_queries(self, queries: SymbolSource | None) -> None:
        """What answers /symbols/{symbol} from now on (None: 503, not served yet)."""
        self._queries = queries

    def answer(self, symbol: str) -> tuple[int, bytes]:
        """The service side of /symbols/{symbol}, on the loopback server's threads."""
        queries = self._queries
        if queries is None:
            return 503, b'{"reason":"symbol queries are not served yet"}'
        try:
            return queries.answer(symbol)
        except Exception:
            _log.warning("symbol query for %s failed", symbol, exc_info=True)
            return 500, b'{"reason":"internal error"}'

    def start(self) -> None:
        if not self.enabled or self._proc is not None:
            return
        symbols = _Server(("127.0.0.1", 0), None, None, self)
        args = [
            self._host,
            str(self._requested_port),
            str(self._health.stall_seconds),
            str(symbols.server_address[1]),
            str(self._query_timeout_s),
            str(self._fresh_wait_s),
            str(self._reuse_s),
        ]
        try:
            proc = helpers.start(__name__, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError:
            symbols.server_close()
            raise
        assert proc.stdin is not None and proc.stdout is not None
        # Ready before the first scrape; if the helper failed, its own line says why, below.
        with contextlib.suppress(OSError):
            _send(proc.stdin, self._snapshot(["metrics"]))
        line = _read_line(proc.stdout, _START_TIMEOUT_S)
        if not line.startswith("listening "):
            helpers.stop(proc, grace_s=0)
            symbols.server_close()
            raise OSError(line.removeprefix("error ").strip() or "probe server did not start")
        self._proc, self._port, self._symbols = proc, int(line.split()[1]), symbols
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._publish, args=(proc.stdin,), name="sfa-probes"),
            threading.Thread(target=self._listen, args=(proc.stdout,), name="sfa-probe-asks"),
            threading.Thread(
                target=symbols.serve_forever, kwargs={"poll_interval": 0.1}, name="sfa-symbols"
            ),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        _log.info("metrics endpoint listening", extra={"host": self._host, "port": self._port})

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        symbols, self._symbols = self._symbols, None
        self._stop.set()
        self._wake.set()
        self._port = 0
        publisher = self._threads[:1]
        for thread in publisher:  # no write to the helper's stdin after it is closed
            thread.join(timeout=5)
        if proc is not None:
            helpers.stop(proc)  # end of input: the helper exits; its stdout ends the listener
        if symbols is not None:
            symbols.shutdown()
            symbols.server_close()
        for thread in self._threads[1:]:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> ProbeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- service side ---

    def _snapshot(self, formats: Iterable[str]) -> dict[str, Any]:
        live, ready = self._health.liveness(), self._health.readiness()
        snapshot: dict[str, Any] = {
            "healthz": [live.ok, dict(live.body)],
            "readyz": [ready.ok, dict(ready.body)],
        }
        for key in formats:
            body, content_type = self._metrics.render_for(_FORMATS[key])
            snapshot[key] = [body.decode(), content_type]
        return snapshot

    def _publish(self, stream: IO[bytes]) -> None:
        """The verdicts every `interval_s`, and a rendering as soon as one is asked for."""
        while not self._stop.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()  # before taking the asks: a later one wakes the next round
            if self._stop.is_set():
                return
            with self._lock:
                wanted, self._wanted = self._wanted, set()
            try:
                _send(stream, self._snapshot(sorted(wanted)))
            except (OSError, ValueError):
                _log.warning("probe server process went away; /metrics is no longer served")
                return
            except Exception:
                _log.warning("could not build a probe snapshot", exc_info=True)

    def _listen(self, stream: IO[bytes]) -> None:
        """The helper's asks ("render metrics"), until it exits."""
        for raw in stream:
            key = raw.decode(errors="replace").strip().removeprefix("render ")
            if key in _FORMATS:
                with self._lock:
                    self._wanted.add(key)
                self._wake.set()


def _send(stream: IO[bytes], snapshot: Mapping[str, Any]) -> None:
    data = json.dumps(snapshot, separators=(",", ":"), default=str).encode()
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_line(stream: IO[bytes], timeout_s: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return "error probe server did not answer"
    return stream.readline().decode(errors="replace")


# --- helper process side --------------------------------------------------------------


class _Latest:
    """What the service sent last, as the `_Server`'s metrics and health (duck-typed).

    `ask(key)` tells the service a scrape wants a rendering in that format.
    """

    def __init__(
        self, stall_seconds: float, ask: Callable[[str], None], wait_s: float, reuse_s: float
    ) -> None:
        self._changed = threading.Condition()
        self._verdicts: dict[str, Any] | None = None
        self._at = time.monotonic()
        self._rendered: dict[str, tuple[bytes, str]] = {}
        self._renderings = dict.fromkeys(_FORMATS, 0)
        self._rendered_at = dict.fromkeys(_FORMATS, -float("inf"))
        self._reuse_s = reuse_s
        self._stall_seconds = stall_seconds
        self._ask = ask
        self._wait_s = wait_s

    def update(self, snapshot: dict[str, Any]) -> None:
        with self._changed:
            self._verdicts, self._at = snapshot, time.monotonic()
            for key in _FORMATS:
                if key in snapshot:
                    body, content_type = snapshot[key]
                    self._rendered[key] = (str(body).encode(), str(content_type))
                    self._renderings[key] += 1
                    self._rendered_at[key] = self._at
            self._changed.notify_all()

    def _get(self) -> tuple[dict[str, Any] | None, float]:
        with self._changed:
            return self._verdicts, time.monotonic() - self._at

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        key = "openmetrics" if accept and _OPENMETRICS in accept else "metrics"
        with self._changed:
            if time.monotonic() - self._rendered_at[key] >= self._reuse_s:
                seen = self._renderings[key]
                self._ask(key)
                self._changed.wait_for(lambda: self._renderings[key] > seen, self._wait_s)
            found = self._rendered.get(key) or self._rendered.get("metrics")
        return found if found is not None else (b"", _TEXT)

    def liveness(self) -> Probe:
        snapshot, age = self._get()
        if age > self._stall_seconds:
            reason = f"the service process sent no state for {age:.0f} s"
            return Probe(False, {"status": "stalled", "reason": reason})
        if snapshot is None:
            return Probe(True, {"status": "ok", "reason": "starting"})
        ok, body = snapshot["healthz"]
        return Probe(bool(ok), body)

    def readiness(self) -> Probe:
        snapshot, age = self._get()
        if snapshot is None:
            return Probe(False, {"status": "not_ready", "reason": "starting"})
        if age > self._stall_seconds:
            reason = f"the service process sent no state for {age:.0f} s"
            return Probe(False, {"status": "not_ready", "reason": reason})
        ok, body = snapshot["readyz"]
        return Probe(bool(ok), body)


_GONE = (503, b'{"reason":"the service process does not answer queries"}')


class _Forward:
    """/symbols/{symbol} asked of the service's loopback server, as the `_Server`'s
    symbol source: a connection per query, so concurrent queries never wait on each
    other, and a late answer is simply never read."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self._port = port
        self._timeout_s = timeout_s

    def answer(self, symbol: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self._timeout_s)
        try:
            connection.request("GET", f"/symbols/{symbol}")
            reply = connection.getresponse()
            return reply.status, reply.read()
        except TimeoutError:
            reason = f"the service did not answer within {self._timeout_s * 1000:.0f} ms"
            return 503, json.dumps({"reason": reason}).encode()
        except (OSError, http.client.HTTPException):
            return _GONE  # refused or cut: the service side is gone
        finally:
            connection.close()


def _feed(latest: _Latest, stream: IO[bytes]) -> None:
    """Read snapshots until the service closes our stdin (or dies), then exit."""
    while True:
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size:
            os._exit(0)
        (size,) = _HEADER.unpack(header)
        data = stream.read(size)
        if len(data) < size:
            os._exit(0)
        latest.update(json.loads(data))


def _asker(fd: int) -> Callable[[str], None]:
    """One short line per ask on `fd`, never blocking: a frozen service that stops
    reading must not hold up the scrape that asks."""
    os.set_blocking(fd, False)

    def ask(key: str) -> None:
        with contextlib.suppress(OSError):  # full pipe or gone: the next scrape asks again
            os.write(fd, f"render {key}\n".encode())

    return ask


def helper_main(argv: list[str]) -> int:
    """The helper's entry (`service.helpers.start`), started by `ProbeProcess` only."""
    from service.logs import setup_logging

    setup_logging("WARNING", json=True)
    host, port, stall = argv[0], int(argv[1]), float(argv[2])
    symbols_port, query_timeout = int(argv[3]), float(argv[4])
    fresh_wait, reuse = float(argv[5]), float(argv[6])
    out = sys.stdout.fileno()  # the service reads it line by line
    latest = _Latest(stall, _asker(out), fresh_wait, reuse)
    try:
        server = _Server((host, port), latest, latest, _Forward(symbols_port, query_timeout))
    except OSError as exc:
        os.write(out, f"error {exc.strerror or exc}\n".encode())
        return 0
    os.write(out, f"listening {server.server_address[1]}\n".encode())
    threading.Thread(target=_feed, args=(latest, sys.stdin.buffer), daemon=True).start()
    server.serve_forever(poll_interval=0.5)
    return 0
