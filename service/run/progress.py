"""The periodic progress line (`SFA_PROGRESS_SECONDS`), so `kubectl logs` shows life.

Pure: the service reports committed batches and asks for a line now and then; the window
restarts with every line, so bars/s is the rate since the previous line, not since start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "ProgressLine"]


@dataclass(frozen=True, slots=True)
class ProgressLine:
    message: str
    fields: dict[str, Any]


class Progress:
    """Counts since the last line; `line()` renders them and starts a new window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._bars = 0
        self._messages = 0
        self._batches = 0
        self._total_batches = 0

    def batch_committed(self, messages: int, bars: int) -> None:
        self._messages += messages
        self._bars += bars
        self._batches += 1
        self._total_batches += 1

    def line(self, lag: int | None, inflight: int, fallback: str | None) -> ProgressLine:
        now = self._clock()
        seconds = max(now - self._since, 1e-9)
        rate = self._bars / seconds
        lag_text = "unknown" if lag is None else f"{lag:,}"
        dask = f"fallback to local ({fallback})" if fallback else "no fallback"
        message = (
            f"progress: {rate:,.0f} bars/s over {seconds:.0f} s, {self._batches} batches "
            f"({self._total_batches} since start), lag {lag_text} messages, "
            f"{inflight} in flight, {dask}"
        )
        fields = {
            "bars_per_second": round(rate, 1),
            "interval_seconds": round(seconds, 3),
            "batches": self._batches,
            "batches_total": self._total_batches,
            "messages": self._messages,
            "lag_messages": lag,
            "inflight_batches": inflight,
            "fallback_active": fallback is not None,
            "fallback_reason": fallback,
        }
        self._since, self._bars, self._messages, self._batches = now, 0, 0, 0
        return ProgressLine(message, fields)
