"""`SFA_TRACEMALLOC_SECONDS=N`: where Python memory grows, logged every N seconds.

A long-running service whose RSS keeps rising needs one question answered first: is it
Python objects (a cache or a list that only grows) or native memory (librdkafka's
buffers, the allocator's arenas)? With the variable set, `sfa run` starts `tracemalloc`
(SFA_TRACEMALLOC_FRAMES frames, 25 by default), takes a baseline after the first
interval (start-up and warm-up are not a leak) and then logs, every interval, the traced
total and the ten call sites whose memory grew most since the baseline. Traced memory
flat while RSS rises means native.

Off by default: tracing costs CPU and memory of its own. Meant for a soak or a staging
instance, not for production. Its cost grows with the frames kept: 25 frames slowed a
soak's batches past the transaction timeout; 1-4 frames name the allocating line, enough
to tell a growing cache from native memory.
"""

from __future__ import annotations

import logging
import os
import threading
import tracemalloc

__all__ = ["start_from_env"]

log = logging.getLogger(__name__)
_FRAMES = 25
_TOP = 10


def _frames() -> int:
    raw = os.environ.get("SFA_TRACEMALLOC_FRAMES", "").strip()
    try:
        return max(1, int(raw)) if raw else _FRAMES
    except ValueError:
        log.warning("SFA_TRACEMALLOC_FRAMES=%r is not a whole number; %d frames", raw, _FRAMES)
        return _FRAMES


def _interval() -> float | None:
    raw = os.environ.get("SFA_TRACEMALLOC_SECONDS", "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        log.warning("SFA_TRACEMALLOC_SECONDS=%r is not a number; tracing stays off", raw)
        return None
    return seconds if seconds > 0 else None


def _report(stop: threading.Event, seconds: float) -> None:
    baseline: tracemalloc.Snapshot | None = None
    while not stop.wait(seconds):
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if baseline is None:
            baseline = snapshot
            continue
        current, peak = tracemalloc.get_traced_memory()
        top = snapshot.compare_to(baseline, "traceback")[:_TOP]
        log.info(
            "tracemalloc: %.1f MiB traced (peak %.1f MiB); top growth since the baseline",
            current / 2**20,
            peak / 2**20,
            extra={
                "traced_mib": round(current / 2**20, 2),
                "growth": [
                    {
                        "kib": round(stat.size_diff / 1024, 1),
                        "blocks": stat.count_diff,
                        "where": [f"{f.filename}:{f.lineno}" for f in stat.traceback[-4:]],
                    }
                    for stat in top
                ],
            },
        )


def start_from_env() -> threading.Event | None:
    """Start tracing and the reporter thread when asked; set the returned event to stop."""
    seconds = _interval()
    if seconds is None:
        return None
    frames = _frames()
    tracemalloc.start(frames)
    stop = threading.Event()
    threading.Thread(target=_report, args=(stop, seconds), name="memtrace", daemon=True).start()
    log.info(
        "tracemalloc on: %d frames, a report every %.0f s (SFA_TRACEMALLOC_SECONDS)",
        frames,
        seconds,
    )
    return stop
