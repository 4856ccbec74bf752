"""The consumer's group settings behind SPEC 7's pairs and fast rebalances (no broker):
range co-partitioning, static membership from SFA_INSTANCE_ID, short sessions, and the
user's KAFKA_* overrides still winning."""

from __future__ import annotations

from service.kafka.config import consumer_config
from service.settings import load_settings


def test_classic_members_are_static_range_with_a_short_session() -> None:
    conf = consumer_config(load_settings({"SFA_INSTANCE_ID": "sfa-0", "KAFKA_GROUP_ID": "g"}).kafka)
    assert conf["partition.assignment.strategy"] == "range"
    assert conf["group.instance.id"] == "sfa-0"
    assert conf["session.timeout.ms"] == 10_000
    assert conf["heartbeat.interval.ms"] == 1_000


def test_kip_848_members_use_the_broker_range_assignor_and_its_timeouts() -> None:
    conf = consumer_config(load_settings({"KAFKA_GROUP_PROTOCOL": "consumer"}).kafka)
    assert conf["group.remote.assignor"] == "range"
    for client_side in ("partition.assignment.strategy", "session.timeout.ms"):
        assert client_side not in conf  # librdkafka refuses them with this protocol
    assert "group.instance.id" in conf


def test_the_users_properties_win() -> None:
    conf = consumer_config(
        load_settings(
            {
                "KAFKA_SESSION_TIMEOUT_MS": "6000",
                "KAFKA_GROUP_INSTANCE_ID": "mine",
                "KAFKA_PARTITION_ASSIGNMENT_STRATEGY": "roundrobin",
            }
        ).kafka
    )
    assert conf["session.timeout.ms"] == "6000"
    assert conf["group.instance.id"] == "mine"
    assert conf["partition.assignment.strategy"] == "roundrobin"
