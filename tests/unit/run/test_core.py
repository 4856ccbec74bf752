"""`sfa run`'s pure core, driven the way distributed's tests drive `WorkerState`: one
scenario per decision, events in, the exact instructions out, in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest

from service.kafka.errors import FencedError, KafkaRetriableError, MemberFencedError
from service.run.core import REJOIN_WINDOW_S, RUNNING, Phase, RunCore
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
    StepDone,
    StopRequested,
    Submit,
)

IN, RE = "bars", "bars-repartition"
STEPS = ("listen", "reach", "topics", "dask", "producer", "subscribe")


def pair(*numbers: int) -> frozenset[TP]:
    return frozenset((t, p) for p in numbers for t in (IN, RE))


class Driver:
    """A core plus everything it said, for scenarios to assert on."""

    seen: ClassVar[set[type]] = set()  # every instruction type any scenario made (coverage test)

    def __init__(self, max_inflight: int = 4, *, registry: bool = False) -> None:
        self.core = RunCore((IN, RE), max_inflight=max_inflight, with_registry=registry)
        self.said: list[Instruction] = self._record(self.core.begin())

    def _record(self, out: list[Instruction]) -> list[Instruction]:
        Driver.seen.update(type(i) for i in out)
        return out

    def __call__(self, *events: Event) -> list[Instruction]:
        out: list[Instruction] = []
        for event in events:
            out += self._record(self.core.handle(event))
        self.said += out
        return out

    def started(self) -> Driver:
        self(*(StepDone(s) for s in STEPS))  # type: ignore[arg-type]
        return self

    def running(self, *numbers: int) -> Driver:
        """Started, holding these pairs restored."""
        self.started()
        out = self(Assigned(pair(*numbers)))
        (restore,) = [i for i in out if isinstance(i, Restore)]
        self(Restored(restore.token))
        return self


def only(out: list[Instruction], *kinds: type) -> list[Instruction]:
    return [i for i in out if isinstance(i, kinds)]


# --- scenarios ---


def scenario_start_up_steps_in_order() -> None:
    d = Driver(registry=True)
    assert d.said == [SetStage("starting"), StartStep("listen")]
    steps = ["listen", "reach", "registry", "topics", "dask", "producer", "subscribe"]
    for done, following in zip(steps, [*steps[1:], None], strict=True):
        out = d(StepDone(done))  # type: ignore[arg-type]
        if following is None:
            assert out == [SetStage(RUNNING)]
        else:
            assert out == [StartStep(following)]  # type: ignore[arg-type]
    assert d.core.phase is Phase.RUNNING
    assert StartStep("registry") not in Driver().said


def scenario_stop_during_start_up_exits_0_at_once() -> None:
    d = Driver()
    d(StepDone("listen"))
    assert d(StopRequested("SIGTERM")) == [Exit(None)]
    assert d(StepDone("reach")) == []  # after Exit nothing more is decided


def scenario_a_new_pair_is_paused_restored_then_resumed() -> None:
    d = Driver().started()
    out = d(Assigned(pair(0)))
    assert out == [
        CountRebalance("assigned"),
        SetStage("restoring state of partitions [0]"),
        Restore(1, frozenset({0})),
        Pause(pair(0)),  # inside the callback: nothing is fetched before the state is in
    ]
    out = d(Restored(1))
    assert out == [
        Apply(1, frozenset({0})),
        SetHeld(frozenset({0})),
        SetStage(RUNNING),
        Resume(pair(0)),
    ]


def scenario_revoke_with_batches_in_flight_drains_before_dropping() -> None:
    d = Driver().running(0, 1)
    assert d(Polled(7, pair(0, 1))) == [Submit(7, pair(0, 1))]
    out = d(Revoked(pair(1)))
    assert out == [CountRebalance("revoked"), Drain()]
    assert not only(out, Drop)
    out = d(Drained())
    assert out[:2] == [Drop(frozenset({1})), SetHeld(frozenset({0}))]
    assert d(Polled(8, pair(0))) == [Submit(8, pair(0))]


def scenario_revoke_with_nothing_in_flight_drops_at_once() -> None:
    d = Driver().running(0, 1)
    out = d(Revoked(pair(0)))
    assert out == [CountRebalance("revoked"), Drop(frozenset({0})), SetHeld(frozenset({1}))]


def scenario_lost_partitions_are_given_up_like_revoked_ones() -> None:
    d = Driver().running(0)
    d(Polled(1, pair(0)))
    assert d(Lost(pair(0))) == [CountRebalance("lost"), Drain()]
    assert only(d(Drained()), Drop) == [Drop(frozenset({0}))]


def scenario_a_retriable_failure_aborts_drops_restores_rewinds_and_restarts() -> None:
    d = Driver().running(0)
    d(Polled(1, pair(0)), Polled(2, pair(0)))
    out = d(Failed(KafkaRetriableError("abortable"), True))
    assert out == [
        CountBatch("retried"),
        Abort(),
        Drop(frozenset({0})),
        SetHeld(frozenset()),
        Restore(2, frozenset({0})),
        Pause(pair(0)),
    ]
    assert d.core.inflight == {}  # aborted: nothing of them commits
    assert d(Polled(3, pair(0))) == [Discard(3)]  # read again after the rewind
    out = d(Restored(2))
    assert out == [
        Apply(2, frozenset({0})),
        SetHeld(frozenset({0})),
        Rewind(pair(0)),
        NewPipeline(),
        Resume(pair(0)),
    ]
    assert d.core.phase is Phase.RUNNING


def scenario_a_lone_twin_stays_paused_until_its_twin_comes() -> None:
    d = Driver().started()
    out = d(Assigned(frozenset({(IN, 0)})))
    assert not only(out, Restore)
    assert Note("warning", "holding partitions without their twin paused", ((IN, 0),)) in out
    assert out[-1] == Pause(frozenset({(IN, 0)}))
    # Fetched before the pause took effect: not processed, and read again later.
    assert d(Polled(1, frozenset({(IN, 0)}))) == [Rewind(frozenset({(IN, 0)})), Discard(1)]
    out = d(Assigned(frozenset({(RE, 0)})))
    assert only(out, Restore) == [Restore(1, frozenset({0}))]
    assert only(d(Restored(1)), Resume) == [Resume(pair(0))]


def scenario_losing_a_twin_gives_the_pair_up_and_pauses_the_other() -> None:
    d = Driver().running(0)
    out = d(Revoked(frozenset({(RE, 0)})))
    assert only(out, Drop) == [Drop(frozenset({0}))]
    assert out[-1] == Pause(frozenset({(IN, 0)}))


def scenario_a_stop_during_restore_exits_0_with_nothing_committed() -> None:
    d = Driver().started()
    d(Assigned(pair(0)))
    assert d(StopRequested("SIGTERM")) == [Exit(None)]
    assert d(Restored(1)) == []
    assert not only(d.said, Submit, Apply)


def scenario_a_stop_with_batches_in_flight_finishes_them_then_exits() -> None:
    d = Driver().running(0)
    d(Polled(1, pair(0)))
    assert d(StopRequested("SIGTERM")) == [SetStage("stopping"), Drain(grace=True), Pause(pair(0))]
    assert d(Polled(2, pair(0))) == [Discard(2)]  # a poll already running when it came
    assert d(Committed(1)) == []
    assert d(Drained()) == [Exit(None)]


def scenario_a_stall_at_stop_gives_up_after_the_grace() -> None:
    d = Driver().running(0)
    d(Polled(1, pair(0)))
    d(StopRequested("SIGTERM"))
    assert d(Drained(timed_out=True)) == [Exit(None)]


def scenario_a_fenced_producer_exits_with_its_error() -> None:
    d = Driver().running(0)
    d(Polled(1, pair(0)))
    fenced = FencedError("fenced by a newer instance")
    assert d(Failed(fenced, False)) == [CountBatch("failed"), Exit(fenced)]


def scenario_a_failed_restore_exits_even_when_retriable() -> None:
    d = Driver().started()
    d(Assigned(pair(0)))
    timeout = KafkaRetriableError("restore not done after 60 s")
    assert d(Failed(timeout, True, "restore")) == [CountBatch("failed"), Exit(timeout)]


def scenario_a_rebalance_during_recovery_restores_only_what_is_held() -> None:
    d = Driver().running(0, 1)
    d(Polled(1, pair(0, 1)))
    d(Failed(KafkaRetriableError("abortable"), True))  # restore token 2, pairs {0, 1}
    out = d(Revoked(pair(1)))
    assert not only(out, Drain, Drop)  # already dropped, nothing in flight
    out = d(Restored(2))
    assert out[:4] == [
        Apply(2, frozenset({0})),
        SetHeld(frozenset({0})),
        Rewind(pair(0)),
        NewPipeline(),
    ]


def scenario_at_the_cap_the_shell_waits_without_pausing_and_pauses_once_stalled() -> None:
    d = Driver(max_inflight=2).running(0)
    assert d(Polled(1, pair(0))) == [Submit(1, pair(0))]
    assert not d.core.waiting_for_room
    # Full: no pause (librdkafka would discard what it prefetched); the shell waits.
    assert d(Polled(2, pair(0))) == [Submit(2, pair(0))]
    assert d.core.backpressured and d.core.waiting_for_room and d.core.polling
    assert d(Committed(1)) == []
    assert not d.core.waiting_for_room
    # Full for STALL_S: paused, so the shell polls to serve the group, taking no work.
    d(Polled(3, pair(0)))
    assert d(Stalled()) == [Pause(pair(0))]
    assert not d.core.waiting_for_room and d.core.polling
    assert d(Stalled()) == []
    assert d(Committed(2)) == [Resume(pair(0))]
    # A stall is forgotten once there is room: the next time full waits again.
    d(Polled(4, pair(0)))
    assert d.core.waiting_for_room


def scenario_a_stall_reported_after_room_freed_up_pauses_nothing() -> None:
    d = Driver(max_inflight=1).running(0)
    d(Polled(1, pair(0)))
    d(Committed(1))
    assert d(Stalled()) == []
    assert not d.core.waiting_for_room


def scenario_records_of_a_partition_given_up_mid_poll_are_left_out() -> None:
    d = Driver().running(0, 1)
    d(Revoked(pair(1)))
    assert d(Polled(1, pair(0, 1))) == [Submit(1, pair(0))]


def scenario_a_fenced_member_aborts_drops_everything_and_rejoins_once() -> None:
    d = Driver().running(0, 1)
    d(Polled(1, pair(0, 1)))
    fence = MemberFencedError("Static consumer fenced by other consumer")
    out = d(MemberFenced(fence, at=100.0))
    assert out == [
        Note("warning", f"consumer fenced, joining the group again: {fence}"),
        CountRebalance("lost"),
        Abort(),
        Drop(frozenset({0, 1})),
        SetHeld(frozenset()),
        Rejoin(),
        NewPipeline(),
    ]
    assert d.core.inflight == {} and d.core.held == set()
    assert d(Polled(2, pair(0))) == [Discard(2)]  # the old consumer's, read in the meantime
    # The new consumer is assigned as at start: restored, then fetching.
    out = d(Assigned(pair(0)))
    assert only(out, Restore) == [Restore(2, frozenset({0}))]
    assert only(d(Restored(2)), Resume) == [Resume(pair(0))]
    # Fenced again soon after: another instance uses our id. The instance exits.
    again = MemberFencedError("fenced again")
    assert d(MemberFenced(again, at=100.0 + REJOIN_WINDOW_S - 1)) == [Exit(again)]


def scenario_fences_far_apart_rejoin_each_time() -> None:
    d = Driver().running(0)
    for k in range(3):
        out = d(MemberFenced(MemberFencedError("fenced"), at=k * (REJOIN_WINDOW_S + 1)))
        assert Rejoin() in out and not only(out, Exit)
        (restore,) = [i for i in d(Assigned(pair(0))) if isinstance(i, Restore)]
        d(Restored(restore.token))


def scenario_a_fence_during_recovery_rejoins_and_the_recovery_is_forgotten() -> None:
    d = Driver().running(0)
    d(Polled(1, pair(0)))
    d(Failed(KafkaRetriableError("abortable"), True))  # recovery restore, token 2
    out = d(MemberFenced(MemberFencedError("fenced"), at=5.0))
    assert Rejoin() in out and d.core.phase is Phase.RUNNING
    assert d(Restored(2)) == [Apply(2, frozenset())]  # loads nothing, starts nothing


def scenario_a_fence_while_stopping_is_left_to_the_drain() -> None:
    d = Driver().running(0)
    d(Polled(1, pair(0)))
    d(StopRequested("SIGTERM"))
    assert d(MemberFenced(MemberFencedError("fenced"), at=1.0)) == []
    assert d(Drained()) == [Exit(None)]


SCENARIOS: list[Callable[[], None]] = [
    f for name, f in sorted(globals().items()) if name.startswith("scenario_")
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__[len("scenario_") :])
def test_scenario(scenario: Callable[[], None]) -> None:
    scenario()


def test_the_scenarios_cover_every_instruction_the_core_can_emit() -> None:
    Driver.seen.clear()
    for scenario in SCENARIOS:
        scenario()
    every = set(Instruction.__args__)
    assert every - Driver.seen == set()
