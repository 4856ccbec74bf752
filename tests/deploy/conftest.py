"""Fixtures for the deployment tests: the service image under podman, and the shared broker.

These tests run what users run (the image, compose), so they need podman and the image;
`make image-test` / `make deploy-test` build both first (`make image` installs podman). A
missing podman is a failure with one line, and a missing image is built here once, because
a test that silently skipped on a fresh clone would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

# The broker fixtures are the integration suite's own: one broker, uuid topics per test.
from tests.integration.conftest import group_id, kafka_admin, kafka_bootstrap, new_topic

__all__ = [
    "REPO",
    "built_image",
    "free_port",
    "group_id",
    "kafka_admin",
    "kafka_bootstrap",
    "new_topic",
    "podman",
    "podman_env",
    "podman_run",
    "sfa_image",
]

REPO = Path(__file__).resolve().parents[2]
_IMAGE_SCRIPT = REPO / "scripts" / "image.sh"


@pytest.fixture(scope="session")
def podman_env() -> dict[str, str]:
    """The environment every podman call here runs with: the sandbox's runtime and ulimits
    (deploy/standins/containers.conf) unless the caller configured podman already."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO / "deploy" / "standins" / "containers.conf"))
    return env


@pytest.fixture(scope="session")
def podman(podman_env: dict[str, str]) -> str:
    found = shutil.which("podman")
    if found is None:
        pytest.fail("podman missing (bash scripts/image.sh tools installs it)", pytrace=False)
    return found


@pytest.fixture(scope="session")
def sfa_image(podman: str, podman_env: dict[str, str]) -> str:
    """The image tag under test; built with scripts/image.sh when it does not exist yet."""
    return built_image(podman, podman_env, "SFA_IMAGE", "localhost/sfa:latest", "build")


def built_image(podman: str, env: dict[str, str], variable: str, default: str, command: str) -> str:
    """The tag `$variable` (or `default`), built by `scripts/image.sh command` when the
    image does not exist yet."""
    image = os.environ.get(variable, default)
    if podman_run(podman, env, "image", "exists", image).returncode != 0:
        built = subprocess.run(
            ["bash", str(_IMAGE_SCRIPT), command],
            env={**env, variable: image},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if built.returncode != 0:
            pytest.fail(
                f"scripts/image.sh {command} failed:\n{built.stderr[-3000:]}", pytrace=False
            )
    return image


def podman_run(
    podman: str, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`podman args...`, its output as text; never raises on a non-zero exit."""
    return subprocess.run(
        [podman, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
