"""When the consumer last heard from a broker, from librdkafka's statistics.

Why: the service's own view of its lag comes from fetch responses. When the network
drops packets (no reset, no close) or the broker is frozen, no response comes, so the
last lag it saw (often 0) stays on display while the real lag grows, and /healthz would
call the process healthy forever. librdkafka's statistics carry, per broker connection,
`rxidle`: microseconds since that socket last received anything. A consumer in a group
hears from its coordinator every heartbeat (1 s) and from the partition leaders every
fetch wait, so "nothing from any broker for SFA_STALL_SECONDS" is a stall whatever the
last lag said. The statistics come every `statistics.interval.ms` (1 s by default here)
through `stats_cb`, served by the consumer's own poll, so this costs one small JSON
parse a second and never a call into the client from another thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ["BrokerContact", "last_receive_age"]


def last_receive_age(stats: Mapping[str, Any]) -> float | None:
    """Seconds since any real broker connection last received data, as of the stats.

    Bootstrap entries (nodeid -1) and connections that never received are left out;
    None when no connection has received anything yet.
    """
    ages = [
        b["rxidle"] / 1e6
        for b in (stats.get("brokers") or {}).values()
        if b.get("nodeid", -1) >= 0 and isinstance(b.get("rxidle"), int) and b["rxidle"] >= 0
    ]
    return min(ages) if ages else None


class BrokerContact:
    """Thread-safe record of the last receive, fed by librdkafka's `stats_cb`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None

    def on_stats(self, text: str) -> None:
        """The `stats_cb`: never raises (librdkafka would swallow it anyway)."""
        try:
            age = last_receive_age(orjson.loads(text))
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            return
        if age is not None:
            with self._lock:
                self._last = self._clock() - age

    def seconds_since(self) -> float | None:
        """Seconds since the last receive from any broker; None while unknown."""
        with self._lock:
            last = self._last
        return None if last is None else max(0.0, self._clock() - last)
