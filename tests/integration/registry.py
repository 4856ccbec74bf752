"""The dev schema registry for the wire-format tests: Apicurio, for real.

`scripts/registry.sh up` starts it (on SFA_REGISTRY_PORT, default 8081) once per
session, unless one already answers there; the session stops it again at the end when
it started it (`SFA_KAFKA_KEEP=1` keeps it, as it keeps the broker). Storage is in
memory: `restart()` (the outage test) loses every schema, which is why that test
registers its schemas again, as an operator restoring a registry would.
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


def _script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=_REPO,
    )


@dataclass(frozen=True)
class Registry:
    url: str  # the Confluent-compatible base URL, what SFA_SCHEMA_REGISTRY_URL takes
    ours: bool  # started by this session: only then may a test stop and restart it

    def client(self) -> RegistryClient:
        return RegistryClient(self.url)

    def stop(self) -> None:
        assert self.ours, "not stopping a registry this session did not start"
        done = _script("down", 60)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        up = _script("up", 300)
        assert up.returncode == 0, up.stderr[-3000:]


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[Registry]:
    """A registry that answers; started here (and stopped at the end) when none does."""
    was_running = _script("status", 30).returncode == 0
    if not was_running:
        up = _script("up", 900)  # the first run fetches Apicurio from Maven Central
        if up.returncode != 0:
            pytest.fail(f"could not start the schema registry:\n{up.stderr[-3000:]}", pytrace=False)
    url = _script("url", 10).stdout.strip()
    yield Registry(url, ours=not was_running)
    if not was_running and os.environ.get("SFA_KAFKA_KEEP", "") not in ("1", "true", "yes"):
        _script("down", 120)
