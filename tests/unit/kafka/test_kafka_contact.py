"""Broker contact from librdkafka statistics (service/kafka/contact.py) and /healthz."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from service.kafka.contact import BrokerContact, last_receive_age
from service.run.health import Health


def _stats(**brokers: tuple[int, int]) -> dict:
    """Statistics with brokers name -> (nodeid, rxidle in µs)."""
    return {"brokers": {n: {"nodeid": nid, "rxidle": rx} for n, (nid, rx) in brokers.items()}}


def test_the_freshest_real_connection_counts() -> None:
    stats = _stats(boot=(-1, 0), b1=(1, 2_500_000), coord=(1, 400_000), b2=(2, 9_000_000))
    assert last_receive_age(stats) == 0.4


def test_no_receive_yet_is_unknown() -> None:
    assert last_receive_age(_stats(boot=(-1, 5), b1=(1, -1))) is None
    assert last_receive_age({}) is None


@given(st.lists(st.tuples(st.integers(-1, 3), st.integers(-1, 10**9)), max_size=6))
def test_the_age_is_the_minimum_over_brokers_that_received(rows: list[tuple[int, int]]) -> None:
    stats = _stats(**{f"b{i}": row for i, row in enumerate(rows)})
    ages = [rx / 1e6 for nid, rx in rows if nid >= 0 and rx >= 0]
    assert last_receive_age(stats) == (min(ages) if ages else None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_contact_ages_with_the_clock_and_ignores_garbage() -> None:
    clock = Clock()
    contact = BrokerContact(clock)
    assert contact.seconds_since() is None
    contact.on_stats(orjson.dumps(_stats(b1=(1, 1_000_000))).decode())
    assert contact.seconds_since() == 1.0
    clock.now += 4
    assert contact.seconds_since() == 5.0
    contact.on_stats("{not json")
    contact.on_stats("[1, 2]")
    assert contact.seconds_since() == 5.0


def test_healthz_says_stalled_when_no_broker_answers_whatever_the_lag() -> None:
    clock = Clock()
    health = Health(stall_seconds=10, clock=clock)
    health.set_lag_provider(lambda: 0)  # the last lag seen before the network froze
    silence = [3.0]
    health.set_contact_provider(lambda: silence[0])
    assert health.liveness().ok
    silence[0] = 10.5
    probe = health.liveness()
    assert not probe.ok and probe.body["status"] == "stalled"
    assert "no answer from any Kafka broker for 10 s" in probe.body["reason"]
    assert probe.body["seconds_since_broker_contact"] == 10.5
    silence[0] = 0.2  # it answers again
    assert health.liveness().ok


def test_unknown_contact_is_not_a_stall() -> None:
    health = Health(stall_seconds=1)
    health.set_contact_provider(lambda: None)
    assert health.liveness().ok

    def broken() -> float:
        raise RuntimeError("client closed")

    health.set_contact_provider(broken)
    assert health.liveness().ok
