"""The schema registry image of compose's `avro` profile, run under podman.

Built by `make registry-image` (scripts/image.sh registry) from deploy/registry/Dockerfile
on the project's base; here it runs on the host's network at a free port
(QUARKUS_HTTP_PORT), answers the Confluent-compatible API that `SFA_SCHEMA_REGISTRY_URL`
points at, enforces BACKWARD once set, and its own HEALTHCHECK passes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from service.registry import RegistryClient, RegistryError, RegistryUnavailableError
from service.wireformat import BAR_SCHEMA_TEXT
from tests.deploy.conftest import built_image
from tests.deploy.conftest import free_port as _free_port
from tests.deploy.conftest import podman_run as _run


@pytest.fixture(scope="module")
def registry_image(podman: str, podman_env: dict[str, str]) -> str:
    return built_image(
        podman, podman_env, "SFA_REGISTRY_IMAGE", "localhost/sfa-registry:3.0.9", "registry"
    )


@pytest.fixture()
def container(podman: str, podman_env: dict[str, str]) -> Iterator[str]:
    name = f"sfa-registry-test-{uuid.uuid4().hex[:8]}"
    yield name
    _run(podman, podman_env, "rm", "--force", "--time", "5", name, timeout=60)


def test_the_registry_image_serves_the_confluent_api_and_its_healthcheck_passes(
    podman: str, podman_env: dict[str, str], registry_image: str, container: str
) -> None:
    port = _free_port()
    detached = ["run", "--detach", "--name", container, "--network", "host"]
    started = _run(
        podman, podman_env, *detached, "--env", f"QUARKUS_HTTP_PORT={port}", registry_image
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
