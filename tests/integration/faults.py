"""Network faults between `sfa run` and the broker, for real: a Toxiproxy in the path.

The dev broker (scripts/kafka.sh) has a second plaintext listener, PROXIED, on
KAFKA_PORT+2 that advertises KAFKA_PORT+3; `Proxy` makes Toxiproxy listen on KAFKA_PORT+3
and forward to KAFKA_PORT+2. A service given `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<+3>`
learns the broker's address from metadata as that same proxied port, so every
connection it opens (consumer, producers, admin, restore) crosses the proxy, while the
test's own feeder, monitor and readers use the broker directly and see the truth.

What the drills inject (Toxiproxy's toxics, both directions unless said):
- `latency(ms)`: every chunk of data is held back that long;
- `bandwidth(kb_per_s)`: a rate cap;
- `reset()`: every open connection is reset (TCP RST), new ones are accepted;
- `blackhole()`: data is dropped and connections stay open (no RST, no FIN): what a
  cable pulled or a firewall dropping packets looks like;
plus `SIGSTOP` of the broker itself (`tests.integration.test_network_faults.Broker`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.drills import DrillRun

__all__ = [
    "Proxy",
    "Toxiproxy",
    "broker_pid",
    "during",
    "frozen",
    "healthz",
    "kafka_proxy",
    "proxied_ports",
    "readyz",
    "resets",
    "term_while_frozen",
    "toxiproxy",
]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "toxiproxy.sh"


def proxied_ports(bootstrap: str) -> tuple[int, int]:
    """(PROXIED listener, proxy port) of the dev broker on `bootstrap`, as kafka.sh sets
    them (KAFKA_PORT+2, KAFKA_PORT+3, unless SFA_KAFKA_PROXIED_PORT/PROXY_PORT say)."""
    port = int(bootstrap.rsplit(":", 1)[1])
    proxied = int(os.environ.get("SFA_KAFKA_PROXIED_PORT") or port + 2)
    proxy = int(os.environ.get("SFA_KAFKA_PROXY_PORT") or port + 3)
    return proxied, proxy


class Toxiproxy:
    """The server's HTTP API (https://github.com/Shopify/toxiproxy#http-api), nothing more."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def proxy(self, listen_port: int, upstream_port: int) -> Proxy:
        name = f"kafka-{uuid.uuid4().hex[:8]}"
        self.call(
            "POST",
            "/proxies",
            {
                "name": name,
                "listen": f"127.0.0.1:{listen_port}",
                "upstream": f"127.0.0.1:{upstream_port}",
                "enabled": True,
            },
        )
        return Proxy(self, name, listen_port)


class Proxy:
    """One proxied route; every fault is a context manager that undoes itself."""

    def __init__(self, server: Toxiproxy, name: str, port: int) -> None:
        self.server, self.name, self.port = server, name, port
        self.bootstrap = f"127.0.0.1:{port}"

    def _add(self, kind: str, stream: str, **attributes: int) -> str:
        toxic = f"{kind}-{stream}-{uuid.uuid4().hex[:6]}"
        self.server.call(
            "POST",
            f"/proxies/{self.name}/toxics",
            {
                "name": toxic,
                "type": kind,
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            },
        )
        return toxic

    def _remove(self, toxic: str) -> None:
        self.server.call("DELETE", f"/proxies/{self.name}/toxics/{toxic}")

    @contextlib.contextmanager
    def _toxic(self, kind: str, both: bool = True, **attributes: int) -> Iterator[None]:
        streams = ("downstream", "upstream") if both else ("downstream",)
        added = [self._add(kind, s, **attributes) for s in streams]
        try:
            yield
        finally:
            for toxic in added:
                self._remove(toxic)

    def latency(self, ms: int) -> contextlib.AbstractContextManager[None]:
        return self._toxic("latency", latency=ms, jitter=0)

    def bandwidth(self, kb_per_s: int) -> contextlib.AbstractContextManager[None]:
        return self._toxic("bandwidth", rate=kb_per_s)

    def blackhole(self) -> contextlib.AbstractContextManager[None]:
        # `timeout` with 0: data is dropped and the connection is never closed.
        return self._toxic("timeout", timeout=0)

    def reset(self) -> None:
        """Reset every open connection (TCP RST) now; new connections are accepted."""
        toxic = self._add("reset_peer", "downstream", timeout=0)
        # The toxic acts on a connection when data next flows; Kafka clients talk at
        # least every fetch wait, so a short presence reaches every connection.
        time.sleep(0.6)
        self._remove(toxic)

    def delete(self) -> None:
        with contextlib.suppress(urllib.error.URLError):
            self.server.call("DELETE", f"/proxies/{self.name}")


def _script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
        env=env,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[Toxiproxy]:
    """A Toxiproxy server of this session's own (built from the Go proxy on first use)."""
    port = _free_port()
    env = {**os.environ, "SFA_TOXIPROXY_PORT": str(port)}
    up = _script("up", env)
    if up.returncode != 0:
        pytest.fail(f"could not start Toxiproxy:\n{up.stderr[-3000:]}", pytrace=False)
    try:
        yield Toxiproxy(port)
    finally:
        _script("down", env)


