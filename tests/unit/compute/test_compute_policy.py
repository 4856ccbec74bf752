"""The compute decisions (service.compute.policy), driven by a fake clock: no cluster."""

from __future__ import annotations

import pytest

from service.compute.policy import ComputePolicy, EmptyClusterWatch, Step
from tests.unit.fakes import FakeClock


def _never_asked() -> bool:
    raise AssertionError("reachable() asked before the last allowed loss")


def _policy(clock: FakeClock, **kwargs: object) -> ComputePolicy:
    return ComputePolicy(clock=clock, **kwargs)  # type: ignore[arg-type]


def test_a_chunk_goes_to_the_cluster_only_with_a_client_and_no_fallback() -> None:
    policy = _policy(FakeClock())
    assert policy.first_step(has_client=True) is Step.CLUSTER
    assert policy.first_step(has_client=False) is Step.LOCAL
    policy.fall_back("gone")
    assert policy.first_step(has_client=True) is Step.LOCAL


def test_a_lost_chunk_is_retried_until_the_limit_then_computed_here() -> None:
    policy = _policy(FakeClock(), attempts=3)
    assert policy.after_loss(1, True, _never_asked, "KilledWorker") is Step.CLUSTER
    assert policy.after_loss(2, True, _never_asked, "KilledWorker") is Step.CLUSTER
    # the third loss is the last one allowed: no fourth try, whatever the cluster says
    assert policy.after_loss(3, True, lambda: True, "KilledWorker") is Step.LOCAL
    assert policy.after_loss(4, True, lambda: True, "KilledWorker") is Step.LOCAL
    assert not policy.fallback_active  # the cluster still had workers


def test_default_is_one_rescatter() -> None:
    policy = _policy(FakeClock())
    assert policy.after_loss(1, True, _never_asked, "x") is Step.CLUSTER
    assert policy.after_loss(2, True, lambda: True, "x") is Step.LOCAL


def test_the_last_loss_on_an_unreachable_cluster_starts_the_fallback() -> None:
    policy = _policy(FakeClock())
    assert policy.after_loss(2, True, lambda: False, "CommClosedError") is Step.LOCAL
    assert policy.fallback_active
    assert policy.fallback_reason == "cluster lost: CommClosedError"


def test_a_fallback_started_by_another_chunk_stops_the_retries() -> None:
    policy = _policy(FakeClock())
    policy.fall_back("cluster lost: elsewhere")
    assert policy.after_loss(1, True, lambda: False, "x") is Step.LOCAL
    assert policy.after_loss(1, False, lambda: True, "x") is Step.LOCAL  # client gone


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError):
        ComputePolicy(attempts=0)


def test_fall_back_reports_only_the_start() -> None:
    policy = _policy(FakeClock())
    assert policy.fall_back("first") is True
    assert policy.fall_back("second") is False
    assert policy.fallback_reason == "second"


def test_probes_are_due_every_interval_one_at_a_time() -> None:
    clock = FakeClock()
    policy = _policy(clock, reconnect_seconds=30.0)
    assert not policy.probe_due()  # no fallback, nothing to probe
    clock.advance(100)
    policy.fall_back("gone")  # the interval counts from the start of the fallback
    clock.advance(29.9)
    assert not policy.probe_due()
    clock.advance(0.2)
    assert policy.probe_due()
    policy.probe_started()
    clock.advance(60)
    assert not policy.probe_due()  # one probe at a time
    assert policy.probe_finished(workers=0) is False
    assert policy.fallback_active
    assert policy.probe_due()  # 60 s since the last probe started
    policy.probe_started()
    assert not policy.probe_due()
    clock.advance(30)
    assert policy.probe_finished(workers=2) is True
    assert not policy.fallback_active and policy.fallback_reason is None
    assert not policy.probe_due()


def test_an_interval_of_zero_never_probes() -> None:
    clock = FakeClock()
    policy = _policy(clock, reconnect_seconds=0.0)
    policy.fall_back("gone")
    clock.advance(1e6)
    assert not policy.probe_due()


def test_a_fallback_from_the_start_probes_after_one_interval() -> None:
    clock = FakeClock()
    policy = _policy(clock, reconnect_seconds=5.0, fallback_reason="cannot reach scheduler")
    assert policy.fallback_active and policy.first_step(True) is Step.LOCAL
    clock.advance(4.9)
    assert not policy.probe_due()
    clock.advance(0.2)
    assert policy.probe_due()


def test_an_empty_cluster_is_given_up_after_the_timeout_not_before() -> None:
    clock = FakeClock()
    watch = EmptyClusterWatch(10.0, clock=clock)
    assert not watch.give_up(2)
    assert not watch.give_up(0)  # empty from now
    clock.advance(10.0)
    assert not watch.give_up(0)  # exactly the timeout: not yet
    clock.advance(0.5)
    assert watch.give_up(0)


def test_a_worker_coming_back_resets_the_empty_clock() -> None:
    clock = FakeClock()
    watch = EmptyClusterWatch(10.0, clock=clock)
    watch.give_up(0)
    clock.advance(9)
    assert not watch.give_up(1)
    clock.advance(2)
    assert not watch.give_up(0)
    clock.advance(9)
    assert not watch.give_up(0)
    clock.advance(2)
    assert watch.give_up(0)
