"""STYLE habit 1: the engine and the calendar load no Kafka, Dask, streamz or Prometheus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("confluent_kafka", "dask", "distributed", "streamz", "prometheus_client")

_PROBE = """
import sys
import service.engine, service.calendar
import service.engine.pattern, service.engine.position, service.engine.windows
from service.calendar import sf_day_table
sf_day_table()  # also loads the calendar library
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(",".join(bad))
"""


def test_engine_imports_no_vendor_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(forbidden=set(FORBIDDEN))],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert out.stdout.strip() == "", f"engine pulled in: {out.stdout.strip()}"
