"""The window store: per symbol, only the bars inside festival windows (SPEC 1, 3, 7).

Bars outside every window only move latest(s). Held bars live in three compact columns per
symbol: int32 day numbers, strictly increasing, float64 closes and int64 event stamps.
Three arrays and a few scalars per symbol keep a million held bars near 20 bytes each;
per-year Python objects would cost more than the bars themselves.

Held bars are never mutated once stored: a correction builds new arrays, an append
writes past the end of every existing view (`_append`), and stored columns are
read-only. Snapshots handed to Dask workers therefore need no copy and stay valid
while later batches are applied.

Corrections and order independence (SPEC 1): of several bars for the same (symbol, day),
the one latest in event order is held. Each bar comes with an event stamp (the Kafka
record timestamp in ms; 0 for files, where arrival is line order) and event order is
(stamp, then arrival): a bar replaces the held one unless its stamp is older. So a
later-stamped correction wins whichever partition or batch it travelled through, and
a forwarded bar, arriving late, cannot undo a newer one. Arrival breaks ties, which is
read order within a partition (what SPEC 1 asks) because an instance reads a partition
in order and, after a rewind, restores the state committed before what it reads again.
The stamp is kept per held bar (8 bytes) because the bar it must be compared with may
arrive any time later, through another partition or after a restart.

Staleness: a pattern depends only on closed windows (SPEC 3), so a batch whose bars all
land in open windows reuses the cached pattern; only position and signal, which are
cheap, are recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from service.calendar import FIRST_YEAR
from service.engine.types import EngineParams, PatternResult, SymbolWindows
from service.state.batch import factorize, group_batch
from service.state.changelog import (
    MetaRecord,
    StateRecordError,
    WindowRecord,
    decode_key,
    decode_value,
    encode_meta,
    encode_window,
    meta_key,
    window_key,
)
from service.state.windows import frozen, window_table

__all__ = ["ApplyOutcome", "StateStore"]

# Python-side cost of one symbol besides its array data: the slot object, two ndarray
# headers (with dims/strides blocks), the dict entry, the key string, boxed ints.
# Checked against tracemalloc in tests/unit/state/test_state.py.
_SYMBOL_OVERHEAD = 560
_PATTERN_OVERHEAD = 600  # PatternResult + Pattern dataclasses and three ndarray headers
_PAIRS_OVERHEAD = 580  # PairCache dataclass and four ndarray headers (tracemalloc: ~584)

_NO_DAY = int(np.iinfo(np.int32).min)  # latest of a symbol not seen yet
_NO_DAYS = frozen(np.empty(0, dtype=np.int32))
_NO_CLOSES = frozen(np.empty(0, dtype=np.float64))
_NO_STAMPS = frozen(np.empty(0, dtype=np.int64))


class _Entry:
    """One symbol: three read-only columns and a few scalars (no per-year objects)."""

    __slots__ = ("closes", "days", "encoded", "latest", "partition", "pattern", "stamps")

    def __init__(self, latest: int, partition: int) -> None:
        self.days: np.ndarray = _NO_DAYS
        self.closes: np.ndarray = _NO_CLOSES
        self.stamps: np.ndarray = _NO_STAMPS
        self.latest = latest
        self.partition = partition
        self.pattern: PatternResult | None = None
        self.encoded: bytes | None = None


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """What one `apply` did, for the pipeline (what to emit and recompute) and the changelog.

    - `touched`: symbols with at least one valid bar in the batch, first appearance first;
      SPEC 6 emits exactly one result for each.
    - `stale`: the touched symbols whose pattern must be recomputed: no cached pattern
      yet, a closed window's bars changed, or a window closed in this batch.
    - `changed_windows`: (symbol, window year) whose held bars changed.
    - `changed_meta`: symbols whose latest or partition changed (or that are new).
    """

    touched: list[str]
    stale: list[str]
    changed_windows: set[tuple[str, int]]
    changed_meta: set[str]


class StateStore:
    """All symbols' window bars, latest(s), partition and cached pattern.

    Not thread-safe: one owner (the pipeline's event loop) applies batches; snapshots
    from `windows()` may travel anywhere because stored arrays never change.
    """

    def __init__(self, params: EngineParams) -> None:
        self.params = params
        self._win = window_table(params.window_days)
        self._entries: dict[str, _Entry] = {}
        self._n_bars = 0
        self._slack_bars = 0  # room for appends: allocated, not yet held (see `_append`)
        self._pattern_bytes = 0

    # --- reading ---

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def symbols(self) -> list[str]:
        """A copy, so callers may iterate while batches are applied."""
        return list(self._entries)

    def windows(self, symbol: str) -> SymbolWindows:
        """Snapshot for the engine; free, because stored arrays are never mutated.

        The cached pattern's pair cache goes along as `prior`, so the engine recomputes only
        the year pairs whose rows changed. Whatever dropped or outdated the pattern
        (a correction, a restore) costs at most a full recomputation: the engine checks
        every cached row against its fingerprint, never trusts the store.
        """
        e = self._entries[symbol]
        prior = None if e.pattern is None else e.pattern.pairs
        return SymbolWindows(symbol, e.days, e.closes, e.latest, prior)

    def stamps(self, symbol: str) -> np.ndarray:
        """The event stamp of each held bar (parallel to `windows(symbol).days`)."""
        return self._entries[symbol].stamps

    def heads(self, symbols: Sequence[str]) -> tuple[list[int], list[int]]:
        """latest(s) and bars held of each symbol: one pass for a batch's results."""
        entries = list(map(self._entries.__getitem__, symbols))
        return [e.latest for e in entries], [len(e.days) for e in entries]

    def latest(self, symbol: str) -> int:
        return self._entries[symbol].latest

    def bars(self, symbol: str) -> int:
        """SPEC 6 `bars_in_state`: bars held inside windows, open or closed."""
        return len(self._entries[symbol].days)

    def partition(self, symbol: str) -> int:
        return self._entries[symbol].partition

    def pattern(self, symbol: str) -> tuple[PatternResult, bytes] | None:
        """The cached pattern and its encoded JSON part; None if none (or symbol unknown)."""
        e = self._entries.get(symbol)
        if e is None or e.pattern is None or e.encoded is None:
            return None
        return e.pattern, e.encoded

    def set_pattern(self, symbol: str, result: PatternResult, encoded: bytes) -> None:
        """Cache a computed pattern. Ignored for a symbol no longer held (partition revoked)."""
        e = self._entries.get(symbol)
        if e is None:
            return
        self._pattern_bytes -= _pattern_nbytes(e.pattern, e.encoded)
        e.pattern, e.encoded = result, encoded
        self._pattern_bytes += _pattern_nbytes(result, encoded)

    def symbols_of_partition(self, partition: int) -> list[str]:
        return [s for s, e in self._entries.items() if e.partition == partition]

    # --- metrics (read at scrape time) ---

    @property
    def n_symbols(self) -> int:
        return len(self._entries)

    @property
    def n_bars(self) -> int:
        return self._n_bars

    @property
    def nbytes(self) -> int:
        """Array bytes plus an estimate of Python overhead per symbol and cached patterns."""
        per_bar = _NO_DAYS.itemsize + _NO_CLOSES.itemsize + _NO_STAMPS.itemsize
        allocated = (self._n_bars + self._slack_bars) * per_bar
        return allocated + len(self._entries) * _SYMBOL_OVERHEAD + self._pattern_bytes

    # --- writing ---

    def apply(
        self,
        symbols: Sequence[str],
        days: np.ndarray,
        closes: np.ndarray,
        partition: int | np.ndarray = -1,
        stamps: int | np.ndarray = 0,
    ) -> ApplyOutcome:
        """Apply valid bars given in ARRIVAL order; for one (symbol, day) the latest in
        event order wins (greatest stamp, then last arrival)."""
        if len(symbols) == 0:
            return ApplyOutcome([], [], set(), set())
        codes, uniques = factorize(symbols)
        return self.apply_codes(codes, uniques, days, closes, partition, stamps)

    def apply_codes(
        self,
        codes: np.ndarray,
        uniques: list[str],
        days: np.ndarray,
        closes: np.ndarray,
        partition: int | np.ndarray = -1,
        stamps: int | np.ndarray = 0,
    ) -> ApplyOutcome:
        """`apply` of factorized symbols (bar i is `uniques[codes[i]]`), as decoded;
        `stamps` is each bar's event stamp (one int: all bars alike, as in files).

        The batch is grouped by symbol once; per symbol, new bars past the last held day
        are appended, anything else goes through a stable merge. Stale and changelog
        bookkeeping is vectorised over the batch.
        """
        if len(codes) == 0:
            return ApplyOutcome([], [], set(), set())
        gb = group_batch(codes, uniques, days, closes, partition, self._win, stamps)
        names, k = gb.names, len(gb.names)
        entries = self._entries
        old_latest = np.empty(k, dtype=np.int64)
        new_latest = np.empty(k, dtype=np.int64)
        no_pattern = np.zeros(k, dtype=bool)
        appended = np.zeros(k, dtype=bool)  # every window year of its new bars changed
        merged_groups: list[int] = []  # general path: explicit changed years below
        merged_years: list[int] = []
        changed_meta: set[str] = set()
        n_bars_delta = slack_delta = 0
        for g in range(k):
            sym = names[g]
            e = entries.get(sym)
            if e is None:
                e = entries[sym] = _Entry(gb.latest[g], gb.partitions[g])
                old_latest[g] = _NO_DAY
                changed_meta.add(sym)
            else:
                old_latest[g] = e.latest
                if gb.latest[g] > e.latest or gb.partitions[g] != e.partition:
                    e.latest = max(e.latest, gb.latest[g])
                    e.partition = gb.partitions[g]
                    changed_meta.add(sym)
            new_latest[g] = e.latest
            no_pattern[g] = e.pattern is None
            a, b = gb.lo[g], gb.hi[g]
            if a == b:
                continue
            held = len(e.days)
            if gb.rising[g] and (held == 0 or gb.days[a] > e.days[-1]):
                # Days past every held one: nothing to correct, so stamps need no compare.
                slack_delta += _append(e, gb.days[a:b], gb.closes[a:b], gb.stamps[a:b])
                n_bars_delta += b - a
                appended[g] = True
                continue
            slack_delta -= _slack(e)
            years = self._merge(e, gb.days[a:b], gb.closes[a:b], gb.stamps[a:b], gb.years[a:b])
            slack_delta += _slack(e)
            n_bars_delta += len(e.days) - held
            merged_groups.extend([g] * len(years))
            merged_years.extend(years)
        self._n_bars += n_bars_delta
        self._slack_bars += slack_delta

        # (group, year) pairs whose bars changed: all years of appended groups' bars.
        pair_key = gb.codes.astype(np.int64) * 256 + (gb.years - FIRST_YEAR)
        pair_key = np.unique(pair_key[appended[gb.codes]])
        ch_groups = np.concatenate((pair_key // 256, np.asarray(merged_groups, dtype=np.int64)))
        ch_years = np.concatenate(
            (pair_key % 256 + FIRST_YEAR, np.asarray(merged_years, dtype=np.int64))
        )
        # Stale: no pattern, a changed window that is closed now, or a window closed now.
        win_end = self._win.ends[ch_years - FIRST_YEAR]
        closed_changed = np.zeros(k, dtype=bool)
        closed_changed[ch_groups[win_end < new_latest[ch_groups]]] = True
        crossed = self._win.n_closed(old_latest) != self._win.n_closed(new_latest)
        stale_mask = no_pattern | closed_changed | crossed
        return ApplyOutcome(
            touched=names,
            stale=[names[g] for g in np.flatnonzero(stale_mask).tolist()],
            changed_windows={
                (names[g], y) for g, y in zip(ch_groups.tolist(), ch_years.tolist(), strict=True)
            },
            changed_meta=changed_meta,
        )

    @staticmethod
    def _merge(
        e: _Entry, days: np.ndarray, closes: np.ndarray, stamps: np.ndarray, years: np.ndarray
    ) -> list[int]:
        """General path: old + new, stable sort by (day, stamp), last occurrence wins.

        Held bars come first, so at equal stamps the new arrival wins. Returns the window
        years whose bars actually changed (close or stamp), so that a re-sent bar (a
        replay after a crash) neither rewrites the changelog nor forces a recompute.
        """
        all_days = np.concatenate((e.days, days))
        all_stamps = np.concatenate((e.stamps, stamps))
        order = np.lexsort((all_stamps, all_days))  # stable: ties keep arrival order
        s_days = all_days[order]
        keep = np.empty(len(s_days), dtype=bool)
        keep[-1] = True
        np.not_equal(s_days[1:], s_days[:-1], out=keep[:-1])
        m_days = s_days[keep]
        m_closes = np.concatenate((e.closes, closes))[order][keep]
        m_stamps = all_stamps[order][keep]
        # Which incoming days now hold something other than before?
        at = np.searchsorted(m_days, days)
        final_closes, final_stamps = m_closes[at], m_stamps[at]
        old_days = e.days
        if len(old_days):
            pos = np.minimum(np.searchsorted(old_days, days), len(old_days) - 1)
            differs = (
                (old_days[pos] != days)
                | (e.closes[pos] != final_closes)
                | (e.stamps[pos] != final_stamps)
            )
        else:
            differs = np.ones(len(days), dtype=bool)
        if not differs.any():
            return []
        e.days = frozen(m_days)
        e.closes = frozen(m_closes)
        e.stamps = frozen(m_stamps)
        return np.unique(years[differs]).tolist()

    def drop_partition(self, partition: int) -> int:
        """Forget the symbols of a revoked partition; returns how many were dropped."""
        gone = self.symbols_of_partition(partition)
        for s in gone:
            self._forget(s)
        return len(gone)

    def _forget(self, symbol: str) -> None:
        e = self._entries.pop(symbol)
        self._n_bars -= len(e.days)
        self._slack_bars -= _slack(e)
        self._pattern_bytes -= _pattern_nbytes(e.pattern, e.encoded)

    # --- durable changelog ---

    def changelog_records(self, outcome: ApplyOutcome) -> list[tuple[bytes, bytes]]:
        """(key, value) records for what `outcome` changed, cut from the current state.

        Call right after the `apply` that produced `outcome`, before the next one.
        """
        out: list[tuple[bytes, bytes]] = []
        w = self._win
        for symbol, year in sorted(outcome.changed_windows):
            e = self._entries.get(symbol)
            if e is None:
                continue
            start, end = w.bounds(year)
            a, b = np.searchsorted(e.days, (start, end + 1)).tolist()
            value = encode_window(year, w.window_days, e.days[a:b], e.closes[a:b], e.stamps[a:b])
            out.append((window_key(symbol, year), value))
        for symbol in sorted(outcome.changed_meta):
            e = self._entries.get(symbol)
            if e is not None:
                out.append((meta_key(symbol), encode_meta(e.latest, e.partition)))
        return out

    def partition_of_record(self, key: bytes) -> int | None:
        """Partition of the state topic for a record: the symbol's input partition.

        None when reading files (partition -1) or when the symbol is not held.
        """
        symbol, _ = decode_key(key)
        e = self._entries.get(symbol)
        if e is None or e.partition < 0:
            return None
        return e.partition

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Rebuild from changelog records in any order; a later value for a key wins.

        Kafka keeps each key's records in order, so "later wins" needs no versions; keys
        may interleave arbitrarily. A None value (tombstone) removes what its key held: a
        window's bars, or, for the meta key, the whole symbol. Windows written under
        another W keep only the bars inside this W's window of the same year. Any restore
        drops the symbol's cached pattern, so its next batch recomputes it.
        """
        symbol, year = decode_key(key)
        record = None if value is None else decode_value(value)
        if year is None and isinstance(record, WindowRecord):
            raise StateRecordError(f"meta key {key!r} holds a window record")
        if (
            year is not None
            and record is not None
            and (not isinstance(record, WindowRecord) or record.year != year)
        ):
            raise StateRecordError(f"window key {key!r} holds another record")
        e = self._entries.get(symbol)
        if e is None:
            if record is None:
                return
            e = self._entries[symbol] = _Entry(_NO_DAY, -1)
        self._pattern_bytes -= _pattern_nbytes(e.pattern, e.encoded)
        e.pattern, e.encoded = None, None
        if year is None and record is None:
            self._forget(symbol)
            return
        if isinstance(record, MetaRecord):
            e.latest, e.partition = record.latest, record.partition
        elif year is not None:
            self._replace_window(e, year, record)
        if len(e.days):
            e.latest = max(e.latest, int(e.days[-1]))
        elif e.latest == _NO_DAY:
            self._forget(symbol)  # only tombstoned windows were ever seen for it

    def restore_many(self, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """`restore` of every record of a partition read back at once; returns how many.

        A restart reads each key's every version still on the topic. Record by record,
        each was decoded and each window copied its symbol's growing columns again:
        1.6 s for the 57,170 records of 1,600 symbols x 10 years (measured, most of a
        restart). Here only each key's last value is decoded, and a symbol's columns are
        built in one concatenation of its windows in year order (windows of different
        years never overlap). A symbol already held, or one with a tombstone among its
        records, takes the record-by-record path, whose order rules those need.
        """
        by_symbol: dict[str, list[tuple[bytes, int | None, bytes | None]]] = {}
        count = 0
        for key, value in records:
            symbol, year = decode_key(key)
            by_symbol.setdefault(symbol, []).append((key, year, value))
            count += 1
        for symbol, held in by_symbol.items():
            if symbol in self._entries or any(value is None for _, _, value in held):
                for key, _, value in held:
                    self.restore(key, value)
                continue
            meta: tuple[bytes, bytes] | None = None
            windows: dict[int, tuple[bytes, bytes]] = {}
            for key, year, value in held:
                assert value is not None  # tombstones took the other path
                if year is None:
                    meta = (key, value)
                else:
                    windows[year] = (key, value)
            self._restore_symbol(symbol, meta, [windows[y] + (y,) for y in sorted(windows)])
        return count

    def _restore_symbol(
        self,
        symbol: str,
        meta: tuple[bytes, bytes] | None,
        windows: list[tuple[bytes, bytes, int]],
    ) -> None:
        e = _Entry(_NO_DAY, -1)
        if meta is not None:
            record = decode_value(meta[1])
            if not isinstance(record, MetaRecord):
                raise StateRecordError(f"meta key {meta[0]!r} holds a window record")
            e.latest, e.partition = record.latest, record.partition
        days, closes, stamps = [], [], []
        for key, value, year in windows:
            window = decode_value(value)
            if not isinstance(window, WindowRecord) or window.year != year:
                raise StateRecordError(f"window key {key!r} holds another record")
            start, end = self._win.bounds(year)
            keep = (window.days >= start) & (window.days <= end)
            days.append(window.days[keep].astype(np.int32))
            closes.append(window.closes[keep])
            stamps.append(window.stamps[keep].astype(np.int64))
        if days:
            e.days = frozen(np.concatenate(days))
            e.closes = frozen(np.concatenate(closes))
            e.stamps = frozen(np.concatenate(stamps))
        if len(e.days):
            e.latest = max(e.latest, int(e.days[-1]))
        elif e.latest == _NO_DAY:
            return  # nothing held
        self._entries[symbol] = e
        self._n_bars += len(e.days)

    def _replace_window(self, e: _Entry, year: int, record: WindowRecord | None) -> None:
        start, end = self._win.bounds(year)
        a, b = np.searchsorted(e.days, (start, end + 1)).tolist()
        new_days, new_closes, new_stamps = _NO_DAYS, _NO_CLOSES, _NO_STAMPS
        if record is not None:
            keep = (record.days >= start) & (record.days <= end)
            new_days, new_closes = record.days[keep], record.closes[keep]
            new_stamps = record.stamps[keep]
        before = len(e.days)
        self._slack_bars -= _slack(e)  # the new columns are exact-size
        e.days = frozen(np.concatenate((e.days[:a], new_days.astype(np.int32), e.days[b:])))
        e.closes = frozen(np.concatenate((e.closes[:a], new_closes, e.closes[b:])))
        e.stamps = frozen(np.concatenate((e.stamps[:a], new_stamps.astype(np.int64), e.stamps[b:])))
        self._n_bars += len(e.days) - before


def _slack(e: _Entry) -> int:
    """Bars' worth of room allocated past `e`'s held bars (0 for exact-size columns)."""
    base = e.days.base
    return 0 if base is None else len(base) - len(e.days)


def _append(e: _Entry, days: np.ndarray, closes: np.ndarray, stamps: np.ndarray) -> int:
    """Append bars past every held day; returns the change in slack.

    Why not `np.concatenate`: that copies the whole history on every batch, which in a
    backfill (every batch appends a few bars to every symbol) is quadratic in the bars
    held per symbol. The columns are views of buffers with room at the end: new bars go
    into the room, and the longer view is the new column. Older snapshots are views of
    the shorter prefix, which nothing ever writes again, so they stay valid unchanged.
    Buffers grow by a quarter (at most ~25% slack, which `nbytes` counts).
    """
    n, m = len(e.days), len(days)
    before = _slack(e)
    base_days = e.days.base
    if base_days is None or len(base_days) < n + m:
        capacity = n + m + ((n + m) >> 2) + 8
        grown = [np.empty(capacity, col.dtype) for col in (e.days, e.closes, e.stamps)]
        for buffer, col in zip(grown, (e.days, e.closes, e.stamps), strict=True):
            buffer[:n] = col
        base_days, base_closes, base_stamps = grown
    else:  # the three columns always share one capacity (they grow together)
        base_closes, base_stamps = cast(np.ndarray, e.closes.base), cast(np.ndarray, e.stamps.base)
    base_days[n : n + m] = days
    base_closes[n : n + m] = closes
    base_stamps[n : n + m] = stamps
    e.days = frozen(base_days[: n + m])
    e.closes = frozen(base_closes[: n + m])
    e.stamps = frozen(base_stamps[: n + m])
    return _slack(e) - before


def _pattern_nbytes(result: PatternResult | None, encoded: bytes | None) -> int:
    if result is None:
        return 0
    arrays = result.curve_k.nbytes + result.curve_mean.nbytes + result.curve_n.nbytes
    pairs = result.pairs
    if pairs is not None:  # ~9 bytes per pair of years, 10 per year
        arrays += _PAIRS_OVERHEAD + sum(
            a.nbytes for a in (pairs.years, pairs.fingerprints, pairs.corr, pairs.counts)
        )
    return _PATTERN_OVERHEAD + arrays + (len(encoded) if encoded is not None else 0)
