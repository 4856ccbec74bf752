"""What `sfa run`'s core is told (events) and what it answers (instructions).

Plain frozen data, no behaviour: the core (`service.run.core`) turns events into
instructions, the shell (`service.run.shell`) turns instructions into I/O and what the
I/O reports back into events. Partitions are `(topic, partition)` keys; a *pair* is the
partition number `p` when the instance holds both input `p` and repartition `p`
(docs/ownership.md), which is the unit state is restored, processed and dropped in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TP",
    "Abort",
    "Apply",
    "Assigned",
    "Committed",
    "CountBatch",
    "CountRebalance",
    "Discard",
    "Drain",
    "Drained",
    "Drop",
    "Event",
    "Exit",
    "Failed",
    "Instruction",
    "Lost",
    "MemberFenced",
    "NewPipeline",
    "Note",
    "Pause",
    "Polled",
    "Rejoin",
    "Restore",
    "Restored",
    "Resume",
    "Revoked",
    "Rewind",
    "SetHeld",
    "SetStage",
    "Stalled",
    "StartStep",
    "StepDone",
    "StopRequested",
    "Submit",
]

TP = tuple[str, int]

#: Start-up, in order; `registry` only for wire-format input.
Step = Literal["listen", "reach", "registry", "topics", "dask", "producer", "subscribe"]
RebalanceKind = Literal["assigned", "revoked", "lost"]

# --- events ---


@dataclass(frozen=True, slots=True)
class StepDone:
    """A start-up step finished."""

    step: Step


@dataclass(frozen=True, slots=True)
class Assigned:
    """librdkafka handed these partitions over (reported inside its callback)."""

    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Revoked:
    """These partitions are going to another member once the callback returns."""

    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Lost:
    """These partitions were taken away (session timeout): their work cannot commit."""

    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Polled:
    """A batch came out of the consumer, with the partitions its records came from."""

    batch: int
    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Committed:
    """A submitted batch's output and offsets are committed."""

    batch: int


@dataclass(frozen=True, slots=True)
class Restored:
    """The state records asked for by `Restore(token)` have been read."""

    token: int


@dataclass(frozen=True, slots=True)
class Drained:
    """Nothing is in flight any more (`timed_out`: the rest was given up on)."""

    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    """A batch, a restore or a start-up step failed; `retriable` per SPEC 7's policy
    (an abortable transaction error is, fenced and fatal errors are not). Only a
    batch is retried: a restore or a start-up step that fails ends the instance."""

    error: BaseException
    retriable: bool
    during: Literal["batch", "restore", "start"] = "batch"


@dataclass(frozen=True, slots=True)
class StopRequested:
    why: str


@dataclass(frozen=True, slots=True)
class MemberFenced:
    """The broker fenced our group membership (FENCED_INSTANCE_ID): the consumer is
    finished. A lone static member can fence itself after a coordinator stall (its
    abandoned rejoin is processed late, KAFKA-20985, librdkafka #3437); another
    instance under our SFA_INSTANCE_ID fences us again and again. `at` is the shell's
    monotonic clock, so the core can tell the two apart without one of its own."""

    error: BaseException
    at: float


@dataclass(frozen=True, slots=True)
class Stalled:
    """The pipeline has stayed full for `STALL_S` without a commit: the shell must poll
    again to keep serving the group (rebalances run inside `consume`), so the partitions
    pause."""


Event = (
    StepDone
    | Assigned
    | Revoked
    | Lost
    | Polled
    | Committed
    | Restored
    | Drained
    | Failed
    | StopRequested
    | MemberFenced
    | Stalled
)

# --- instructions ---


@dataclass(frozen=True, slots=True)
class StartStep:
    step: Step


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop fetching these partitions (the member stays in the group)."""

    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Resume:
    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Restore:
    """Read these pairs' state records from the state topic, then report `Restored`."""

    token: int
    pairs: frozenset[int]


@dataclass(frozen=True, slots=True)
class Apply:
    """Load what `Restore(token)` read, for these of its pairs only (others went away)."""

    token: int
    pairs: frozenset[int]


@dataclass(frozen=True, slots=True)
class Drop:
    """Forget these pairs' state and latest results."""

    pairs: frozenset[int]


@dataclass(frozen=True, slots=True)
class Drain:
    """Wait for every in-flight batch (bounded when `grace`), then report `Drained`."""

    grace: bool = False


@dataclass(frozen=True, slots=True)
class Abort:
    """Abort the open transaction (a no-op for the at-least-once producer)."""


@dataclass(frozen=True, slots=True)
class Rewind:
    """Seek these partitions back to the group's committed offsets."""

    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Rejoin:
    """Close the fenced consumer and join the group again with a new one (what it was
    assigned is gone already: its batches were aborted and its pairs dropped)."""


@dataclass(frozen=True, slots=True)
class NewPipeline:
    """Replace the failed pipeline with a fresh one."""


@dataclass(frozen=True, slots=True)
class Submit:
    """Process the polled batch's records of `partitions` (the others are not ours to
    process now: see `RunCore._polled`); its sink commits their offsets with its output."""

    batch: int
    partitions: frozenset[TP]


@dataclass(frozen=True, slots=True)
class Discard:
    """Throw the polled batch away uncommitted: it will be read again."""

    batch: int


@dataclass(frozen=True, slots=True)
class SetStage:
    """What /readyz says the instance is doing."""

    stage: str


@dataclass(frozen=True, slots=True)
class SetHeld:
    """The pairs this instance processes now (readiness, `/symbols` ownership)."""

    pairs: frozenset[int]


@dataclass(frozen=True, slots=True)
class CountRebalance:
    """sfa_rebalances_total{kind}: what a rebalance did to this member."""

    kind: RebalanceKind


@dataclass(frozen=True, slots=True)
class CountBatch:
    """sfa_batches_total{outcome} for a batch that failed: retried, or the end."""

    outcome: Literal["retried", "failed"]


@dataclass(frozen=True, slots=True)
class Note:
    """A log line worth writing (the core decides, the shell writes)."""

    level: Literal["info", "warning"]
    message: str
    partitions: tuple[TP, ...] = ()


@dataclass(frozen=True, slots=True)
class Exit:
    """Shut down (drained already) and end: 0, or raise `error`."""

    error: BaseException | None = None


Instruction = (
    StartStep
    | Pause
    | Resume
    | Restore
    | Apply
    | Drop
    | Drain
    | Abort
    | Rewind
    | Rejoin
    | NewPipeline
    | Submit
    | Discard
    | SetStage
    | SetHeld
    | CountRebalance
    | CountBatch
    | Note
    | Exit
)
