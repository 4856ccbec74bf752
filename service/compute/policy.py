"""The compute decisions, without a cluster: where a chunk goes next, when Dask counts as
lost, when to look for it again, when an empty cluster has waited long enough.

Both shells (`service.compute.stream` for the pipeline, `service.compute.sync` for the
compat API) carry these decisions out; this module only decides. It imports no Dask
and reads time only through the `clock` it is given, so tests drive it with a fake
clock in microseconds instead of killing workers and waiting (the way dask/distributed
tests its `WorkerState`).

The rules:

* A chunk goes to the cluster while there is a client and no fallback is active.
* A chunk whose work was lost (worker or scheduler gone) is scattered again from our
  copy until it has been lost `attempts` times; then it is computed here.
* After that last loss, a cluster that cannot run work (no client, not running, no
  workers) puts the whole handle into fallback: every chunk runs here until a probe
  finds workers again. A chunk lost on a cluster that still has workers does not.
* In fallback, a probe is due every `reconnect_seconds` (0: never), at most one at a
  time; starting one pushes the next one a whole interval away.
* A task waits for workers that may never come back; once the cluster has had no
  workers for longer than `empty_timeout`, the wait is given up (`EmptyClusterWatch`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["ComputePolicy", "EmptyClusterWatch", "Step"]

Clock = Callable[[], float]


class Step(enum.Enum):
    """Where a chunk's next attempt runs."""

    CLUSTER = "cluster"
    LOCAL = "local"


class ComputePolicy:
    """Retry, fallback and probe decisions for one compute handle."""

    def __init__(
        self,
        *,
        attempts: int = 2,
        reconnect_seconds: float = 30.0,
        fallback_reason: str | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.attempts = attempts
        self.reconnect_seconds = reconnect_seconds
        self.fallback_reason = fallback_reason
        self._clock = clock
        self._probe_at = clock() + reconnect_seconds
        self._probing = False

    @property
    def fallback_active(self) -> bool:
        return self.fallback_reason is not None

    # --- one chunk ---

    def first_step(self, has_client: bool) -> Step:
        return Step.CLUSTER if has_client and not self.fallback_active else Step.LOCAL

    def after_loss(
        self, losses: int, has_client: bool, reachable: Callable[[], bool], reason: str
    ) -> Step:
        """The chunk's work was lost for the `losses`-th time: try again, or compute here.

        `reachable` is asked only after the last allowed loss (it costs a scheduler round
        trip); when it says no, the handle falls back as a whole.
        """
        if losses < self.attempts and self.first_step(has_client) is Step.CLUSTER:
            return Step.CLUSTER
        if not reachable():
            self.fall_back(f"cluster lost: {reason}")
        return Step.LOCAL

    # --- the handle ---

    def fall_back(self, reason: str) -> bool:
        """Compute here until a probe finds workers; True when this starts the fallback
        (the shell logs it once), False when one was already active."""
        started = not self.fallback_active
        if started:
            self._probe_at = self._clock() + self.reconnect_seconds
        self.fallback_reason = reason
        return started

    def probe_due(self) -> bool:
        return (
            self.fallback_active
            and self.reconnect_seconds > 0
            and not self._probing
            and self._clock() >= self._probe_at
        )

    def probe_started(self) -> None:
        self._probing = True
        self._probe_at = self._clock() + self.reconnect_seconds

    def probe_finished(self, workers: int) -> bool:
        """The probe saw `workers` workers (0 when it could not reach the scheduler).
        True when that ends the fallback."""
        self._probing = False
        if workers > 0 and self.fallback_active:
            self.fallback_reason = None
            return True
        return False


class EmptyClusterWatch:
    """Gives up on a task once the cluster has had no workers for `timeout` seconds."""

    def __init__(self, timeout: float, clock: Clock = time.monotonic) -> None:
        self._timeout = timeout
        self._clock = clock
        self._empty_since: float | None = None

    def give_up(self, n_workers: int) -> bool:
        """Called about once a second with the cluster's current worker count."""
        if n_workers > 0:
            self._empty_since = None
            return False
        now = self._clock()
        if self._empty_since is None:
            self._empty_since = now
        return now - self._empty_since > self._timeout
