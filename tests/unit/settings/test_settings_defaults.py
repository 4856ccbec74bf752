"""Defaults a newcomer meets without setting anything: internal topics named per group
(SPEC 9), an instance id that a second instance on one machine does not share, and the
bootstrap address that must carry its port."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import ConfigError
from service.settings import load_settings

_GROUPS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20)


@given(group=_GROUPS)
def test_internal_topics_are_named_per_group(group: str) -> None:
    settings = load_settings({"KAFKA_GROUP_ID": group})
    assert settings.kafka.state_topic == f"{group}-state"
    assert settings.kafka.effective_repartition_topic == f"{group}-repartition"


def test_the_default_group_and_an_explicit_state_topic() -> None:
    assert load_settings({}).kafka.state_topic == "sfa-service-state"
    kept = load_settings({"KAFKA_GROUP_ID": "g", "SFA_STATE_TOPIC": "sfa-state"})
    assert kept.kafka.state_topic == "sfa-state"  # how an existing deployment keeps its state


@given(port=st.integers(1, 65535))
def test_the_instance_id_follows_a_non_default_metrics_port(port: int) -> None:
    host = socket.gethostname()
    got = load_settings({"SFA_METRICS_PORT": str(port)}).kafka.instance_id
    assert got == (host if port == 8000 else f"{host}-{port}")


def test_the_instance_id_without_metrics_and_when_set() -> None:
    assert load_settings({"SFA_METRICS_PORT": "0"}).kafka.instance_id == socket.gethostname()
    chosen = {"SFA_METRICS_PORT": "8001", "SFA_INSTANCE_ID": "b"}
    assert load_settings(chosen).kafka.instance_id == "b"


@pytest.mark.parametrize("value", ["127.0.0.1", "a:1,b", "h:", "h:70000", "[::1]"])
def test_a_broker_without_its_port_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^KAFKA_BOOTSTRAP_SERVERS: every broker needs its port"):
        load_settings({"KAFKA_BOOTSTRAP_SERVERS": value})


@pytest.mark.parametrize(
    "value", ["127.0.0.1:9092", "a:1, b:2", "[::1]:9092", "SSL://broker.example:9093", "k-0.k:9092"]
)
def test_brokers_with_ports_are_taken(value: str) -> None:
    assert load_settings({"KAFKA_BOOTSTRAP_SERVERS": value}).kafka.kafka_bootstrap_servers == value


def test_a_years_filter_below_min_years_is_refused() -> None:
    fewer = r"^SFA_YEARS: 2 year\(s\), fewer than SFA_MIN_YEARS \(3\)"
    with pytest.raises(ConfigError, match=fewer):
        load_settings({"SFA_YEARS": "2019,2020"})
    assert load_settings({"SFA_YEARS": "2019,2020", "SFA_MIN_YEARS": "2"}).engine.years == {
        2019,
        2020,
    }
