"""The one way the integration tests make and remove topics, on any broker.

Why one: CreateTopics returns before every partition has a leader, and producing
earlier fails now and then; each hand-made copy of "create, then wait for leaders" was
a chance to forget the wait. Deleting is best effort everywhere: a leftover
uuid-named topic harms nobody, and a failed cleanup must not fail a test that passed.

The fixtures in conftest.py (`new_topic`, `service_topics`), the drills and the
secure-broker tests all come here, each with the admin client of its own broker.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["create_topics", "delete_topics", "service_names"]


def create_topics(
    admin: AdminClient,
    names: Iterable[str],
    partitions: int,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create the topics and return once every partition of each has a leader."""
    specs = [
        NewTopic(n, num_partitions=partitions, replication_factor=1, config=config or {})
        for n in names
    ]
    for future in admin.create_topics(specs, operation_timeout=timeout).values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    pending = {s.topic for s in specs}
    while pending:
        meta = admin.list_topics(timeout=10).topics
        pending = {
            n
            for n in pending
            if n not in meta
            or meta[n].error is not None
            or len(meta[n].partitions) != partitions
            or any(p.leader < 0 for p in meta[n].partitions.values())
        }
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not ready after {timeout} s: {sorted(pending)}")
            time.sleep(0.05)


def delete_topics(admin: AdminClient, names: Iterable[str]) -> None:
    """Delete those of `names` that exist; best effort."""
    wanted = list(names)
    if not wanted:
        return
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [n for n in wanted if n in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=10).values():
            with contextlib.suppress(KafkaException, TimeoutError):
                future.result(timeout=15)


def service_names() -> dict[str, str]:
    """Fresh names for one service group: input, output, dlq, state, group (the
    `<group>-repartition` topic follows the group's name)."""
    tag = uuid.uuid4().hex[:10]
    return {
        "input": f"bars-{tag}",
        "output": f"out-{tag}",
        "dlq": f"dlq-{tag}",
        "state": f"state-{tag}",
        "group": f"g-{tag}",
    }
