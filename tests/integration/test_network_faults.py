"""Network faults between `sfa run` and the broker, short form for `make test`.

A real Toxiproxy sits between the service and the real broker (tests/integration/faults.py)
while a mixed feed (snapshots, unkeyed lines, corrections, bad records) flows: every
connection reset a few times, a blackhole (data dropped, no RST), 300 ms of latency.
The service must never exit on its own, /healthz must report the blackhole as a stall
once SFA_STALL_SECONDS passes and be 200 again after, and THE CHECK of
`tests.integration.drills` must hold at the end: results as `sfa replay` has them, no
duplicate, every bad record once in the dead-letter topic. The long forms (bandwidth,
longer faults, a frozen broker, SIGTERM under a frozen broker) are in
test_drills_long.py (`make drills`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.drills import Drill, Market, Step, build_market, reference, run_drill
from tests.integration.faults import Proxy, during, kafka_proxy, resets, toxiproxy

__all__ = ["kafka_proxy", "toxiproxy"]  # fixtures, re-exported for pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STALL_SECONDS = 4


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Market:
    return build_market(tmp_path_factory.mktemp("fault-market"))


@pytest.fixture(scope="module")
def expected(market: Market, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return reference(market, tmp_path_factory.mktemp("fault-reference"))


def test_resets_a_blackhole_and_latency_lose_nothing_and_the_stall_shows(
    kafka_bootstrap: str,
    kafka_proxy: Proxy,
    market: Market,
    expected: dict[str, dict],
    tmp_path: Path,
) -> None:
    steps = [
        Step(0.15, "call", hook=resets(kafka_proxy, every=2, seconds=6)),
        Step(
            0.40,
            "call",
            hook=during(
                "blackhole",
                kafka_proxy.blackhole,
                10,
                stall_within=STALL_SECONDS + 4,  # statistics come once a second
            ),
        ),
        Step(0.75, "call", hook=during("300 ms latency", lambda: kafka_proxy.latency(300), 5)),
    ]
    drill = Drill(
        "faults-mixed-4p",
        "mixed",
        4,
        ["a"],
        steps,
        feed_seconds=25,
        env={"SFA_STALL_SECONDS": str(STALL_SECONDS)},
        service_bootstrap=kafka_proxy.bootstrap,
    )
    report = run_drill(drill, market, expected, kafka_bootstrap, tmp_path)
    assert report.ok, report.render()
    assert len(report.notes) == 3, report.render()
