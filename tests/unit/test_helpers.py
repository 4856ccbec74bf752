"""Helper processes: signals are the parent's (a Ctrl-C or a SIGTERM to the process group
takes no helper away in the middle of the parent's stop), and `stop` ends them."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request

from service import helpers
from service.run.health import Health
from service.run.probes import ProbeProcess


class _Exposition:
    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        return b"sfa_up 1\n", "text/plain; version=0.0.4; charset=utf-8"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_pool_helper_outlives_sigint_and_sigterm() -> None:
    with helpers.pool(1) as pool:
        pid = pool.submit(os.getpid).result(timeout=60)
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        # a killed worker would break the pool: this would raise BrokenProcessPool
        assert pool.submit(os.getpid).result(timeout=60) == pid


def test_a_started_helper_outlives_sigint_and_sigterm_and_stop_ends_it() -> None:
    server = ProbeProcess(_Exposition(), Health(), port=_free_port(), host="127.0.0.1")
    with server:
        proc = server._proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGTERM)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
            assert r.status == 200
        assert proc.poll() is None
    assert proc.returncode == 0  # ended by its closed stdin, not killed
