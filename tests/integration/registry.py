"""The dev schema registry for the wire-format tests: Apicurio, for real.

`scripts/registry.sh up` starts it (on SFA_REGISTRY_PORT, default 8081) once per
session, unless one already answers there; the session stops it again at the end when
it started it (`SFA_KAFKA_KEEP=1` keeps it, as it keeps the broker). One it starts
keeps its schemas in a session directory (an H2 file, SFA_REGISTRY_DATA), so they
survive the stop and start of the outage test, as a production registry's do.
(Re-registering into a fresh in-memory registry would race the service: it may ask
for an id after the registry is back but before the schema is, and rightly
dead-letter the message as `unknown_schema`.)

Apicurio takes half a minute to start (a JVM). When a collected test needs it and none
answers, `start_early` (called by conftest.py at the end of collection) begins that
start in the background, so the tests that run before the wire-format ones hide it;
the fixture then waits for it. `finish_early` (at the end of the session) stops a
registry begun so that no test ended up using (a run interrupted early).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.registry import RegistryClient

__all__ = ["Registry", "finish_early", "schema_registry", "start_early"]

_REPO = Path(__file__).resolve().parents[2]
_SCRIPT = _REPO / "scripts" / "registry.sh"


def _env(data: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SFA_REGISTRY_DATA", None)
    if data is not None:
        env["SFA_REGISTRY_DATA"] = str(data)
    return env


def _script(
    command: str, timeout: float, data: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=_REPO,
        env=_env(data),
    )


def _keep() -> bool:
    return os.environ.get("SFA_KAFKA_KEEP", "") in ("1", "true", "yes")


class _Early:
    """A start begun at the end of collection: the script, its log, the schemas' folder."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.root: Path | None = None
        self.used = False

    @property
    def data(self) -> Path | None:
        return None if self.root is None else self.root / "data"

    def begin(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sfa-registry-"))
        assert self.data is not None
        self.data.mkdir()
        with (self.root / "up.log").open("wb") as log:
            self.proc = subprocess.Popen(
                ["bash", str(_SCRIPT), "up"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=_REPO,
                env=_env(self.data),
            )

    def wait(self) -> str | None:
        """None once it answers, else the script's last output."""
        assert self.proc is not None and self.root is not None
        try:
            code = self.proc.wait(900)  # the first run fetches Apicurio from Maven Central
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            code = -1
        return None if code == 0 else (self.root / "up.log").read_text()[-3000:]


_early = _Early()


def start_early(session: pytest.Session) -> None:
    """Begin starting the registry when a collected test needs it and none answers."""
    if session.config.option.collectonly:
        return
    if not any("schema_registry" in getattr(i, "fixturenames", ()) for i in session.items):
        return
    if _script("status", 30).returncode != 0:
        _early.begin()


def finish_early() -> None:
    """Stop a registry begun early that no test used (the fixture stops one it used)."""
    if _early.proc is None or _early.root is None:
        return
    if not _early.used:
        _early.wait()
        if not _keep():
            _script("down", 120)
    if not _keep():
        shutil.rmtree(_early.root, ignore_errors=True)


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
    if _early.proc is not None:
        _early.used = True
        problem = _early.wait()
        if problem is not None:
            pytest.fail(f"could not start the schema registry:\n{problem}", pytrace=False)
        was_running, data = False, _early.data
    else:
        was_running = _script("status", 30).returncode == 0
        data = None if was_running else tmp_path_factory.mktemp("registry")
        if not was_running:
            up = _script("up", 900, data)  # the first run fetches Apicurio from Maven Central
            if up.returncode != 0:
                pytest.fail(
                    f"could not start the schema registry:\n{up.stderr[-3000:]}", pytrace=False
                )
    url = _script("url", 10).stdout.strip()
    yield Registry(url, ours=not was_running, data=data)
    if not was_running and not _keep():
        _script("down", 120)
