"""The probes' HTTP side as a supervisor meets it: an abandoned scrape is no error, and
/readyz says which start-up stage keeps it from being ready."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import pytest

from service.run.health import RUNNING, Health, MetricsServer


class _SlowExposition:
    """Renders a large body after a pause, long enough for the client to hang up."""

    def __init__(self) -> None:
        self.rendered = threading.Event()

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        time.sleep(0.3)
        self.rendered.set()
        return b"x" * 8_000_000, "text/plain"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hang_up_mid_request(port: int) -> None:
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    # SO_LINGER 0: close sends a reset, as a timed-out scraper's kernel does.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_an_abandoned_scrape_is_logged_at_debug_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exposition = _SlowExposition()
    caplog.set_level(logging.DEBUG, logger="service.run.health")
    with MetricsServer(exposition, Health(), port=_free_port(), host="127.0.0.1") as server:
        for _ in range(3):
            exposition.rendered.clear()
            _hang_up_mid_request(server.port)
            assert exposition.rendered.wait(5)
        time.sleep(0.5)  # let the handler threads fail on the dead sockets
        status = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert status.status == 200  # the endpoint still serves
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    assert any("abandoned" in r.getMessage() for r in caplog.records)


def test_readyz_names_the_start_up_stage() -> None:
    health = Health()
    health.set_stage("connecting to Kafka at 127.0.0.1:1")
    health.set_assigned(True)
    health.set_dask_ready(True)
    probe = health.readiness()
    assert not probe.ok
    assert probe.body["stage"] == "connecting to Kafka at 127.0.0.1:1"
    assert probe.body["reason"] == "connecting to Kafka at 127.0.0.1:1"
    health.set_stage(RUNNING)
    assert health.readiness().ok


def test_readyz_over_http_carries_the_reason_as_json() -> None:
    health = Health()
    health.set_stage("restoring state of partitions [0, 1]")
    with MetricsServer(_SlowExposition(), health, port=_free_port(), host="127.0.0.1") as server:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
        with caught.value as response:
            assert response.code == 503
            body = json.loads(response.read())
    assert body["status"] == "not_ready"
    assert body["reason"] == "restoring state of partitions [0, 1]"


class _Symbols:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def answer(self, symbol: str) -> tuple[int, bytes]:
        self.asked.append(symbol)
        return (200, b'{"symbol":"%s"}' % symbol.encode()) if symbol == "AAA" else (404, b"{}")


def _status(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_symbols_route_checks_the_symbol_then_asks_the_source() -> None:
    symbols = _Symbols()
    with MetricsServer(
        _SlowExposition(), Health(), port=_free_port(), host="127.0.0.1", symbols=symbols
    ) as server:
        base = f"http://127.0.0.1:{server.port}/symbols/"
        assert _status(base + "AAA") == (200, b'{"symbol":"AAA"}')
        assert _status(base + "AAA", "HEAD") == (200, b"")
        assert _status(base + "BBB")[0] == 404
        for bad in ("", "a" * 33, "a/b", "%41"):
            status, body = _status(base + bad)
            assert status == 400 and "SPEC 1" in json.loads(body)["reason"], bad
    assert symbols.asked == ["AAA", "AAA", "BBB"]


def test_without_a_symbol_source_there_is_no_symbols_route() -> None:
    with MetricsServer(_SlowExposition(), Health(), port=_free_port(), host="127.0.0.1") as server:
        status, body = _status(f"http://127.0.0.1:{server.port}/symbols/AAA")
    assert status == 404 and json.loads(body)["reason"] == "no route /symbols/AAA"
