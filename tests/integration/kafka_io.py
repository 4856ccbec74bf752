"""Kafka plumbing shared by the service tests: load a topic keyed by symbol, read a
topic to its end as a read_committed reader, compare results without their `input`."""

from __future__ import annotations

import time
import uuid

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

__all__ = ["comparable", "produce_keyed", "read_committed"]


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "input"}


def produce_keyed(bootstrap: str, topic: str, values: list[bytes]) -> None:
    # murmur2_random is the service's default owner(s) (SPEC 7), so nothing is forwarded
    # and "the whole input committed" means the whole work done.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"}
    )
    for value in values:
        try:
            key = orjson.loads(value).get("symbol", "").encode()
        except (orjson.JSONDecodeError, AttributeError):
            key = None
        producer.produce(topic, value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0


def read_committed(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Message]:
    """Every record a read_committed reader sees, up to the end offsets taken at the start."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        out: list[Message] = []
        done = {p for p, high in ends.items() if high == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            out.extend(m for m in consumer.consume(1000, 0.2) if m.error() is None)
            for tp in consumer.position(parts):
                if tp.offset >= ends[tp.partition]:
                    done.add(tp.partition)
        return out
    finally:
        consumer.close()
