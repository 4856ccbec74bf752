"""How `sfa produce` shapes a file into Kafka records (SPEC 1 and 7): pure, no client.

Three shapes, because real feeds come in all three and the service must be right for
each (`--snapshot` and `--unkeyed` exist so users and tests can feed it like that):

- `keyed` (default): every record holds one symbol's bars, keyed by the symbol, on the
  partition that owns it (`service.ownership`), so nothing needs forwarding. An array
  line that mixes symbols is split into one record per symbol, in first-seen order,
  each keeping its bars' order; what is not a bar with a symbol (bad JSON, a bar without
  one) goes on as it was read, unkeyed, and is dead-lettered wherever it lands.
- `unkeyed`: every line as read, with no key: the client spreads them.
- `snapshot`: one array per date holding every symbol's bar of that day, as an
  end-of-day feed sends it, unkeyed; at most `SNAPSHOT_MAX_BARS` bars (SPEC 1's limit)
  and `max_bytes` per record. It holds the whole input in memory to group it by date.

Timestamps: record `i` of `n` is stamped `start_ms - n + i`. Strictly increasing in line
order, so a correction later in the file wins in Kafka exactly as in `sfa replay`,
whichever partition it travels through; and never in the future, which brokers refuse
beyond `log.message.timestamp.after.max.ms` (one hour by default since Kafka 4.0).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from service.ownership import Partitioner, owner

__all__ = [
    "SNAPSHOT_MAX_BARS",
    "FeedRecord",
    "Shape",
    "keyed_records",
    "snapshot_records",
    "stamps",
]

Shape = Literal["keyed", "unkeyed", "snapshot"]
SNAPSHOT_MAX_BARS = 10_000


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One record to send; `partition` None lets the client choose (unkeyed)."""

    key: bytes | None
    value: bytes
    partition: int | None
    file: str
    line: int


def _symbol(bar: Any) -> str | None:
    if type(bar) is not dict:
        return None
    symbol = bar.get("symbol")
    if symbol is None:
        symbol = bar.get("stock_code")
    return symbol if type(symbol) is str and symbol else None


def _date(bar: Any) -> str | None:
    if type(bar) is not dict:
        return None
    date = bar.get("date")
    if date is None:
        date = bar.get("trade_date")
    return date if type(date) is str else None


def keyed_records(
    messages: Iterable[tuple[bytes, str, int]],
    partitions: int,
    partitioner: Partitioner,
    keyed: bool = True,
) -> Iterator[FeedRecord]:
    """`(value, file, line)` per read message -> records of the `keyed` (or `unkeyed`) shape."""
    for value, file, line in messages:
        if not keyed:
            yield FeedRecord(None, value, None, file, line)
            continue
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            yield FeedRecord(None, value, None, file, line)
            continue
        if type(obj) is not list:
            symbol = _symbol(obj)
            if symbol is None:
                yield FeedRecord(None, value, None, file, line)
            else:
                yield FeedRecord(
                    symbol.encode(), value, owner(symbol, partitions, partitioner), file, line
                )
            continue
        groups: dict[str | None, list[Any]] = {}
        for bar in obj:
            groups.setdefault(_symbol(bar), []).append(bar)
        if len(groups) == 1 and None not in groups:
            (symbol,) = groups
            assert symbol is not None
            yield FeedRecord(
                symbol.encode(), value, owner(symbol, partitions, partitioner), file, line
            )
            continue
        for symbol, bars in groups.items():
            data = orjson.dumps(bars)
            if symbol is None:
                yield FeedRecord(None, data, None, file, line)
            else:
                yield FeedRecord(
                    symbol.encode(), data, owner(symbol, partitions, partitioner), file, line
                )


def snapshot_records(
    messages: Iterable[tuple[bytes, str, int]], max_bytes: int | None
) -> tuple[list[FeedRecord], list[FeedRecord]]:
    """(snapshot arrays in date order, records that are no bar with a date, as read).

    Bars keep their line order inside a date, so a correction stays behind the bar it
    corrects in the same array (index order is event order there).
    """
    by_date: dict[str, list[tuple[bytes, str, int]]] = {}
    leftovers: list[FeedRecord] = []
    for value, file, line in messages:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            leftovers.append(FeedRecord(None, value, None, file, line))
            continue
        bars = obj if type(obj) is list else [obj]
        for bar in bars:
            date = _date(bar)
            if date is None:
                leftovers.append(FeedRecord(None, orjson.dumps(bar), None, file, line))
            else:
                by_date.setdefault(date, []).append((orjson.dumps(bar), file, line))
    limit = (max_bytes or 1 << 20) - 1024  # room for the record's own framing
    out: list[FeedRecord] = []
    for date in sorted(by_date):
        part: list[bytes] = []
        size = 2
        first: tuple[str, int] | None = None
        for data, file, line in by_date[date]:
            if part and (len(part) >= SNAPSHOT_MAX_BARS or size + len(data) + 1 > limit):
                assert first is not None
                out.append(FeedRecord(None, b"[" + b",".join(part) + b"]", None, *first))
                part, size = [], 2
            if not part:
                first = (file, line)
            part.append(data)
            size += len(data) + 1
        assert first is not None
        out.append(FeedRecord(None, b"[" + b",".join(part) + b"]", None, *first))
    return out, leftovers


def stamps(count: int, start_ms: int) -> range:
    """Timestamps for `count` records in order: strictly increasing, the last at `start_ms - 1`."""
    return range(start_ms - count, start_ms)
