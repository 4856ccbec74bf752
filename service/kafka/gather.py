"""When a polled batch closes: full, quiet, or out of time.

SFA_BATCH_MAX_WAIT_MS is how long a batch waits for its *first* message. librdkafka's
`consume(n, timeout)` returns only once it has `n` messages or the timeout passed, so
asking it for a whole batch made every batch of a quiet topic wait the full
SFA_BATCH_MAX_WAIT_MS (500 ms) after its messages had arrived, and an end-of-day
snapshot paid it twice (read, then its forwarded bars read again on their owner).
Here a batch waits for one message, takes everything already fetched, then goes on
taking while messages keep coming; it closes after `LINGER_S` without one, when full,
or when the wait is up. A backlog still fills batches (librdkafka prefetches), and a
burst that arrives over a few fetches still lands in one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LINGER_S", "gather"]

T = TypeVar("T")

#: Quiet this long after the last message closes the batch: a producer's burst arrives
#: over a few fetch responses a few ms apart, and one batch is one transaction.
LINGER_S = 0.01


def gather(
    consume: Callable[[int, float], list[T]],
    max_messages: int,
    timeout_s: float,
    *,
    between: Callable[[], None] | None = None,
    slice_s: float = 0.1,
    linger_s: float = LINGER_S,
    clock: Callable[[], float] = time.monotonic,
) -> list[T]:
    """Up to `max_messages` from `consume(n, timeout_s)` (librdkafka's semantics: it
    returns once it has `n`, or at the timeout with what it has).

    With `between`, the wait for the first message is cut into `slice_s` slices and
    `between` runs before each call (pause, resume and seek take effect between calls).
    """
    messages: list[T] = []
    deadline = clock() + timeout_s
    while True:
        if between is not None:
            between()
        left = max(deadline - clock(), 0.0)
        if not messages:
            wait = min(slice_s, left) if between is not None else left
            got = consume(1, wait)  # returns at the first message
            if got and max_messages > 1:
                got += consume(max_messages - 1, 0.0)  # and what is fetched already
        else:
            wait = min(linger_s, left)
            got = consume(max_messages - len(messages), wait)
        messages += got
        if len(messages) >= max_messages or clock() >= deadline:
            return messages
        if messages and not got:
            return messages  # quiet for linger_s: the burst is over
