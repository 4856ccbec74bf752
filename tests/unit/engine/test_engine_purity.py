"""STYLE habit 1: the pure layers load no Kafka, Dask, streamz or Prometheus.

The engine and the calendar, and the per-message stages around them (decode/ and
state/), are imported in a fresh interpreter; the test fails if any vendor I/O module
got loaded along the way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("confluent_kafka", "dask", "distributed", "streamz", "prometheus_client")
ROOT = Path(__file__).resolve().parents[3]
PURE = ("engine", "state", "decode")

_PROBE = """
import importlib, pkgutil, sys
import service
from service.calendar import sf_day_table
sf_day_table()  # also loads the calendar library
for package in {pure!r}:
    pkg = importlib.import_module("service." + package)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(",".join(bad))
"""


def test_pure_layers_import_no_vendor_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(forbidden=set(FORBIDDEN), pure=PURE)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.stdout.strip() == "", f"pure layers pulled in: {out.stdout.strip()}"
    for package in PURE:  # the probe really walked each package
        assert (ROOT / "service" / package / "__init__.py").is_file()
