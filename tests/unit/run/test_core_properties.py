"""Random event sequences against `sfa run`'s core, checked against a model kept here.

What the broker, the consumer and the pipeline may do in any order (assign, revoke,
lose, poll records of any partition, commit, finish a restore or a drain, fail, be
fenced out of the group, stop)
is thrown at the core; this test keeps its own record of what is held and what is in
flight, from the events it sent and the instructions it got back, and checks:
- a batch is submitted (which commits its offsets) only for partitions held, of a
  pair whose state was loaded;
- no pair is dropped while a submitted batch of it is in flight;
- after a stop, answering what the core waits for always ends in `Exit`.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from service.kafka.errors import FencedError, KafkaRetriableError, MemberFencedError
from service.run.core import Phase, RunCore
from service.run.events import (
    TP,
    Abort,
    Apply,
    Assigned,
    Committed,
    Drain,
    Drained,
    Drop,
    Event,
    Exit,
    Failed,
    Instruction,
    Lost,
    MemberFenced,
    Polled,
    Restore,
    Restored,
    Revoked,
    Stalled,
    StepDone,
    StopRequested,
    Submit,
)

TOPICS = ("in", "re")
ALL: list[TP] = [(t, p) for t in TOPICS for p in range(3)]
partition_sets = st.frozensets(st.sampled_from(ALL), min_size=1)
WEIGHTED = (
    ["assign", "revoke", "fail", "fence", "stop", "stall"]
    + ["assign_pairs", "drained"] * 2
    + ["poll", "commit", "restored"] * 4
)


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = RunCore(("in", "re"), max_inflight=2)
        self.core.begin()
        for step in ("listen", "reach", "topics", "dask", "producer", "subscribe"):
            self.core.handle(StepDone(step))
        self.held: set[TP] = set()
        self.loaded: set[int] = set()  # pairs whose restore was applied, not dropped since
        self.inflight: dict[int, frozenset[int]] = {}
        self.restores: list[int] = []
        self.drains = 0
        self.batches = 0
        self.exited = False
        self.stopped = False
        self.clock = 0.0

    def send(self, event: Event) -> None:
        for ins in self.core.handle(event):
            self.check(ins)

    def check(self, ins: Instruction) -> None:
        assert not self.exited, f"{ins} after Exit"
        match ins:
            case Submit(batch, partitions):
                assert partitions <= self.held, "a commit for partitions not held"
                pairs = frozenset(p for _, p in partitions)
                assert pairs <= self.loaded, "a commit before the pair's state was loaded"
                self.inflight[batch] = pairs
            case Drop(pairs):
                busy = set().union(*self.inflight.values()) if self.inflight else set()
                assert not pairs & busy, "a pair dropped with work in flight"
                self.loaded -= pairs
            case Apply(_, pairs):
                self.loaded |= pairs
            case Abort():
                self.inflight.clear()  # aborted batches never commit
            case Restore(token, _):
                self.restores.append(token)
            case Drain():
                self.drains += 1
            case Exit():
                self.exited = True

    def assign(self, partitions: frozenset[TP]) -> None:
        self.held |= partitions
        self.send(Assigned(partitions))

    def assign_pairs(self, numbers: frozenset[int]) -> None:
        self.assign(frozenset((t, p) for t in TOPICS for p in numbers))

    def revoke(self, data: st.DataObject, lost: bool) -> None:
        partitions = data.draw(st.frozensets(st.sampled_from(sorted(self.held)), min_size=1))
        self.held -= partitions
        self.send(Lost(partitions) if lost else Revoked(partitions))

    def poll(self, data: st.DataObject, stray: set[TP]) -> None:
        """Mostly records of held partitions, sometimes one of any partition."""
        held = (
            st.sets(st.sampled_from(sorted(self.held)), min_size=1) if self.held else st.just(set())
        )
        partitions = frozenset(data.draw(held) | stray)
        if not partitions:
            return
        self.batches += 1
        self.send(Polled(self.batches, partitions))

    def commit(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(sorted(self.inflight)))
        del self.inflight[batch]
        self.send(Committed(batch))

    def restored(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.restores))
        self.restores.remove(token)
        self.send(Restored(token))

    def drained(self, timed_out: bool) -> None:
        self.drains -= 1
        self.inflight.clear()  # committed, or given up on
        self.send(Drained(timed_out))

    def fail(self, retriable: bool, during: str) -> None:
        error = KafkaRetriableError("abortable") if retriable else FencedError("fenced")
        self.send(Failed(error, retriable, during))  # type: ignore[arg-type]

    def fence(self, after_s: float) -> None:
        """The consumer is gone: the new one holds nothing until it is assigned."""
        self.clock += after_s
        self.held = set()
        self.send(MemberFenced(MemberFencedError("fenced"), self.clock))

    def stop(self) -> None:
        self.stopped = True
        self.send(StopRequested("SIGTERM"))
        # Answer what the core waits for; it must end in Exit, whatever else was pending.
        for _ in range(3):
            if self.exited:
                break
            if self.drains:
                self.drained(timed_out=False)
        assert self.exited, "a stop that never ends"

    @precondition(lambda self: not self.exited)
    @rule(data=st.data(), kind=st.sampled_from(WEIGHTED))
    def act(self, data: st.DataObject, kind: str) -> None:
        """One event, drawn so that runs reach deep states: pairs get assigned, restored,
        polled and committed far more often than the instance fails or stops."""
        if kind == "assign":
            self.assign(data.draw(partition_sets))
        elif kind == "assign_pairs":
            self.assign_pairs(data.draw(st.frozensets(st.integers(0, 2), min_size=1)))
        elif kind == "revoke" and self.held:
            self.revoke(data, data.draw(st.booleans()))
        elif kind == "poll":
            self.poll(data, data.draw(st.sets(st.sampled_from(ALL), max_size=1)))
        elif kind == "commit" and self.inflight:
            self.commit(data)
        elif kind == "restored" and self.restores:
            self.restored(data)
        elif kind == "drained" and self.drains:
            self.drained(data.draw(st.booleans()))
        elif kind == "fail":
            self.fail(data.draw(st.booleans()), data.draw(st.sampled_from(["batch", "restore"])))
        elif kind == "fence":
            self.fence(data.draw(st.sampled_from([1.0, 1000.0])))
        elif kind == "stall":
            self.send(Stalled())
        elif kind == "stop":
            self.stop()

    @precondition(lambda self: self.exited)
    @rule(partitions=partition_sets)
    def after_exit(self, partitions: frozenset[TP]) -> None:
        """Whatever still happens (the consumer's close revokes), nothing is decided."""
        for event in (Revoked(partitions), Polled(0, partitions), Drained(), StopRequested("x")):
            assert self.core.handle(event) == []

    @invariant()
    def phase_agrees(self) -> None:
        assert self.exited == (self.core.phase is Phase.EXITED)

    @invariant()
    def a_full_pipeline_takes_no_more_work(self) -> None:
        """Full: either the shell does not poll, or nothing it polls can fetch."""
        core = self.core
        if core.phase is Phase.RUNNING and core.backpressured and not core.waiting_for_room:
            assert not core.fetching, "polling a full pipeline with partitions fetching"


CoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_core_machine = CoreMachine.TestCase
