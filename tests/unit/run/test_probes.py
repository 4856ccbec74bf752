"""The probe helper renders only what is scraped, at the scrape, and a service too busy
to render never holds up the answer (SPEC 10's 100 ms is test_ops_health.py's)."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from service.run.health import Health, Probe
from service.run.probes import FRESH_WAIT_S, ProbeProcess

_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class _Counting:
    """An exposition whose body says which rendering it is; `gate` can hold renders."""

    def __init__(self) -> None:
        self.renders: list[str | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        self.entered.set()
        self.gate.wait(30)
        self.renders.append(accept)
        n = len(self.renders)
        if accept and "openmetrics" in accept:
            return f"rendering {n} openmetrics\n# EOF\n".encode(), _OPENMETRICS
        return f"rendering {n}\n".encode(), "text/plain; version=0.0.4; charset=utf-8"


class _Beats(Health):
    """A Health that lets a test wait for a number of snapshots sent."""

    def __init__(self) -> None:
        super().__init__()
        self.beats = 0
        self.enough = threading.Event()
        self.wanted = 0

    def liveness(self) -> Probe:
        self.beats += 1
        if self.beats >= self.wanted:
            self.enough.set()
        return super().liveness()

    def wait_beats(self, n: int) -> None:
        self.enough.clear()
        self.wanted = self.beats + n
        assert self.enough.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.read().decode(), r.headers["Content-Type"]


@pytest.fixture(params=[30.0], ids=["waiting"])
def probes(request: pytest.FixtureRequest) -> Iterator[tuple[ProbeProcess, _Counting, _Beats]]:
    """The real helper; a scrape waits `request.param` s at most for a fresh rendering
    (long by default, so that a slow test host cannot turn a fresh answer stale), and
    never reuses one, so every scrape takes the asking path."""
    exposition, health = _Counting(), _Beats()
    server = ProbeProcess(
        exposition,
        health,
        port=_free_port(),
        host="127.0.0.1",
        interval_s=0.01,
        fresh_wait_s=request.param,
        reuse_s=0.0,
    )
    server.start()
    yield server, exposition, health
    exposition.gate.set()
    server.stop()


def test_nothing_is_rendered_between_scrapes(
    probes: tuple[ProbeProcess, _Counting, _Beats],
) -> None:
    _, exposition, health = probes
    assert exposition.renders == [None]  # once at start, so the first scrape has metrics
    health.wait_beats(20)  # twenty snapshots went out meanwhile
    assert exposition.renders == [None]


def test_a_scrape_gets_a_rendering_made_for_it_in_its_format(
    probes: tuple[ProbeProcess, _Counting, _Beats],
) -> None:
    server, exposition, _ = probes
    assert _scrape(server.port)[0] == "rendering 2\n"
    assert _scrape(server.port)[0] == "rendering 3\n"
    body, content_type = _scrape(server.port, _OPENMETRICS)
    assert body.startswith("rendering 4 openmetrics") and "openmetrics" in content_type
    assert exposition.renders[1:] == [None, None, "application/openmetrics-text"]


@pytest.mark.parametrize("probes", [FRESH_WAIT_S], ids=["default-wait"], indirect=True)
def test_a_service_too_busy_to_render_costs_freshness_not_the_answer(
    probes: tuple[ProbeProcess, _Counting, _Beats],
) -> None:
    server, exposition, health = probes
    exposition.entered.clear()
    exposition.gate.clear()  # the next rendering hangs until released
    assert _scrape(server.port)[0] == "rendering 1\n"  # the previous one, at once
    assert exposition.entered.is_set() and not exposition.gate.is_set()  # really asked
    # and an OpenMetrics scrape with none rendered yet gets the text format
    body, content_type = _scrape(server.port, _OPENMETRICS)
    assert body == "rendering 1\n" and content_type.startswith("text/plain")
    exposition.gate.set()
    health.wait_beats(2)  # the held rendering went out
    assert _scrape(server.port)[0].startswith("rendering ")


def test_a_young_rendering_is_served_again_without_asking() -> None:
    exposition = _Counting()
    # an hour: the rendering made at start stays young for every scrape of this test
    with ProbeProcess(
        exposition, Health(), port=_free_port(), host="127.0.0.1", reuse_s=3600
    ) as server:
        for _ in range(3):
            assert _scrape(server.port)[0] == "rendering 1\n"
        assert exposition.renders == [None]
