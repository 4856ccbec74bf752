"""The service image as users run it (`make image-test`): its commands, a replay, and
`sfa run` against the real broker until ready, scraped, health-checked and stopped by SIGTERM.

The container uses the host's network (`--network host`), so it reaches the shared broker on
127.0.0.1 exactly as the tests do and its metrics port is a host port picked free per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.deploy.conftest import free_port as _free_port
from tests.deploy.conftest import podman_run as _run
from tests.integration.kafka_io import comparable, produce_keyed, read_committed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
_SFA = [sys.executable, "-m", "service"]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("market") / "bars.jsonl"
    args = ["--symbols", "8", "--start-year", "2015", "--end-year", "2021", "--seed", "5"]
    subprocess.run(
        [*_SFA, "generate", *args, "--output", str(path)],
        check=True,
        capture_output=True,
    )
    # The container's user (uid 10001) reads it through a bind mount.
    path.parent.chmod(0o755)
    path.chmod(0o644)
    return path


def _last_by_symbol(lines: list[bytes]) -> dict[str, dict]:
    last: dict[str, dict] = {}
    for line in lines:
        if line.strip():
            result = orjson.loads(line)
            last[result["symbol"]] = comparable(result)
    return last


@pytest.fixture(scope="module")
def expected(market: Path) -> dict[str, dict]:
    """What the host's own `sfa replay` makes of the market: the image must agree."""
    out = subprocess.run(
        [*_SFA, "replay", str(market), "--output", "-", "--no-progress"],
        check=True,
        capture_output=True,
        env={**os.environ, "DASK_ENABLE_DISTRIBUTED": "false"},
    )
    return _last_by_symbol(out.stdout.splitlines())


def test_help_and_the_same_versions_for_service_and_dask(
    podman: str, podman_env: dict[str, str], sfa_image: str
) -> None:
    helped = _run(podman, podman_env, "run", "--rm", sfa_image, "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("run", "replay", "produce", "generate"):
        assert f"    {command}" in helped.stdout
    # One image for the service and its cluster: the Dask CLI is there, and the service
    # imports the very same distributed (a version mismatch is what this image prevents).
    probe = (
        "import distributed, importlib.metadata as m;"
        "print(distributed.__version__, m.version('sfa'))"
    )
    versions = _run(
        podman, podman_env, "run", "--rm", "--entrypoint", "python", sfa_image, "-c", probe
    )
    assert versions.returncode == 0, versions.stderr
    dask_version, sfa_version = versions.stdout.split()
    cli = _run(podman, podman_env, "run", "--rm", "--entrypoint", "dask", sfa_image, "--version")
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip().endswith(dask_version)
    own = _run(podman, podman_env, "run", "--rm", sfa_image, "--version")
    assert sfa_version in own.stdout + own.stderr


def test_non_root_with_a_healthcheck_on_the_configured_port(
    podman: str, podman_env: dict[str, str], sfa_image: str
) -> None:
    inspected = _run(podman, podman_env, "image", "inspect", sfa_image)
    assert inspected.returncode == 0, inspected.stderr
    image = json.loads(inspected.stdout)[0]
    config = image["Config"]
    assert config["User"] == "10001:10001"
    whoami = _run(podman, podman_env, "run", "--rm", "--entrypoint", "id", sfa_image, "-u")
    assert whoami.stdout.strip() == "10001"
    # podman reports it beside Config; it exists only in the docker format (image.sh).
    health = " ".join(image["Healthcheck"]["Test"])
    assert "SFA_METRICS_PORT" in health and "/healthz" in health
    assert config["StopSignal"] in ("SIGTERM", "15")


def test_replay_of_a_small_market_matches_the_host(
    podman: str,
    podman_env: dict[str, str],
    sfa_image: str,
    market: Path,
    expected: dict[str, dict],
) -> None:
    replayed = _run(
        podman,
        podman_env,
        "run",
        "--rm",
        "--volume",
        f"{market.parent}:/data:ro",
        sfa_image,
        "replay",
        f"/data/{market.name}",
        "--output",
        "-",
        "--no-progress",
    )
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    got = _last_by_symbol(replayed.stdout.encode().splitlines())
    assert len(got) == 8
    assert got == expected


@pytest.fixture()
def container(podman: str, podman_env: dict[str, str]) -> Iterator[str]:
    name = f"sfa-test-{uuid.uuid4().hex[:8]}"
    yield name
    _run(podman, podman_env, "rm", "--force", "--time", "0", name, timeout=60)


def _wait_ready(podman: str, env: dict[str, str], name: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _run(podman, env, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state not in ("created", "running", "configured", "initialized"):
            logs = _run(podman, env, "logs", name).stderr[-3000:]
            raise AssertionError(f"container is {state!r} before /readyz:\n{logs}")
        if _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
            return
        time.sleep(1.0)
    logs = _run(podman, env, "logs", name).stderr[-3000:]
    raise AssertionError(f"/readyz not 200 after {timeout} s:\n{logs}")


def test_run_against_the_broker_ready_metrics_health_and_sigterm(
    podman: str,
    podman_env: dict[str, str],
    sfa_image: str,
    container: str,
    kafka_bootstrap: str,
    new_topic,
    market: Path,
    expected: dict[str, dict],
) -> None:
    input_topic = new_topic(partitions=2)
    output_topic = f"out-{uuid.uuid4().hex[:8]}"
    produce_keyed(kafka_bootstrap, input_topic, market.read_bytes().splitlines())
    port = _free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "SFA_INPUT_TOPIC": input_topic,
        "SFA_OUTPUT_TOPIC": output_topic,
        "SFA_DLQ_TOPIC": f"dlq-{uuid.uuid4().hex[:8]}",
        "SFA_STATE_TOPIC": f"state-{uuid.uuid4().hex[:8]}",
        # Not the default 8000: the HEALTHCHECK must follow the configured port.
        "SFA_METRICS_PORT": str(port),
        "SFA_BATCH_MAX_WAIT_MS": "200",
    }
    flags = [item for key, value in env.items() for item in ("--env", f"{key}={value}")]
    started = _run(
        podman,
        podman_env,
        "run",
        "--detach",
        "--name",
        container,
        "--network",
        "host",
        *flags,
        sfa_image,
        "run",
    )
    assert started.returncode == 0, started.stderr
    _wait_ready(podman, podman_env, container, port, timeout=240)

    status, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert "sfa_build_info" in text and "sfa_consumer_lag_messages" in text
    # The image's own HEALTHCHECK, run now rather than on podman's (systemd) timer.
    checked = _run(podman, podman_env, "healthcheck", "run", container, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The results of the whole market reach the output topic (read_committed).
    deadline = time.monotonic() + 180
    got: dict[str, dict] = {}
    while time.monotonic() < deadline and got != expected:
        try:
            messages = read_committed(kafka_bootstrap, output_topic, timeout=20)
        except Exception:  # the service creates the topic; it may not exist yet
            messages = []
        got = _last_by_symbol([m.value() or b"" for m in messages])
        time.sleep(1.0)
    assert got == expected

    killed = _run(podman, podman_env, "kill", "--signal", "TERM", container)
    assert killed.returncode == 0, killed.stderr
    waited = _run(podman, podman_env, "wait", container, timeout=60)
    assert waited.stdout.strip() == "0", _run(podman, podman_env, "logs", container).stderr[-3000:]
