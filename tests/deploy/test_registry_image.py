"""The schema registry image of compose's `avro` profile, run under podman.

Built by `make registry-image` (scripts/image.sh registry) from deploy/registry/Dockerfile
on the project's base; here it runs on the host's network at a free port
(QUARKUS_HTTP_PORT), answers the Confluent-compatible API that `SFA_SCHEMA_REGISTRY_URL`
points at, enforces BACKWARD once set, and its own HEALTHCHECK passes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from service.registry import RegistryClient, RegistryError, RegistryUnavailableError
from service.wireformat import BAR_SCHEMA_TEXT
from tests.deploy.conftest import REPO


def _run(
    podman: str, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [podman, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def registry_image(podman: str, podman_env: dict[str, str]) -> str:
    image = os.environ.get("SFA_REGISTRY_IMAGE", "localhost/sfa-registry:3.0.9")
    if _run(podman, podman_env, "image", "exists", image).returncode != 0:
        built = subprocess.run(
            ["bash", str(REPO / "scripts" / "image.sh"), "registry"],
            env={**podman_env, "SFA_REGISTRY_IMAGE": image},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if built.returncode != 0:
            pytest.fail(f"scripts/image.sh registry failed:\n{built.stderr[-3000:]}", pytrace=False)
    return image


@pytest.fixture()
def container(podman: str, podman_env: dict[str, str]) -> Iterator[str]:
    name = f"sfa-registry-test-{uuid.uuid4().hex[:8]}"
    yield name
    _run(podman, podman_env, "rm", "--force", "--time", "5", name, timeout=60)


def test_the_registry_image_serves_the_confluent_api_and_its_healthcheck_passes(
    podman: str, podman_env: dict[str, str], registry_image: str, container: str
) -> None:
    port = _free_port()
    started = _run(
        podman,
        podman_env,
        "run",
        "--detach",
        "--name",
        container,
        "--network",
        "host",
        "--env",
        f"QUARKUS_HTTP_PORT={port}",
        registry_image,
    )
    assert started.returncode == 0, started.stderr
    client = RegistryClient(f"http://127.0.0.1:{port}/apis/ccompat/v7")
    deadline = time.monotonic() + 120
    while True:
        try:
            client.ping()
            break
        except (RegistryError, RegistryUnavailableError, OSError):
            if time.monotonic() > deadline:
                logs = _run(podman, podman_env, "logs", container).stdout[-3000:]
                pytest.fail(f"the registry did not answer within 120 s:\n{logs}", pytrace=False)
            time.sleep(1.0)

    subject = f"bars-{uuid.uuid4().hex[:8]}-value"
    first = client.register(subject, BAR_SCHEMA_TEXT)
    assert client.register(subject, BAR_SCHEMA_TEXT) == first  # found, not registered again
    fetched = client.schema(first)
    assert fetched is not None and json.loads(fetched.text) == json.loads(BAR_SCHEMA_TEXT)
    # Apicurio's default is NONE; with BACKWARD a new required field is refused.
    client.set_compatibility(subject, "BACKWARD")
    required = json.loads(BAR_SCHEMA_TEXT)
    required["fields"].append({"name": "venue", "type": "string"})
    with pytest.raises(RegistryError, match="409"):
        client.register(subject, json.dumps(required))

    checked = _run(podman, podman_env, "healthcheck", "run", container, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    user = _run(podman, podman_env, "exec", container, "id", "-u")
    assert user.stdout.strip() == "10002"  # not root
