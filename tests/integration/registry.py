"""The dev schema registry for the wire-format tests: Apicurio, for real.

`scripts/registry.sh up` starts it (on SFA_REGISTRY_PORT, default 8081) once per
session, unless one already answers there; the session stops it again at the end when
it started it (`SFA_KAFKA_KEEP=1` keeps it, as it keeps the broker). One it starts
keeps its schemas in a session directory (an H2 file, SFA_REGISTRY_DATA), so they
survive the stop and start of the outage test, as a production registry's do.
(Re-registering into a fresh in-memory registry would race the service: it may ask
for an id after the registry is back but before the schema is, and rightly
dead-letter the message as `unknown_schema`.)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.registry import RegistryClient

__all__ = ["Registry", "schema_registry"]

_REPO = Path(__file__).resolve().parents[2]
_SCRIPT = _REPO / "scripts" / "registry.sh"


def _script(
    command: str, timeout: float, data: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SFA_REGISTRY_DATA", None)
    if data is not None:
        env["SFA_REGISTRY_DATA"] = str(data)
    return subprocess.run(
        ["bash", str(_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=_REPO,
        env=env,
    )


@dataclass(frozen=True)
class Registry:
    url: str  # the Confluent-compatible base URL, what SFA_SCHEMA_REGISTRY_URL takes
    ours: bool  # started by this session: only then may a test stop and restart it
    data: Path | None  # where a registry this session started keeps its schemas

    def client(self) -> RegistryClient:
        return RegistryClient(self.url)

    def stop(self) -> None:
        assert self.ours, "not stopping a registry this session did not start"
        done = _script("down", 60)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        """Start it again, with the schemas it had."""
        up = _script("up", 300, self.data)
        assert up.returncode == 0, up.stderr[-3000:]


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that answers; started here (and stopped at the end) when none does."""
    was_running = _script("status", 30).returncode == 0
    data = None if was_running else tmp_path_factory.mktemp("registry")
    if not was_running:
        up = _script("up", 900, data)  # the first run fetches Apicurio from Maven Central
        if up.returncode != 0:
            pytest.fail(f"could not start the schema registry:\n{up.stderr[-3000:]}", pytrace=False)
    url = _script("url", 10).stdout.strip()
    yield Registry(url, ours=not was_running, data=data)
    if not was_running and os.environ.get("SFA_KAFKA_KEEP", "") not in ("1", "true", "yes"):
        _script("down", 120)
