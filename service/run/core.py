"""Every decision `sfa run` makes about its partitions and its life, as a pure machine.

`RunCore.handle(event)` returns the instructions to carry out, in order; nothing here
does I/O, reads a clock or starts a thread (the model is dask/distributed's
`WorkerState`: the shell, `service.run.shell`, carries instructions out and reports
what happened as further events). That makes each decision a millisecond unit test
(tests/unit/run/) instead of a broker round trip.

What it owns:
- **Twin pairing** (SPEC 7, docs/ownership.md). Input partition p and repartition
  partition p are processed together or not at all. A lone twin (a member subscribed
  to the input only, during a rolling upgrade, or an assignor that splits them) stays
  paused; a pair losing either twin is given up before the other could move.
- **Restore** is a phase of the main loop, not work inside librdkafka's callback
  (as quix-streams does it): new partitions are paused inside the callback, their state
  is read in the background, and they start fetching once it is loaded. A restore
  that comes back for pairs no longer held loads nothing (`Apply` names what to keep).
- **Backpressure**: at `max_inflight` batches in flight the shell stops polling and
  waits for a commit (`waiting_for_room`). It does not pause: librdkafka discards a
  paused partition's prefetched records, and fetching them again cost the keyed feed
  up to a second per refill (measured, docs/performance.md). Only when the pipeline
  stays full for `STALL_S` (`Stalled`: Dask slow or lost) is every partition paused, so
  that the shell can poll, and serve rebalances, without taking more work; they resume
  as batches commit.
- **Drain before drop**: partitions leaving while batches are in flight are dropped
  only after `Drained`.
- **The failure policy** (SPEC 7): a retriable batch failure aborts, drops the state,
  restores it, rewinds to the committed offsets and starts a new pipeline, in that
  order, while rebalances go on being served; anything else, or a failed restore, exits
  with the error. A consumer fenced out of the group (`MemberFenced`) aborts, drops
  every pair and rejoins with a new consumer, once per `REJOIN_WINDOW_S`: fenced again
  within it means another instance holds our SFA_INSTANCE_ID, and the instance exits
  with the error. A stop finishes in-flight batches (bounded) and exits 0; a stop
  before anything was submitted exits at once, having committed nothing.
- **Readiness**: the stage /readyz shows and the pairs held.

Invariants (property-tested): a batch is submitted, which is what commits its offsets,
only when every partition it read is held and its pair is restored; a pair is never
dropped while a batch is in flight; after a stop, the machine ends in `Exit`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable

from service.run.events import (
    TP,
    Abort,
    Apply,
    Assigned,
    Committed,
    CountBatch,
    CountRebalance,
    Discard,
    Drain,
    Drained,
    Drop,
    Event,
    Exit,
    Failed,
    Instruction,
    Lost,
    MemberFenced,
    NewPipeline,
    Note,
    Pause,
    Polled,
    Rejoin,
    Restore,
    Restored,
    Resume,
    Revoked,
    Rewind,
    SetHeld,
    SetStage,
    Stalled,
    StartStep,
    Step,
    StepDone,
    StopRequested,
    Submit,
)

__all__ = ["REJOIN_WINDOW_S", "RUNNING", "STALL_S", "Phase", "RunCore"]

#: The stage of an instance that has started (the same word /readyz reports).
RUNNING = "running"
STOPPING = "stopping"
#: A second fence within this many seconds of a rejoin is another instance with our id.
REJOIN_WINDOW_S = 60.0
#: How long a full pipeline waits for a commit before the shell polls (paused) again: a
#: rebalance waits at most this long on top of the drain it waits for anyway.
STALL_S = 2.0


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RECOVERING = "recovering"
    STOPPING = "stopping"
    EXITED = "exited"


class RunCore:
    """The state of one `sfa run` instance and its transitions."""

    def __init__(
        self, twins: tuple[str, str], *, max_inflight: int, with_registry: bool = False
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.twins = twins
        self.max_inflight = max_inflight
        self.phase = Phase.STARTING
        steps: list[Step] = ["listen", "reach", "registry", "topics", "dask", "producer"]
        self._steps: list[Step] = [s for s in steps if with_registry or s != "registry"]
        self._steps.append("subscribe")
        self.held: set[TP] = set()  # what librdkafka assigned
        self.fetching: set[TP] = set()  # held and not paused, as we last told the consumer
        self.active: set[int] = set()  # pairs restored and being processed
        self.inflight: dict[int, frozenset[int]] = {}  # submitted batch -> its pairs
        self._restores: dict[int, set[int]] = {}  # token -> pairs it may still load
        self._tokens = itertools.count(1)
        self._recovery: int | None = None  # the token whose Restored ends a recovery
        self._pending_drop: set[int] = set()  # left while batches were in flight
        self._rewind_later: set[TP] = set()  # read past while not processing them
        self._stage = ""
        self._held_told: frozenset[int] = frozenset()
        self._rejoined_at: float | None = None
        self._stalled = False  # full for STALL_S: paused, polling to serve the group

    # --- what the shell asks between events ---

    @property
    def backpressured(self) -> bool:
        return len(self.inflight) >= self.max_inflight

    @property
    def waiting_for_room(self) -> bool:
        """Full, and not for long: the shell waits for a commit instead of polling."""
        return self.phase is Phase.RUNNING and self.backpressured and not self._stalled

    @property
    def polling(self) -> bool:
        """Whether the shell should call `consume` (which also serves rebalances)."""
        return self.phase in (Phase.RUNNING, Phase.RECOVERING)

    def pairs(self) -> set[int]:
        source, repartition = self.twins
        return {p for t, p in self.held if t == source and (repartition, p) in self.held}

    def restoring(self) -> set[int]:
        return set().union(*self._restores.values()) if self._restores else set()

    # --- transitions ---

    def begin(self) -> list[Instruction]:
        """The first instructions: the first start-up step."""
        return [SetStage("starting"), StartStep(self._steps[0])]

    def handle(self, event: Event) -> list[Instruction]:
        if self.phase is Phase.EXITED:
            return []
        out: list[Instruction] = []
        match event:
            case StepDone(step):
                self._step_done(step, out)
            case Assigned(partitions):
                out.append(CountRebalance("assigned"))
                self._assigned(partitions, out)
            case Revoked(partitions):
                out.append(CountRebalance("revoked"))
                self._revoked(partitions, out)
            case Lost(partitions):
                out.append(CountRebalance("lost"))
                self._revoked(partitions, out)
            case Polled(batch, partitions):
                self._polled(batch, partitions, out)
            case Committed(batch):
                self.inflight.pop(batch, None)
            case Restored(token):
                self._restored(token, out)
            case Drained():
                self._drained(out)
            case Failed(error, retriable, during):
                self._failed(error, retriable and during == "batch", out)
            case StopRequested():
                self._stop(out)
            case MemberFenced(error, at):
                self._fenced(error, at, out)
            case Stalled():
                self._stalled = self.backpressured
        self._reconcile(out)
        return out

    def _step_done(self, step: Step, out: list[Instruction]) -> None:
        if self.phase is not Phase.STARTING or not self._steps or self._steps[0] != step:
            return
        self._steps.pop(0)
        if self._steps:
            out.append(StartStep(self._steps[0]))
        else:
            self.phase = Phase.RUNNING
            self._set_stage(RUNNING, out)

    def _assigned(self, partitions: frozenset[TP], out: list[Instruction]) -> None:
        new_tps = partitions - self.held
        self.held |= partitions
        self.fetching |= new_tps  # librdkafka fetches what it assigns: paused below
        if self.phase not in (Phase.RUNNING, Phase.RECOVERING):
            return
        new = self.pairs() - self.active - self.restoring()
        if new:
            if not self.active and self.phase is Phase.RUNNING:
                self._set_stage(f"restoring state of partitions {sorted(new)}", out)
            token = next(self._tokens)
            self._restores[token] = set(new)
            out.append(Restore(token, frozenset(new)))
        self._note_lonely(out)

    def _revoked(self, partitions: frozenset[TP], out: list[Instruction]) -> None:
        self.held -= partitions
        self.fetching -= partitions  # librdkafka unassigns them when the callback returns
        pairs = self.pairs()
        for wanted in self._restores.values():
            wanted &= pairs  # a restore still running for them will load nothing
        gone = self.active - pairs
        if gone:
            if self.inflight:
                self._pending_drop |= gone
                out.append(Drain())
            else:
                self._drop(gone, out)
        self._note_lonely(out)

    def _polled(self, batch: int, partitions: frozenset[TP], out: list[Instruction]) -> None:
        if self.phase is not Phase.RUNNING:
            out.append(Discard(batch))  # recovering: read again after the rewind
            return
        processing = self.active - self._pending_drop
        keep = frozenset(tp for tp in partitions if tp in self.held and tp[1] in processing)
        # Records of a partition given up while the batch was polled are not ours (its
        # new owner reads them from the committed offset). Records of a held partition
        # that is not processing (fetched before its pause took effect, or of a pair
        # being given up) were read past: rewind it, once nothing of it is in flight.
        late = frozenset(tp for tp in partitions if tp in self.held and tp not in keep)
        if late:
            self._rewind_later |= late
            if not self._pending_drop:
                self._rewind_late(out)
        if keep:
            self.inflight[batch] = frozenset(p for _, p in keep)
            out.append(Submit(batch, keep))
        else:
            out.append(Discard(batch))

    def _rewind_late(self, out: list[Instruction]) -> None:
        late = frozenset(self._rewind_later & self.held)
        self._rewind_later = set()
        if late:
            out.append(Rewind(late))

    def _restored(self, token: int, out: list[Instruction]) -> None:
        wanted = self._restores.pop(token, None)
        if wanted is None:
            return
        if self.phase not in (Phase.RUNNING, Phase.RECOVERING):
            out.append(Apply(token, frozenset()))  # stopping: nothing more is processed
            return
        keep = frozenset(wanted & self.pairs())
        out.append(Apply(token, keep))
        self.active |= keep
        self._tell_held(out)
        if token == self._recovery:
            self._recovery = None
            self.phase = Phase.RUNNING
            if self.active:
                out.append(Rewind(frozenset(self._tps(self.active))))
            out.append(NewPipeline())
        if not self._restores and self.phase is Phase.RUNNING:
            self._set_stage(RUNNING, out)

    def _drained(self, out: list[Instruction]) -> None:
        self.inflight.clear()
        if self._pending_drop:
            self._drop(self._pending_drop, out)
            self._pending_drop = set()
        self._rewind_late(out)
        if self.phase is Phase.STOPPING:
            self._exit(out)

    def _failed(self, error: BaseException, retriable: bool, out: list[Instruction]) -> None:
        if self.phase is Phase.STOPPING:
            return  # the stop's drain reports it, and ends in Exit
        if retriable and self.phase is Phase.RUNNING:
            out.append(CountBatch("retried"))
            self._recover(out)
            return
        out.append(CountBatch("failed"))
        self._exit(out, error)

    def _recover(self, out: list[Instruction]) -> None:
        """Abort, drop, restore; `_restored` then rewinds and starts a new pipeline."""
        self.phase = Phase.RECOVERING
        self.inflight.clear()  # aborted: none of them will commit
        out.append(Abort())
        pairs = self.active | self._pending_drop
        self._pending_drop = set()
        self._rewind_later = set()  # the recovery rewinds every pair it keeps
        if pairs:
            self._drop(pairs, out)
        keep = pairs & self.pairs()
        token = next(self._tokens)
        self._restores[token] = set(keep)
        self._recovery = token
        out.append(Restore(token, frozenset(keep)))

    def _fenced(self, error: BaseException, at: float, out: list[Instruction]) -> None:
        """Everything the fenced consumer held is gone: nothing in flight can commit,
        no restore is wanted. Rejoin under a new member id, unless this keeps happening."""
        if self.phase is Phase.STOPPING:
            return  # the stop's drain reports the failed commits, and ends in Exit
        recent = self._rejoined_at is not None and at - self._rejoined_at < REJOIN_WINDOW_S
        if self.phase not in (Phase.RUNNING, Phase.RECOVERING) or recent:
            self._exit(out, error)
            return
        self._rejoined_at = at
        out.append(Note("warning", f"consumer fenced, joining the group again: {error}"))
        out.append(CountRebalance("lost"))
        self.inflight.clear()
        out.append(Abort())
        gone = self.active | self._pending_drop
        self._pending_drop = set()
        self._rewind_later = set()
        if gone:
            self._drop(gone, out)
        self.held, self.fetching = set(), set()
        for wanted in self._restores.values():
            wanted.clear()  # a restore still running loads nothing
        self._recovery = None
        self.phase = Phase.RUNNING
        out.append(Rejoin())
        out.append(NewPipeline())

    def _stop(self, out: list[Instruction]) -> None:
        if self.phase is Phase.STOPPING:
            return
        if self.phase is Phase.RUNNING and self.inflight:
            self.phase = Phase.STOPPING
            self._set_stage(STOPPING, out)
            out.append(Drain(grace=True))
            return
        self._exit(out)  # nothing in flight (starting, restoring, recovering): exit now

    # --- helpers ---

    def _drop(self, pairs: Iterable[int], out: list[Instruction]) -> None:
        pairs = frozenset(pairs)
        self.active -= pairs
        out.append(Drop(pairs))
        self._tell_held(out)

    def _exit(self, out: list[Instruction], error: BaseException | None = None) -> None:
        self.phase = Phase.EXITED
        out.append(Exit(error))

    def _set_stage(self, stage: str, out: list[Instruction]) -> None:
        if stage != self._stage:
            self._stage = stage
            out.append(SetStage(stage))

    def _tell_held(self, out: list[Instruction]) -> None:
        held = frozenset(self.active)
        if held != self._held_told:
            self._held_told = held
            out.append(SetHeld(held))

    def _note_lonely(self, out: list[Instruction]) -> None:
        pairs = self.pairs()
        lonely = tuple(sorted(tp for tp in self.held if tp[1] not in pairs))
        if lonely:
            out.append(Note("warning", "holding partitions without their twin paused", lonely))

    def _tps(self, pairs: Iterable[int]) -> set[TP]:
        return {(t, p) for p in pairs for t in self.twins if (t, p) in self.held}

    def _reconcile(self, out: list[Instruction]) -> None:
        """Pause and resume so that exactly the restored pairs fetch, unless stalled."""
        if self.phase in (Phase.STARTING, Phase.EXITED):
            return
        if not self.backpressured:
            self._stalled = False
        fetch = self.phase is Phase.RUNNING and not (self.backpressured and self._stalled)
        wanted = self._tps(self.active - self._pending_drop) if fetch else set()
        pause, resume = self.fetching - wanted, wanted - self.fetching
        if pause:
            out.append(Pause(frozenset(pause)))
        if resume:
            out.append(Resume(frozenset(resume)))
        self.fetching = wanted
