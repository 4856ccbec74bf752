"""The metrics port serves its routes and nothing else, and shrugs off hostile input
(issue 11): unknown paths 404, other methods 501, bodies and huge headers refused, and
random bytes never take the server down."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.run.health import Health, MetricsServer


class _Exposition:
    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        return b"sfa_up 1\n", "text/plain; version=0.0.4"


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = MetricsServer(_Exposition(), Health(), port=port, host="127.0.0.1")
    srv.start()
    yield srv
    srv.stop()


def _request(server: MetricsServer, method: str, path: str, **kw: object) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, **kw)  # type: ignore[arg-type]
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_only_the_documented_routes_answer(server: MetricsServer) -> None:
    assert _request(server, "GET", "/metrics")[0] == 200
    assert _request(server, "GET", "/healthz")[0] == 200
    assert _request(server, "GET", "/readyz")[0] in (200, 503)
    for path in ("/", "/metricsx", "/admin", "/../etc/passwd", "/healthz/x", "/symbols"):
        assert _request(server, "GET", path)[0] == 404, path


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_not_implemented(server: MetricsServer, method: str) -> None:
    assert _request(server, method, "/metrics", body=b"x")[0] == 501


def test_a_request_body_is_refused(server: MetricsServer) -> None:
    status, body = _request(server, "GET", "/metrics", body=b"a" * 1000)
    assert status == 400 and b"no body" in body
    chunked = {"Transfer-Encoding": "chunked"}
    assert _request(server, "GET", "/healthz", body=iter([b"abc"]), headers=chunked)[0] == 400


def test_a_huge_header_is_refused_and_the_server_stays_up(server: MetricsServer) -> None:
    status, _ = _request(server, "GET", "/metrics", headers={"X-Big": "a" * 70_000})
    assert status in (400, 431)
    many = {f"X-{i}": "1" for i in range(200)}
    assert _request(server, "GET", "/metrics", headers=many)[0] in (400, 431)
    assert _request(server, "GET", "/healthz")[0] == 200


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=2048))
def test_random_bytes_never_take_the_server_down(server: MetricsServer, junk: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(junk + b"\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
    assert _request(server, "GET", "/healthz")[0] == 200
