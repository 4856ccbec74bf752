"""The progress line and the daemon lanes that keep a stuck client call from holding up
exit: pure pieces of "the service never blocks where a supervisor looks"."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from service.run.lanes import Lane
from service.run.progress import Progress
from tests.unit.fakes import FakeClock


def test_progress_reports_the_rate_since_the_previous_line() -> None:
    clock = FakeClock()
    progress = Progress(clock=clock)
    progress.batch_committed(messages=1000, bars=990)
    progress.batch_committed(messages=1000, bars=1010)
    clock.now += 10
    line = progress.line(lag=5000, inflight=2, fallback=None)
    assert line.fields["bars_per_second"] == 200.0
    assert line.fields["batches"] == 2 and line.fields["lag_messages"] == 5000
    assert "200 bars/s" in line.message and "lag 5,000" in line.message
    assert "no fallback" in line.message
    clock.now += 10
    quiet = progress.line(lag=None, inflight=0, fallback="cannot reach scheduler")
    assert quiet.fields["bars_per_second"] == 0.0 and quiet.fields["batches_total"] == 2
    assert "lag unknown" in quiet.message and "cannot reach scheduler" in quiet.message
    assert quiet.fields["fallback_active"] is True


def test_a_lane_runs_calls_in_order_for_the_event_loop() -> None:
    lane = Lane("test-lane")
    order: list[int] = []

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(lane, order.append, i) for i in range(5)]
        await asyncio.gather(*futures)
        return await loop.run_in_executor(lane, lambda: list(order))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    lane.shutdown()


def test_a_lane_passes_errors_back() -> None:
    lane = Lane("test-lane")
    future = lane.submit(lambda: 1 / 0)
    assert isinstance(future.exception(timeout=5), ZeroDivisionError)
    lane.shutdown()


def test_a_call_stuck_on_a_lane_does_not_hold_up_exit() -> None:
    """What a ThreadPoolExecutor does (it joins its threads at exit) and a Lane must not."""
    code = "import time\nfrom service.run.lanes import Lane\nLane('stuck').submit(time.sleep, 60)\n"
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert time.monotonic() - started < 15
