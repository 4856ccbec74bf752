"""When a batch closes, against a fake `consume` with librdkafka's semantics and a
fake clock: at the first message plus what was fetched, after a burst, when full, or
when the wait is up; never the whole wait once messages came."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from service.kafka.gather import LINGER_S, gather


class FakeTopic:
    """Messages that become available at given times; `consume(n, t)` returns once it
    has `n` or `t` passed (advancing the clock), like librdkafka's."""

    def __init__(self, arrivals: list[float]) -> None:
        self.arrivals = sorted(arrivals)
        self.now = 0.0
        self.taken = 0
        self.calls: list[tuple[int, float]] = []

    def clock(self) -> float:
        return self.now

    def consume(self, n: int, timeout: float) -> list[int]:
        self.calls.append((n, timeout))
        end = self.now + timeout
        ready = [t for t in self.arrivals[self.taken :] if t <= end]
        if len(ready) >= n:
            self.now = max(self.now, ready[n - 1])
            got = n
        else:
            self.now = end
            got = len(ready)
        out = list(range(self.taken, self.taken + got))
        self.taken += got
        return out


def test_a_quiet_topic_closes_the_batch_soon_after_its_messages_not_at_the_wait() -> None:
    topic = FakeTopic([0.05] * 5)
    got = gather(topic.consume, 20_000, 0.5, clock=topic.clock)
    assert got == [0, 1, 2, 3, 4]
    assert topic.now <= 0.05 + LINGER_S + 1e-9  # not 0.5


def test_a_burst_over_a_few_fetches_is_one_batch() -> None:
    topic = FakeTopic([0.01, 0.012, 0.015, 0.019, 0.024])
    assert gather(topic.consume, 100, 0.5, clock=topic.clock) == [0, 1, 2, 3, 4]


def test_a_gap_longer_than_the_linger_starts_the_next_batch() -> None:
    topic = FakeTopic([0.01, 0.01, 0.2])
    assert gather(topic.consume, 100, 0.5, clock=topic.clock) == [0, 1]
    assert gather(topic.consume, 100, 0.5, clock=topic.clock) == [2]


def test_nothing_comes_within_the_wait() -> None:
    topic = FakeTopic([])
    assert gather(topic.consume, 100, 0.5, clock=topic.clock) == []
    assert abs(topic.now - 0.5) < 1e-9


def test_a_backlog_fills_the_batch() -> None:
    topic = FakeTopic([0.0] * 50_000)
    assert len(gather(topic.consume, 20_000, 0.5, clock=topic.clock)) == 20_000


def test_slices_call_between_while_waiting_for_the_first_message() -> None:
    topic = FakeTopic([0.35])
    ticks: list[float] = []
    got = gather(topic.consume, 10, 1.0, between=lambda: ticks.append(topic.now), clock=topic.clock)
    assert got == [0]
    assert len(ticks) >= 4 and all(b - a <= 0.1 + 1e-9 for a, b in itertools.pairwise(ticks))


@given(
    arrivals=st.lists(st.floats(0, 2, allow_nan=False), max_size=60),
    max_messages=st.integers(1, 80),
    timeout=st.floats(0, 1, allow_nan=False),
    sliced=st.booleans(),
)
def test_never_more_than_asked_never_past_the_wait_nothing_lost(
    arrivals: list[float], max_messages: int, timeout: float, sliced: bool
) -> None:
    topic = FakeTopic(arrivals)
    between = (lambda: None) if sliced else None
    seen: list[int] = []
    for _ in range(200):
        start = topic.now
        got = gather(topic.consume, max_messages, timeout, between=between, clock=topic.clock)
        assert len(got) <= max_messages
        assert topic.now <= start + timeout + 1e-9  # never past the wait
        seen += got
        if topic.taken == len(arrivals) or timeout == 0:
            break
    assert seen == list(range(len(seen)))  # in order, none twice
