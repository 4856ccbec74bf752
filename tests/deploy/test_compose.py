"""deploy/compose/ brought up for real (`make compose-test`): podman-compose with the local
stand-ins for apache/kafka and prom/prometheus (scripts/compose.sh), every service but
Grafana, which has no stand-in. Both instances become ready, Prometheus scrapes every
target, and the results of the loaded market reach the output topic.

The stack gets its own project name and free host ports, so it never meets the shared
test broker or another stack; its broker is read through the published EXTERNAL listener.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_io import read_committed

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "compose.sh"
SYMBOLS = 20
SERVICES = ["kafka", "dask-scheduler", "dask-worker-1", "dask-worker-2", "prometheus"]
SERVICES += ["topics", "load", "sfa-1", "sfa-2"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def _logs(podman_env: dict[str, str], project: str) -> str:
    out = []
    for service in SERVICES:
        logs = subprocess.run(
            ["podman", "logs", "--tail", "15", f"{project}_{service}_1"],
            env=podman_env,
            capture_output=True,
            text=True,
            check=False,
        )
        out.append(f"--- {service}\n{(logs.stdout + logs.stderr)[-1500:]}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def stack(
    podman: str,
    podman_env: dict[str, str],
    sfa_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    kafka, sfa1, sfa2, prometheus, dashboard = _free_ports(5)
    project = f"sfa-test-{uuid.uuid4().hex[:8]}"
    env = {
        **podman_env,
        "SFA_IMAGE": sfa_image,
        "SFA_COMPOSE_PROJECT": project,
        "SFA_KAFKA_PORT": str(kafka),
        "SFA_1_PORT": str(sfa1),
        "SFA_2_PORT": str(sfa2),
        "SFA_PROMETHEUS_PORT": str(prometheus),
        "SFA_DASK_DASHBOARD_PORT": str(dashboard),
        "SFA_MARKET_SYMBOLS": str(SYMBOLS),
        "SFA_PARTITIONS": "4",
    }
    env = {k: v for k, v in env.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    # Output to a file, not a pipe: containers' conmon processes may inherit descriptors.
    output = tmp_path_factory.mktemp("compose") / "up.log"
    try:
        with output.open("w") as sink:
            up = subprocess.run(
                ["bash", str(SCRIPT), "up"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=1200,
                check=False,
            )
        if up.returncode != 0:
            pytest.fail(f"compose.sh up failed:\n{output.read_text()[-4000:]}", pytrace=False)
        yield {**env, "logs": project}  # "logs": the project, for _logs on failure
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "down"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )


def _until(what: str, check, stack: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2.0)
    pytest.fail(f"{what} after {timeout} s:\n{_logs(stack, stack['logs'])}", pytrace=False)


def test_both_instances_become_ready(stack: dict[str, str]) -> None:
    for port in (stack["SFA_1_PORT"], stack["SFA_2_PORT"]):
        url = f"http://127.0.0.1:{port}/readyz"
        _until(f"{url} not 200", lambda url=url: _get(url)[0] == 200, stack, timeout=300)
        body = json.loads(_get(url)[1])
        # Ready on the compose Dask cluster, not on the local fallback.
        assert body["dask_ready"] is True and body["fallback_active"] is False, body


def test_prometheus_has_every_target_up(stack: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{stack['SFA_PROMETHEUS_PORT']}/api/v1/targets"
    seen: list[tuple[str, str, str]] = []

    def all_up() -> bool:
        status, text = _get(url)
        if status != 200:
            return False
        targets = json.loads(text)["data"]["activeTargets"]
        seen[:] = [(t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in targets]
        return len(targets) >= 3 and all(t["health"] == "up" for t in targets)

    _until(f"targets not all up ({seen})", all_up, stack, timeout=240)
    jobs = {job for job, _, _ in seen}
    assert {"sfa", "dask-scheduler"} <= jobs, seen
    assert sum(job == "sfa" for job, _, _ in seen) == 2, seen


def test_results_reach_the_output_topic(stack: dict[str, str]) -> None:
    bootstrap = f"127.0.0.1:{stack['SFA_KAFKA_PORT']}"
    symbols: set[str] = set()

    def complete() -> bool:
        try:
            messages = read_committed(bootstrap, "sfa-results", timeout=30)
        except Exception:  # the service creates the topic; it may not exist yet
            return False
        symbols.update(orjson.loads(m.value() or b"")["symbol"] for m in messages)
        return len(symbols) == SYMBOLS

    _until(f"{len(symbols)} of {SYMBOLS} symbols in sfa-results", complete, stack, timeout=300)


def test_the_stack_uses_the_image_under_test(
    stack: dict[str, str], podman_env: dict[str, str]
) -> None:
    """The instances and the Dask cluster run one image (so their versions match)."""
    images = set()
    for service in ("sfa-1", "sfa-2", "dask-scheduler", "dask-worker-1", "load"):
        out = subprocess.run(
            ["podman", "inspect", "--format", "{{.ImageName}}", f"{stack['logs']}_{service}_1"],
            env=podman_env,
            capture_output=True,
            text=True,
            check=True,
        )
        images.add(out.stdout.strip())
    assert images == {stack["SFA_IMAGE"]}
