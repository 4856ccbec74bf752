"""/metrics, /healthz and /readyz served from a helper process, from snapshots.

A thread of the service process cannot promise an answer within 100 ms (SPEC 10): every
request needs the GIL, which the consumer (building 20,000 messages), the decoder and
the state hold in long C calls, and on a busy two-core host the thread holding it may
not even be running. Measured with tests/integration/test_ops_health.py on such a host:
p99 130-340 ms in-process. So `ProbeProcess` starts a small server process that imports
nothing but the standard library and `service.health`, and a publisher thread in the
service sends it a snapshot (rendered metrics in both formats, both probe verdicts)
every `interval_s`. The server answers from the latest snapshot at once; the price is
metrics up to `interval_s` old, which no scrape interval resolves.

A snapshot that stops coming is news too: when the last one is older than
SFA_STALL_SECONDS, /healthz reports the service process itself as stalled. The helper
exits when its stdin closes or its parent dies, so it never outlives the service.

`GET /symbols/{symbol}` cannot come from a snapshot (the helper would need every
result), so the helper forwards it over a socket pair to a thread of the service, which
answers with `set_queries`' source (`service.queries.SymbolQueries`). The helper waits
`QUERY_TIMEOUT_S` for the answer, then says 503: the probes' promise is kept for the
three probe routes, and a busy service costs a query, not a scrape.

    service process                       helper process (python -m service.probes)
      Metrics, Health --snapshot thread--> stdin (length-prefixed JSON) -> latest snapshot
                                                                     HTTP <- scrapes
      SymbolQueries <--query thread------> socket pair (id, symbol) / (id, status, body)
                                                                     HTTP <- /symbols/X
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from service.health import Exposition, Health, Probe, SymbolSource, _Server

__all__ = ["QUERY_TIMEOUT_S", "ProbeProcess"]

#: How long the helper waits for the service's answer to a symbol query.
QUERY_TIMEOUT_S = 0.2

_log = logging.getLogger(__name__)
_HEADER = struct.Struct("!I")
_REQUEST = struct.Struct("!IH")  # request id, symbol length; then the symbol (ASCII)
_REPLY = struct.Struct("!IHI")  # request id, HTTP status, body length; then the body
_OPENMETRICS = "application/openmetrics-text"
_START_TIMEOUT_S = 30.0


class ProbeProcess:
    """The probe server as a helper process fed with snapshots; port 0 turns it off.

    `start()` raises OSError (with the helper's reason) when the port cannot be bound.
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
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._queries = queries
        self._query_timeout_s = query_timeout_s
        self._channel: socket.socket | None = None
        self._query_thread: threading.Thread | None = None
        self._requested_port = port
        self._host = host
        self._interval_s = interval_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._requested_port != 0

    @property
    def port(self) -> int:
        return self._port

    def set_queries(self, queries: SymbolSource | None) -> None:
        """What answers /symbols/{symbol} from now on (None: 503, not served yet)."""
        self._queries = queries

    def start(self) -> None:
        if not self.enabled or self._proc is not None:
            return
        ours, theirs = socket.socketpair()
        args = [
            sys.executable,
            "-m",
            "service.probes",
            self._host,
            str(self._requested_port),
            str(self._health.stall_seconds),
            str(os.getpid()),
            str(theirs.fileno()),
            str(self._query_timeout_s),
        ]
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=[theirs.fileno()]
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()  # the helper's end now lives in the helper only
        assert proc.stdin is not None and proc.stdout is not None
        # Ready before the first scrape; if the helper failed, its own line says why, below.
        with contextlib.suppress(OSError):
            self._send(proc.stdin, self._snapshot())
        line = _read_line(proc.stdout, _START_TIMEOUT_S)
        if not line.startswith("listening "):
            proc.kill()
            proc.wait(10)
            ours.close()
            raise OSError(line.removeprefix("error ").strip() or "probe server did not start")
        self._proc, self._port = proc, int(line.split()[1])
        self._stop.clear()
        self._thread = threading.Thread(target=self._publish, name="sfa-probes", daemon=True)
        self._thread.start()
        self._channel = ours
        self._query_thread = threading.Thread(
            target=self._serve_queries, args=(ours,), name="sfa-queries", daemon=True
        )
        self._query_thread.start()
        _log.info("metrics endpoint listening", extra={"host": self._host, "port": self._port})

    def publish_now(self) -> None:
        """Send a snapshot at once (after a state change tests or shutdown care about)."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._send(proc.stdin, self._snapshot())

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._port = 0
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.shutdown(socket.SHUT_RDWR)  # wakes the query thread's recv
            channel.close()
        if self._query_thread is not None:
            self._query_thread.join(timeout=5)
            self._query_thread = None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the helper exits on end of input
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> ProbeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- service side ---

    def _snapshot(self) -> dict[str, Any]:
        text, text_type = self._metrics.render_for(None)
        open_body, open_type = self._metrics.render_for(_OPENMETRICS)
        live, ready = self._health.liveness(), self._health.readiness()
        return {
            "metrics": [text.decode(), text_type],
            "openmetrics": [open_body.decode(), open_type],
            "healthz": [live.ok, dict(live.body)],
            "readyz": [ready.ok, dict(ready.body)],
        }

    def _send(self, stream: IO[bytes], snapshot: Mapping[str, Any]) -> None:
        data = json.dumps(snapshot, separators=(",", ":"), default=str).encode()
        stream.write(_HEADER.pack(len(data)) + data)
        stream.flush()

    def _publish(self) -> None:
        while not self._stop.wait(self._interval_s):
            proc = self._proc
            if proc is None or proc.stdin is None:
                return
            try:
                self._send(proc.stdin, self._snapshot())
            except OSError:
                _log.warning("probe server process went away; /metrics is no longer served")
                return
            except Exception:
                _log.warning("could not build a probe snapshot", exc_info=True)

    def _serve_queries(self, channel: socket.socket) -> None:
        """Answer the helper's symbol queries, one at a time, until the channel closes."""
        while True:
            try:
                header = _recv_exactly(channel, _REQUEST.size)
                if header is None:
                    return
                request_id, size = _REQUEST.unpack(header)
                data = _recv_exactly(channel, size)
                if data is None:
                    return
                status, body = self._answer(data.decode("ascii", errors="replace"))
                channel.sendall(_REPLY.pack(request_id, status, len(body)) + body)
            except OSError:
                return  # the helper went away, or `stop` shut the channel

    def _answer(self, symbol: str) -> tuple[int, bytes]:
        queries = self._queries
        if queries is None:
            return 503, b'{"reason":"symbol queries are not served yet"}'
        try:
            return queries.answer(symbol)
        except Exception:
            _log.warning("symbol query for %s failed", symbol, exc_info=True)
            return 500, b'{"reason":"internal error"}'


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None at end of stream; a socket timeout only means "not yet"."""
    chunks: list[bytes] = []
    while size > 0:
        try:
            chunk = sock.recv(size)
        except TimeoutError:
            continue
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_line(stream: IO[bytes], timeout_s: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return "error probe server did not answer"
    return stream.readline().decode(errors="replace")


# --- helper process side --------------------------------------------------------------


class _Latest:
    """The latest snapshot, as the `_Server`'s metrics and health (duck-typed)."""

    def __init__(self, stall_seconds: float) -> None:
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._at = time.monotonic()
        self._stall_seconds = stall_seconds

    def update(self, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self._snapshot, self._at = snapshot, time.monotonic()

    def _get(self) -> tuple[dict[str, Any] | None, float]:
        with self._lock:
            return self._snapshot, time.monotonic() - self._at

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        snapshot, _ = self._get()
        if snapshot is None:
            return b"", "text/plain; version=0.0.4; charset=utf-8"
        key = "openmetrics" if accept and _OPENMETRICS in accept else "metrics"
        body, content_type = snapshot[key]
        return str(body).encode(), str(content_type)

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


class _QueryChannel:
    """The helper's end of the symbol-query channel, as the `_Server`'s symbol source.

    Requests carry an id, so concurrent HTTP threads each get their own answer; a reply
    that comes after its request gave up is dropped. A write that cannot finish within
    the timeout may leave the stream cut mid-frame, so the channel closes for good then.
    """

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        # Two objects on one socket: a timeout makes the shared descriptor non-blocking,
        # so the reader needs one too (it just waits again when it expires).
        self._reader = sock
        self._reader.settimeout(1.0)
        self._writer = sock.dup()
        self._writer.settimeout(timeout_s)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[threading.Event, list[tuple[int, bytes]]]] = {}
        self._next_id = 0
        self._closed = False
        threading.Thread(target=self._read, name="sfa-query-replies", daemon=True).start()

    def answer(self, symbol: str) -> tuple[int, bytes]:
        data = symbol.encode("ascii")
        done = threading.Event()
        slot: list[tuple[int, bytes]] = []
        with self._lock:
            if self._closed:
                return _GONE
            self._next_id = request_id = (self._next_id + 1) & 0xFFFFFFFF
            self._pending[request_id] = (done, slot)
            try:
                self._writer.sendall(_REQUEST.pack(request_id, len(data)) + data)
            except OSError:
                self._close_locked()
                return _GONE
        if not done.wait(self._timeout_s):
            with self._lock:
                self._pending.pop(request_id, None)
            reason = f"the service did not answer within {self._timeout_s * 1000:.0f} ms"
            return 503, json.dumps({"reason": reason}).encode()
        return slot[0] if slot else _GONE  # woken without an answer: the channel closed

    def _read(self) -> None:
        try:
            while True:
                header = _recv_exactly(self._reader, _REPLY.size)
                if header is None:
                    break
                request_id, status, size = _REPLY.unpack(header)
                body = _recv_exactly(self._reader, size)
                if body is None:
                    break
                with self._lock:
                    waiting = self._pending.pop(request_id, None)
                if waiting is not None:
                    waiting[1].append((status, body))
                    waiting[0].set()
        except OSError:
            pass
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._closed = True
        for done, _ in self._pending.values():
            done.set()  # an empty slot: the waiter answers 503 at once
        self._pending.clear()


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


def _main(argv: list[str]) -> None:
    from service.host import exit_with_parent
    from service.logs import setup_logging

    # Signals are the service's business: it closes our stdin when it is done. A Ctrl-C
    # reaches the whole process group and must not print a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging("WARNING", json=True)
    host, port, stall, parent = argv[0], int(argv[1]), float(argv[2]), int(argv[3])
    queries_fd, query_timeout = int(argv[4]), float(argv[5])
    exit_with_parent(parent)
    latest = _Latest(stall)
    channel = _QueryChannel(socket.socket(fileno=queries_fd), query_timeout)
    try:
        server = _Server((host, port), latest, latest, channel)
    except OSError as exc:
        sys.stdout.write(f"error {exc.strerror or exc}\n")
        sys.stdout.flush()
        return
    threading.Thread(target=_feed, args=(latest, sys.stdin.buffer), daemon=True).start()
    sys.stdout.write(f"listening {server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    _main(sys.argv[1:])