# --- drill hooks (tests.integration.drills Step(..., "call", hook=...)) -----------------


def healthz(port: int) -> tuple[int | None, dict[str, Any]]:
    """(HTTP status, body) of an instance's /healthz; (None, {}) when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return None, {}


def _all_healthy(run: DrillRun) -> bool:
    return all(healthz(i.port)[0] == 200 for i in run.live.values())


def during(
    label: str,
    fault: Callable[[], contextlib.AbstractContextManager[None]],
    seconds: float,
    *,
    stall_within: float | None = None,
    recover_within: float = 120.0,
) -> Callable[[DrillRun], None]:
    """A hook: hold `fault` for `seconds` while watching every live instance's /healthz.

    `stall_within`: the fault silences the broker, so /healthz must say "stalled" within
    that many seconds of its start. Whatever the fault, every instance stays up, and
    /healthz is 200 again within `recover_within` seconds of its end.
    """

    def hook(run: DrillRun) -> None:
        started = time.monotonic()
        stalled_after: float | None = None
        with fault():
            while (now := time.monotonic()) - started < seconds:
                run.check_alive()
                if stalled_after is None and any(
                    healthz(i.port)[1].get("status") == "stalled" for i in run.live.values()
                ):
                    stalled_after = now - started
                time.sleep(0.25)
        ended = time.monotonic()
        run.wait("/healthz 200 after the fault", lambda: _all_healthy(run), recover_within)
        seen = "never" if stalled_after is None else f"after {stalled_after:.1f} s"
        run.notes.append(
            f"{label} for {seconds:.0f} s: /healthz said stalled {seen}; 200 again "
            f"{time.monotonic() - ended:.1f} s after the fault ended"
        )
        if stall_within is not None:
            assert stalled_after is not None and stalled_after <= stall_within, run.notes[-1]

    return hook


def resets(proxy: Proxy, every: float, seconds: float) -> Callable[[DrillRun], None]:
    """A hook: reset every connection through the proxy every `every` s for `seconds`."""

    def disconnects(run: DrillRun) -> int:
        return sum(
            i.log_path.read_text(errors="replace").count("Disconnected") for i in run.live.values()
        )

    def hook(run: DrillRun) -> None:
        before = disconnects(run)
        started = time.monotonic()
        count = 0
        while time.monotonic() - started < seconds:
            proxy.reset()
            count += 1
            run.check_alive()
            time.sleep(max(0.0, every - 0.6))
        run.wait("/healthz 200 after the resets", lambda: _all_healthy(run), 120)
        seen = disconnects(run) - before
        run.notes.append(
            f"{count} resets of every connection, one every {every:.0f} s: "
            f"{seen} disconnections logged"
        )
        assert seen >= count, run.notes[-1]  # the resets reached the service

    return hook


def broker_pid(bootstrap: str) -> int:
    """The dev broker's pid, from scripts/kafka.sh's pid file."""
    port = bootstrap.rsplit(":", 1)[1]
    home = Path(os.environ.get("SFA_KAFKA_HOME", "").strip() or REPO / ".cache" / "kafka")
    return int((home / f"node-{port}" / "kafka.pid").read_text())


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The broker SIGSTOPped: its sockets accept and hold data, nothing answers."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def term_while_frozen(name: str, pid: int, bound: float) -> Callable[[DrillRun], None]:
    """A hook: SIGTERM instance `name` while the broker is frozen, then start it again.

    It must exit by itself (code 0, never by a signal) within `bound` seconds; the
    broker thaws once it has exited (or the bound has passed). The new instance is
    waited for until /readyz says it is running, so the next stop stops a running
    service, not one still importing Python.
    """

    def hook(run: DrillRun) -> None:
        instance = run.live.pop(name)
        with frozen(pid):
            started = time.monotonic()
            instance.proc.send_signal(signal.SIGTERM)
            try:
                code: int | None = instance.proc.wait(bound)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - started
        if code is None:
            instance.close()
        run.notes.append(
            f"SIGTERM {name} with the broker frozen: exit {code} after {took:.1f} s"
            + ("" if code == 0 else f" (log: {instance.log_path})")
        )
        n = sum(1 for key in run.exit_codes if key.startswith(f"{name} (frozen"))
        run.exit_codes[f"{name} (frozen stop {n + 1})"] = -999 if code is None else code
        again = run.start(name)
        run.wait(f"{name} ready again", lambda: readyz(again.port) == 200, 120)

    return hook


def readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


@pytest.fixture()
def kafka_proxy(kafka_bootstrap: str, toxiproxy: Toxiproxy) -> Iterator[Proxy]:
    """A Toxiproxy route to the session broker's PROXIED listener, removed afterwards."""
    proxied, port = proxied_ports(kafka_bootstrap)
    try:
        socket.create_connection(("127.0.0.1", proxied), timeout=2).close()
    except OSError:
        pytest.fail(
            f"the broker at {kafka_bootstrap} has no PROXIED listener on {proxied}: it was "
            "started before scripts/kafka.sh had one; `make kafka-down kafka-up`",
            pytrace=False,
        )
    proxy = toxiproxy.proxy(port, proxied)
    try:
        yield proxy
    finally:
        proxy.delete()
