"""The session broker and the topic fixture work, so other failures are not blamed on them."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.conftest import NewTopicFactory

pytestmark = pytest.mark.integration


def test_new_topic_has_requested_partitions_and_compaction(
    kafka_admin: AdminClient, new_topic: NewTopicFactory
) -> None:
    name = new_topic(partitions=3, config={"cleanup.policy": "compact"})
    meta = kafka_admin.list_topics(topic=name, timeout=10).topics[name]
    assert len(meta.partitions) == 3
    assert kafka_admin.list_topics(timeout=10).brokers


def test_auto_topic_creation_is_off(kafka_admin: AdminClient) -> None:
    """A typo in a topic name must fail loudly, not silently create a topic."""
    name = "sfa-no-such-topic"
    meta = kafka_admin.list_topics(topic=name, timeout=10).topics[name]
    assert meta.error is not None
