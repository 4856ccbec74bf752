"""The window store: corrections, order independence, staleness, changelog, memory.

Dates are hand-checkable with W = 60: SF(2023) = 2023-01-22, window of 2023 is
[2022-11-23, 2023-03-23]; SF(2024) = 2024-02-10, window of 2024 is [2023-12-12, 2024-04-10].
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import random
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.calendar import date_to_day, sf_day_table
from service.engine.types import EngineParams, PatternResult
from service.state import ApplyOutcome, StateStore
from service.state.changelog import (
    FORMAT_VERSION,
    StateRecordError,
    WindowRecord,
    decode_value,
    encode_window,
    window_key,
)
from service.state.windows import window_table

PARAMS = EngineParams(window_days=60)


def day(iso: str) -> int:
    return date_to_day(dt.date.fromisoformat(iso))


def apply(
    store: StateStore,
    bars: list[tuple[str, str, float]],
    partition: int = -1,
    stamps: list[int] | int = 0,
) -> ApplyOutcome:
    """Apply (symbol, iso date, close) bars in the given arrival order."""
    return store.apply(
        [b[0] for b in bars],
        np.array([day(b[1]) for b in bars], dtype=np.int32),
        np.array([b[2] for b in bars], dtype=np.float64),
        partition,
        np.array(stamps, dtype=np.int64) if isinstance(stamps, list) else stamps,
    )


def held(store: StateStore, symbol: str) -> list[tuple[int, float]]:
    w = store.windows(symbol)
    return list(zip(w.days.tolist(), w.closes.tolist(), strict=True))


def dummy_pattern(symbol: str) -> PatternResult:
    empty = np.empty(0)
    return PatternResult(symbol, "insufficient_history", (), None, empty, empty, empty)


def mark_computed(store: StateStore, *symbols: str) -> None:
    for s in symbols:
        store.set_pattern(s, dummy_pattern(s), b"{}")


def state_of(store: StateStore) -> dict[str, tuple[list[tuple[int, float]], int]]:
    return {s: (held(store, s), store.latest(s)) for s in store.symbols()}


# --- windows ---


def test_window_table_matches_hand_dates() -> None:
    table = window_table(60)
    days = np.array(
        [day(d) for d in ("2022-11-22", "2022-11-23", "2023-03-23", "2023-03-24", "2024-02-10")]
    )
    assert table.year_of(days).tolist() == [0, 2023, 2023, 0, 2024]
    assert table.bounds(2024) == (day("2023-12-12"), day("2024-04-10"))


def test_late_2099_bars_belong_to_no_window() -> None:
    store = StateStore(PARAMS)
    sf_2100 = int(sf_day_table()[-1])
    apply(store, [("A", "2099-12-31", 1.0)])
    assert day("2099-12-31") >= sf_2100 - 60  # inside 2100's window, which holds nothing
    assert store.bars("A") == 0
    assert store.latest("A") == day("2099-12-31")


# --- corrections and order ---


def test_correction_within_a_batch_keeps_the_last_arrival() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("A", "2023-01-11", 2.0), ("A", "2023-01-10", 3.0)])
    assert held(store, "A") == [(day("2023-01-10"), 3.0), (day("2023-01-11"), 2.0)]
    assert store.bars("A") == 2
    assert store.n_bars == 2


def test_correction_across_batches_replaces_the_held_bar() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("A", "2023-01-11", 2.0)])
    out = apply(store, [("A", "2023-01-10", 5.0)])
    assert held(store, "A") == [(day("2023-01-10"), 5.0), (day("2023-01-11"), 2.0)]
    assert out.changed_windows == {("A", 2023)}
    assert store.n_bars == 2


def test_resent_identical_bar_changes_nothing() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("A", "2023-04-01", 1.0)])
    mark_computed(store, "A")
    out = apply(store, [("A", "2023-01-10", 1.0)])
    assert out.touched == ["A"]
    assert out.stale == []
    assert out.changed_windows == set()
    assert out.changed_meta == set()


def test_out_of_order_arrival_gives_the_in_order_state() -> None:
    bars = [
        (s, f"2023-0{m}-1{d}", float(10 * m + d)) for s in "AB" for m in (1, 2) for d in range(8)
    ]
    in_order = StateStore(PARAMS)
    apply(in_order, bars)
    shuffled = list(bars)
    random.Random(3).shuffle(shuffled)
    out_of_order = StateStore(PARAMS)
    for i in range(0, len(shuffled), 5):
        apply(out_of_order, shuffled[i : i + 5])
    assert state_of(out_of_order) == state_of(in_order)


def test_a_later_stamp_wins_whatever_arrives_last() -> None:
    """SPEC 1 event order: the record timestamp first; a correction that travelled through
    another partition (or was forwarded) and arrives late must not undo a newer bar."""
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 2.0), ("A", "2023-01-11", 1.0)], stamps=[200, 100])
    out = apply(store, [("A", "2023-01-10", 9.0)], stamps=[150])  # older than the held one
    assert held(store, "A") == [(day("2023-01-10"), 2.0), (day("2023-01-11"), 1.0)]
    assert out.changed_windows == set()
    apply(store, [("A", "2023-01-10", 3.0), ("A", "2023-01-10", 4.0)], stamps=[300, 250])
    assert held(store, "A")[0] == (day("2023-01-10"), 3.0)  # within a batch too
    assert store.stamps("A").tolist() == [300, 100]


def test_equal_stamps_keep_the_last_arrival() -> None:
    """Ties are read order within a partition: the later arrival wins (files: stamp 0)."""
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("A", "2023-01-10", 2.0)], stamps=[5, 5])
    assert held(store, "A") == [(day("2023-01-10"), 2.0)]
    apply(store, [("A", "2023-01-10", 3.0)], stamps=[5])
    assert held(store, "A") == [(day("2023-01-10"), 3.0)]


def test_a_newer_stamp_on_an_identical_close_is_kept() -> None:
    """Same close, newer stamp: the stamp must move, or a bar stamped in between (with
    another close) would win later although the identical bar superseded it."""
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("A", "2023-04-01", 1.0)], stamps=[10, 10])
    out = apply(store, [("A", "2023-01-10", 1.0)], stamps=[30])
    assert out.changed_windows == {("A", 2023)}  # the changelog must carry the new stamp
    apply(store, [("A", "2023-01-10", 2.0)], stamps=[20])
    assert held(store, "A")[0] == (day("2023-01-10"), 1.0)


def test_stamps_survive_the_changelog() -> None:
    store = StateStore(PARAMS)
    out = apply(store, [("A", "2023-01-10", 1.0), ("A", "2023-01-11", 2.0)], stamps=[70, 60])
    restored = StateStore(PARAMS)
    for key, value in store.changelog_records(out):
        restored.restore(key, value)
    assert restored.stamps("A").tolist() == [70, 60]
    apply(restored, [("A", "2023-01-10", 9.0), ("A", "2023-01-11", 8.0)], stamps=[65, 65])
    assert held(restored, "A") == [(day("2023-01-10"), 1.0), (day("2023-01-11"), 8.0)]


def test_version_1_windows_read_as_stamped_zero() -> None:
    """Migration: a window written before stamps existed loses to any bar read after it."""
    days = np.array([day("2023-01-10"), day("2023-01-11")], dtype=np.int32)
    old = encode_window(2023, 60, days, np.array([1.0, 2.0]), version=1)
    assert old[0] == 1 and len(old) == 8 + 2 * 12
    record = decode_value(old)
    assert isinstance(record, WindowRecord)
    assert record.stamps.tolist() == [0, 0]
    store = StateStore(PARAMS)
    store.restore(window_key("A", 2023), old)
    store.restore(b"A/meta", bytes([1, ord("M"), 0, 0]) + (0).to_bytes(4, "little") * 2)
    apply(store, [("A", "2023-01-10", 5.0)], stamps=[1])
    assert held(store, "A") == [(day("2023-01-10"), 5.0), (day("2023-01-11"), 2.0)]


def test_bars_outside_windows_only_move_latest() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0)])
    mark_computed(store, "A")
    out = apply(
        store, [("A", "2023-03-20", 9.0), ("A", "2023-07-01", 2.0), ("B", "2023-07-02", 3.0)]
    )
    assert held(store, "A") == [(day("2023-01-10"), 1.0), (day("2023-03-20"), 9.0)]
    assert store.latest("A") == day("2023-07-01")
    assert store.bars("B") == 0
    assert store.latest("B") == day("2023-07-02")
    assert out.touched == ["A", "B"]
    assert out.changed_windows == {("A", 2023)}
    assert out.changed_meta == {"A", "B"}


def test_stored_arrays_are_read_only_and_snapshots_survive_later_batches() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0)])
    snap = store.windows("A")
    with pytest.raises(ValueError):
        snap.closes[0] = 2.0
    apply(store, [("A", "2023-01-10", 7.0), ("A", "2023-01-11", 8.0)])  # merge
    apply(store, [("A", "2023-01-12", 9.0)])  # append
    assert snap.days.tolist() == [day("2023-01-10")]
    assert snap.closes.tolist() == [1.0]
    assert snap.latest == day("2023-01-10")


@settings(max_examples=40, deadline=None)
# at most 72 days from 2023-01-02: all inside the 2023 window (to 2023-03-23), so all held
@given(st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=12))
def test_appends_into_spare_room_never_change_an_earlier_snapshot(
    steps: list[tuple[int, bool]],
) -> None:
    """Appends write past the end of the held columns (a growth buffer), corrections build
    new ones: every snapshot keeps exactly the bars it was taken with, and `nbytes`
    counts the spare room."""
    store = StateStore(PARAMS)
    first = day("2023-01-02")
    held: dict[int, float] = {}
    snaps = []
    for n, (count, correct) in enumerate(steps):
        top = max(held, default=first - 1)
        days = [top - 1] if correct and held else []  # re-sent older day: the merge path
        days += [top + 1 + i for i in range(count)]
        closes = [float(n * 10 + i + 1) for i in range(len(days))]
        store.apply(["A"] * len(days), np.array(days, np.int32), np.array(closes))
        held.update(zip(days, closes, strict=True))
        snaps.append((store.windows("A"), sorted(held.items())))
    for snap, expected in snaps:
        assert list(zip(snap.days.tolist(), snap.closes.tolist(), strict=True)) == expected
    per_bar = 4 + 8 + 8
    assert store.nbytes >= store.n_bars * per_bar


def test_partition_is_taken_from_the_symbols_last_bar() -> None:
    store = StateStore(PARAMS)
    store.apply(
        ["A", "B", "A"],
        np.array([day("2023-01-10"), day("2023-01-10"), day("2023-01-11")], dtype=np.int32),
        np.ones(3),
        np.array([1, 2, 3], dtype=np.int32),
    )
    assert (store.partition("A"), store.partition("B")) == (3, 2)
    assert store.symbols_of_partition(2) == ["B"]


# --- staleness ---


def test_first_time_is_stale() -> None:
    store = StateStore(PARAMS)
    out = apply(store, [("A", "2024-01-10", 1.0), ("B", "2023-07-01", 1.0)])
    assert out.stale == ["A", "B"]


def test_bar_in_open_window_is_not_stale() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2024-01-10", 1.0)])
    mark_computed(store, "A")
    out = apply(store, [("A", "2024-01-11", 2.0), ("A", "2024-04-10", 2.0)])  # still open
    assert out.stale == []
    assert out.changed_windows == {("A", 2024)}


def test_bar_in_closed_window_is_stale() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("A", "2023-07-01", 1.0), ("B", "2023-07-01", 1.0)])
    mark_computed(store, "A", "B")
    out = apply(store, [("A", "2023-01-11", 2.0), ("B", "2023-08-01", 2.0)])
    assert out.stale == ["A"]


def test_late_bar_closing_its_own_window_in_one_batch_is_stale() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-12-01", 1.0)])
    mark_computed(store, "A")
    out = apply(store, [("A", "2024-01-10", 2.0), ("A", "2024-04-11", 2.0)])  # closes 2024
    assert out.stale == ["A"]


def test_crossing_sf_plus_w_is_stale() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-03-23", 1.0)])  # last day of the 2023 window: still open
    mark_computed(store, "A")
    assert apply(store, [("A", "2023-03-23", 1.0)]).stale == []
    out = apply(store, [("A", "2023-03-24", 1.0)])  # outside every window, closes 2023
    assert out.stale == ["A"]
    assert out.changed_windows == set()
    mark_computed(store, "A")
    assert apply(store, [("A", "2023-05-01", 1.0)]).stale == []


def test_restore_and_partition_drop_forget_the_cached_pattern() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0)], partition=4)
    mark_computed(store, "A")
    assert store.pattern("A") is not None
    assert store.nbytes > store.n_bars * 12 + 600
    for key, value in store.changelog_records(apply(store, [("A", "2023-01-11", 1.0)], 4)):
        store.restore(key, value)
    assert store.pattern("A") is None
    assert apply(store, [("A", "2023-01-12", 1.0)], 4).stale == ["A"]


# --- changelog ---


def _build_with_changelog(
    batches: list[list[tuple[str, str, float]]],
) -> tuple[StateStore, list[tuple[bytes, bytes]]]:
    store = StateStore(PARAMS)
    records: list[tuple[bytes, bytes]] = []
    for i, batch in enumerate(batches):
        out = apply(store, batch, partition=i % 3)
        records += store.changelog_records(out)
    return store, records


def _history(symbols: str, start: str, n_days: int, seed: int) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    first = dt.date.fromisoformat(start)
    return [
        (s, (first + dt.timedelta(days=i)).isoformat(), round(rng.uniform(1, 100), 2))
        for i in range(n_days)
        for s in symbols
    ]


def _interleave_keeping_key_order(
    records: list[tuple[bytes, bytes]], rng: random.Random
) -> list[tuple[bytes, bytes]]:
    """Any order a topic could deliver: keys shuffled among each other, each key in order.

    (Kafka orders records per partition, and a key always maps to one partition.)
    """
    slots = [k for k, _ in records]
    rng.shuffle(slots)
    queues: dict[bytes, list[bytes]] = {}
    for k, v in records:
        queues.setdefault(k, []).append(v)
    return [(k, queues[k].pop(0)) for k in slots]


def test_changelog_round_trip_in_shuffled_order() -> None:
    bars = _history("ABC", "2020-06-01", 3 * 365, seed=1)
    corrections = [(s, d, c + 1) for s, d, c in random.Random(2).sample(bars, 200)]
    stream = bars + corrections
    batches = [stream[i : i + 97] for i in range(0, len(stream), 97)]
    store, records = _build_with_changelog(batches)
    restored = StateStore(PARAMS)
    for key, value in _interleave_keeping_key_order(records, random.Random(5)):
        restored.restore(key, value)
    # compaction keeps only the last value per key; replaying everything must agree too
    compacted = StateStore(PARAMS)
    for key, value in dict(records).items():
        compacted.restore(key, value)
    assert state_of(restored) == state_of(store)
    assert state_of(compacted) == state_of(store)
    assert restored.n_bars == store.n_bars
    for s in "ABC":
        assert restored.partition(s) == store.partition(s)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), tombstone=st.booleans())
def test_restoring_many_at_once_equals_record_by_record(seed: int, tombstone: bool) -> None:
    """`restore_many` (what a restart uses) against `restore` one record at a time, on the
    changelog the store itself wrote, every version of every key, any key order, with
    corrections and (sometimes) a symbol dropped by tombstones."""
    rng = random.Random(seed)
    bars = _history("ABCD", "2021-11-01", rng.randint(30, 2 * 365), seed=seed)
    corrections = [(s, d, c + 1) for s, d, c in rng.sample(bars, min(40, len(bars)))]
    stream = bars + corrections
    size = rng.randint(20, 200)
    store, records = _build_with_changelog(
        [stream[i : i + size] for i in range(0, len(stream), size)]
    )
    delivered = _interleave_keeping_key_order(records, rng)
    if tombstone:
        delivered += [(k, None) for k, _ in records if k.startswith(b"B/")]  # type: ignore[misc]
    one_by_one, at_once = StateStore(PARAMS), StateStore(PARAMS)
    for key, value in delivered:
        one_by_one.restore(key, value)
    assert at_once.restore_many(delivered) == len(delivered)
    assert state_of(at_once) == state_of(one_by_one)
    assert at_once.n_bars == one_by_one.n_bars and at_once.nbytes == one_by_one.nbytes
    if not tombstone:
        assert state_of(at_once) == state_of(store)
    assert sorted(at_once.symbols()) == sorted(one_by_one.symbols())
    for s in at_once.symbols():
        assert at_once.partition(s) == one_by_one.partition(s)
        assert at_once.latest(s) == one_by_one.latest(s)


def test_changelog_writes_only_what_changed() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("A", "2024-01-10", 1.0), ("B", "2024-01-10", 1.0)])
    out = apply(store, [("A", "2023-01-10", 2.0)])
    assert [k for k, _ in store.changelog_records(out)] == [b"A/2023"]
    out = apply(store, [("B", "2024-06-01", 2.0)])
    assert [k for k, _ in store.changelog_records(out)] == [b"B/meta"]


def test_window_record_is_small_and_versioned() -> None:
    store = StateStore(PARAMS)
    bars = _history("A", "2022-11-23", 121, seed=3)  # exactly the 2023 window
    out = apply(store, bars)
    ((_, value),) = [r for r in store.changelog_records(out) if r[0] == b"A/2023"]
    assert store.bars("A") == 121
    assert len(value) == 8 + 121 * 20  # 2,428 bytes: day, close and event stamp per bar
    assert value[0] == FORMAT_VERSION == 2
    record = decode_value(value)
    assert isinstance(record, WindowRecord)
    assert record.days.tolist() == store.windows("A").days.tolist()
    with pytest.raises(StateRecordError):
        decode_value(bytes([FORMAT_VERSION + 1]) + value[1:])
    with pytest.raises(StateRecordError):
        decode_value(value[:-1])


def test_restore_under_another_window_size_keeps_only_bars_inside() -> None:
    days = np.array([day("2022-11-23"), day("2023-01-22"), day("2023-03-23")], dtype=np.int32)
    value = encode_window(2023, 60, days, np.array([1.0, 2.0, 3.0]))
    narrow = StateStore(EngineParams(window_days=30))
    narrow.restore(window_key("A", 2023), value)
    assert held(narrow, "A") == [(day("2023-01-22"), 2.0)]
    assert narrow.latest("A") == day("2023-01-22")


def test_tombstones_remove_what_their_key_held() -> None:
    store = StateStore(PARAMS)
    out = apply(
        store, [("A", "2023-01-10", 1.0), ("A", "2024-01-10", 1.0), ("A", "2024-07-01", 1.0)]
    )
    for key, value in store.changelog_records(out):
        store.restore(key, value)
    store.restore(b"A/2024", None)
    assert held(store, "A") == [(day("2023-01-10"), 1.0)]
    assert store.latest("A") == day("2024-07-01")
    assert store.n_bars == 1
    store.restore(b"A/meta", None)  # the meta key is the symbol's root
    assert "A" not in store
    assert store.n_bars == 0
    store.restore(b"A/2023", value=None)
    store.restore(b"B/2023", None)  # tombstone for something never held: nothing happens
    assert len(store) == 0


def test_drop_partition() -> None:
    store = StateStore(PARAMS)
    apply(store, [("A", "2023-01-10", 1.0), ("B", "2023-01-10", 1.0)], partition=1)
    apply(store, [("C", "2023-01-10", 1.0)], partition=2)
    mark_computed(store, "A")
    assert store.partition_of_record(b"A/2023") == 1
    assert store.drop_partition(1) == 2
    assert store.symbols() == ["C"]
    assert store.n_bars == 1
    assert store.pattern("A") is None
    store.set_pattern("A", dummy_pattern("A"), b"{}")  # a late result for a revoked symbol
    assert "A" not in store
    assert store.drop_partition(1) == 0
    files = StateStore(PARAMS)
    apply(files, [("A", "2023-01-10", 1.0)])
    assert files.partition_of_record(b"A/meta") is None


# --- property: batching and arrival order never matter ---

_DAYS = st.integers(day("2022-11-01"), day("2023-05-01"))  # window of 2023 plus outside days
_BAR = st.tuples(st.sampled_from("ABC"), _DAYS, st.sampled_from([1.0, 2.0, 3.5]))


@settings(max_examples=150, deadline=None)
@given(
    arrivals=st.lists(_BAR, min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_any_batching_and_order_gives_the_same_state(
    arrivals: list[tuple[str, int, float]], cuts: list[int], seed: int
) -> None:
    final = {(s, d): c for s, d, c in arrivals}  # last arrival of each (symbol, day) wins
    # the same bar set in another order: each key's superseded values first, winner last
    reordered = list(arrivals)
    random.Random(seed).shuffle(reordered)
    reordered = [b for b in reordered if final[b[:2]] != b[2]] + [
        (s, d, c) for (s, d), c in final.items()
    ]
    random.Random(seed + 1).shuffle(reordered[len(reordered) - len(final) :])

    def build(bars: list[tuple[str, int, float]]) -> tuple[StateStore, list[tuple[bytes, bytes]]]:
        store = StateStore(PARAMS)
        records: list[tuple[bytes, bytes]] = []
        bounds = [0, *sorted(c for c in cuts if c < len(bars)), len(bars)]
        for a, b in itertools.pairwise(bounds):
            chunk = bars[a:b]
            out = store.apply(
                [x[0] for x in chunk],
                np.array([x[1] for x in chunk], dtype=np.int32),
                np.array([x[2] for x in chunk]),
            )
            assert out.touched == list(dict.fromkeys(x[0] for x in chunk))
            records += store.changelog_records(out)
        return store, records

    table = window_table(60)
    expected = {
        s: (
            sorted(
                (d, c)
                for (s2, d), c in final.items()
                if s2 == s and table.year_of(np.array([d]))[0]
            ),
            max(d for s2, d, _ in arrivals if s2 == s),
        )
        for s in {b[0] for b in arrivals}
    }
    batched, records = build(arrivals)
    assert state_of(batched) == expected
    assert state_of(build(reordered)[0]) == expected
    restored = StateStore(PARAMS)
    for key, value in records:
        restored.restore(key, value)
    assert state_of(restored) == expected


_STAMPED = st.tuples(st.sampled_from("AB"), _DAYS, st.sampled_from([1.0, 2.0, 3.5]))


@settings(max_examples=150, deadline=None)
@given(
    bars=st.lists(_STAMPED, min_size=1, max_size=50),
    cuts=st.lists(st.integers(0, 50), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_with_distinct_stamps_any_arrival_order_gives_the_latest_stamped_bars(
    bars: list[tuple[str, int, float]], cuts: list[int], seed: int
) -> None:
    """Bar i is stamped i (distinct, as `sfa produce` stamps): whatever the arrival order
    and batching (bars spread over partitions and forwarded), and through a restore in
    the middle, the held bars are those of the greatest stamp per (symbol, day)."""
    stamped = [(s, d, c, i) for i, (s, d, c) in enumerate(bars)]
    winner = {(s, d): c for s, d, c, _ in stamped}
    arrivals = list(stamped)
    random.Random(seed).shuffle(arrivals)
    bounds = [0, *sorted(c for c in cuts if c < len(arrivals)), len(arrivals)]
    store = StateStore(PARAMS)
    records: list[tuple[bytes, bytes]] = []
    for n, (a, b) in enumerate(itertools.pairwise(bounds)):
        chunk = arrivals[a:b]
        out = store.apply(
            [x[0] for x in chunk],
            np.array([x[1] for x in chunk], dtype=np.int32),
            np.array([x[2] for x in chunk]),
            -1,
            np.array([x[3] for x in chunk], dtype=np.int64),
        )
        records += store.changelog_records(out)
        if n == 1:  # a restart: the rest goes on from the restored state
            store = StateStore(PARAMS)
            for key, value in records:
                store.restore(key, value)
    table = window_table(60)
    for s in {x[0] for x in bars}:
        want = sorted(
            (d, c) for (s2, d), c in winner.items() if s2 == s and table.year_of(np.array([d]))[0]
        )
        assert held(store, s) == want


# --- memory and speed ---


def _weekdays(first: str, last: str) -> np.ndarray:
    all_days = np.arange(day(first), day(last) + 1, dtype=np.int32)
    return all_days[(all_days + 3) % 7 < 5]  # day 0 (1970-01-01) was a Thursday


def test_memory_per_held_bar_at_a_million_bars() -> None:
    n_symbols = 400
    names = np.array([f"S{i:04d}.SH" for i in range(n_symbols)], dtype=object)
    rng = np.random.default_rng(0)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = StateStore(PARAMS)
        for year in range(1994, 2024):  # one batch per year: every symbol, every weekday
            days = _weekdays(f"{year}-01-01", f"{year}-12-31")
            store.apply(
                np.tile(names, len(days)).tolist(),
                np.repeat(days, n_symbols),
                rng.uniform(1, 100, len(days) * n_symbols),
            )
        del days
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    per_bar = used / store.n_bars
    print(
        f"\nstate: {store.n_symbols} symbols, {store.n_bars:,} held bars, {used:,} bytes traced "
        f"-> {per_bar:.2f} bytes/bar; nbytes estimate {store.nbytes:,}"
    )
    assert store.n_bars >= 1_000_000
    assert per_bar <= 32
    assert abs(store.nbytes - used) / used < 0.05  # the metric tells the truth


def _timed_apply(store: StateStore, batch: tuple[list[str], np.ndarray, np.ndarray]) -> float:
    t0 = time.perf_counter()
    store.apply(*batch)
    return time.perf_counter() - t0


def test_apply_speed_streaming_appends_and_full_history() -> None:
    n_symbols, per_batch = 300, 5000
    names = [f"S{i:04d}.SH" for i in range(n_symbols)]
    days = _weekdays("2014-01-01", "2023-12-31")
    rng = np.random.default_rng(1)
    # day-major stream: one bar per symbol per day, cut into 5,000-bar batches
    sym_stream = names * len(days)
    day_stream = np.repeat(days, n_symbols)
    close_stream = rng.uniform(1, 100, len(day_stream))
    store = StateStore(PARAMS)
    timings = []
    for a in range(0, len(day_stream), per_batch):
        b = a + per_batch
        timings.append(_timed_apply(store, (sym_stream[a:b], day_stream[a:b], close_stream[a:b])))
    steady = sorted(timings[len(timings) // 2 :])
    median_ms = 1000 * steady[len(steady) // 2]
    # original-demo style: one bar per calendar day for 6 years, whole history in one batch
    cal = np.arange(day("2018-01-01"), day("2023-12-31") + 1, dtype=np.int32)
    history = (
        [s for s in names for _ in cal],
        np.tile(cal, n_symbols),
        rng.uniform(1, 9, len(cal) * n_symbols),
    )
    full_ms = 1000 * _timed_apply(StateStore(PARAMS), history)
    print(
        f"\napply: 5,000-bar batch over {n_symbols} symbols (appends, {store.n_bars:,} held): "
        f"median {median_ms:.2f} ms over the second half of {len(timings)} batches; "
        f"full 6-year calendar history of {len(history[1]):,} bars in one batch: {full_ms:.1f} ms"
    )
    assert median_ms < 25  # generous: a few ms expected, CI machines vary
    assert full_ms < 2000
