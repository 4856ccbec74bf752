"""`sfa generate`: a deterministic synthetic market, written as a live feed would send it.

Why synthetic: demos, benchmarks and integration tests need many symbols over many
years without licensing market data, and they need patterns that are not noise, so
every symbol carries its own Spring Festival effect (a drift in the trading days just
before and just after the holiday). Same arguments -> byte-identical output.

Prices are kept in integer cents so that open/high/low/close stay consistent after
rounding (low <= open, close <= high) and JSON lines stay short.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import orjson

from service.calendar import FIRST_YEAR, LAST_BAR_YEAR, date_to_day, day_to_date, sf_day_table

__all__ = [
    "FESTIVAL_SPAN",
    "MarketBlock",
    "generate_bars",
    "generate_blocks",
    "symbol_names",
    "trading_days",
    "write_jsonl",
]

FESTIVAL_SPAN = 15  # trading days on each side of SF(y) that carry the festival drift
_HOLIDAY_DAYS = 7  # SF(y) .. SF(y)+6 is the closed holiday week
_MEAN_REVERSION = 1.0 / 250  # keeps log prices near their base over decades
LAST_YEAR = LAST_BAR_YEAR  # SPEC 1: dates up to 2099-12-31


@dataclass(frozen=True, slots=True)
class MarketBlock:
    """One calendar year of bars, columnar: rows = trading days, columns = symbols.

    Prices are int64 cents (divide by 100 for the JSON number); volume is int64 shares.
    """

    days: np.ndarray  # int32 day numbers, ascending
    dates: list[str]  # YYYY-MM-DD of `days`
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def symbol_names(n: int) -> list[str]:
    """`n` unique A-share style codes, alternating Shanghai 60xxxx and Shenzhen 00xxxx.

    Independent of the seed so that two markets of the same size share symbols
    (handy when comparing runs).
    """
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(f"{600000 + i // 2:06d}.SH")
        else:
            out.append(f"{1 + i // 2:06d}.SZ")
    return out


def trading_days(start_year: int, end_year: int) -> np.ndarray:
    """int32 day numbers of weekdays in the years, minus every festival week."""
    first = date_to_day(dt.date(start_year, 1, 1))
    last = date_to_day(dt.date(end_year, 12, 31))
    days = np.arange(first, last + 1, dtype=np.int32)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
    keep = weekday < 5
    sf = sf_day_table()
    for y in range(start_year, end_year + 1):
        s = int(sf[y - FIRST_YEAR])
        keep &= (days < s) | (days >= s + _HOLIDAY_DAYS)
    return days[keep]


def _festival_masks(days: np.ndarray, start_year: int, end_year: int) -> tuple[np.ndarray, ...]:
    """Masks of the last FESTIVAL_SPAN trading days before SF(y) and the first after it."""
    pre = np.zeros(len(days), dtype=bool)
    post = np.zeros(len(days), dtype=bool)
    sf = sf_day_table()
    for y in range(start_year, min(end_year + 1, LAST_YEAR) + 1):
        i = int(np.searchsorted(days, sf[y - FIRST_YEAR]))  # first trading day on/after SF
        pre[max(0, i - FESTIVAL_SPAN) : i] = True
        post[i : i + FESTIVAL_SPAN] = True
    return pre, post


def generate_blocks(
    n_symbols: int, start_year: int, end_year: int, seed: int
) -> Iterator[MarketBlock]:
    """Yield the market year by year, so memory stays flat however long the range.

    Each symbol: base price, daily volatility, and a festival effect -- a positive
    drift before SF(y) and a symbol-specific (either sign) drift after it, both
    per trading day -- on a mean-reverting geometric random walk.
    """
    if n_symbols < 1:
        raise ValueError("n_symbols must be >= 1")
    if not FIRST_YEAR <= start_year <= end_year <= LAST_YEAR:
        raise ValueError(f"need {FIRST_YEAR} <= start_year <= end_year <= {LAST_YEAR}")
    rng = np.random.default_rng(seed)
    n = n_symbols
    base = np.log(rng.uniform(5.0, 200.0, n))
    sigma = rng.uniform(0.010, 0.022, n)
    pre_drift = rng.uniform(0.003, 0.008, n)
    post_drift = rng.uniform(-0.008, 0.008, n)
    volume_base = rng.uniform(1e5, 5e6, n)

    days = trading_days(start_year, end_year)
    pre_mask, post_mask = _festival_masks(days, start_year, end_year)
    x = np.zeros(n)  # log price minus base
    prev_close = np.rint(np.exp(base) * 100).astype(np.int64)
    keep = 1.0 - _MEAN_REVERSION
    for y in range(start_year, end_year + 1):
        lo = int(np.searchsorted(days, date_to_day(dt.date(y, 1, 1))))
        hi = int(np.searchsorted(days, date_to_day(dt.date(y, 12, 31)), side="right"))
        rows = slice(lo, hi)
        m = hi - lo
        if m == 0:
            continue
        eps = rng.standard_normal((m, n)) * sigma
        eps += np.outer(pre_mask[rows], pre_drift) + np.outer(post_mask[rows], post_drift)
        logp = np.empty((m, n))
        for i in range(m):  # the recurrence is sequential in time, vectorised over symbols
            x = keep * x + eps[i]
            logp[i] = x
        close = np.maximum(1, np.rint(np.exp(logp + base) * 100)).astype(np.int64)
        prev = np.vstack([prev_close[None, :], close[:-1]])
        gap = np.exp(rng.normal(0.0, 0.3, (m, n)) * sigma)
        open_ = np.maximum(1, np.rint(prev * gap)).astype(np.int64)
        top = np.maximum(open_, close)
        bottom = np.minimum(open_, close)
        span = np.abs(rng.normal(0.0, 0.5, (m, 2, n))) * sigma
        high = top + np.rint(top * span[:, 0]).astype(np.int64)
        low = np.maximum(1, bottom - np.rint(bottom * span[:, 1]).astype(np.int64))
        volume = np.rint(volume_base * rng.lognormal(0.0, 0.4, (m, n)) / 100).astype(np.int64)
        prev_close = close[-1]
        block_days = days[rows]
        yield MarketBlock(
            days=block_days,
            dates=[day_to_date(int(d)).isoformat() for d in block_days],
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=volume * 100,
        )


def generate_bars(
    n_symbols: int, start_year: int, end_year: int, seed: int
) -> Iterator[dict[str, Any]]:
    """Row view of `generate_blocks`: bar dicts in feed order (by date, then symbol)."""
    names = symbol_names(n_symbols)
    for block in generate_blocks(n_symbols, start_year, end_year, seed):
        for i, date in enumerate(block.dates):
            yield from _row_dicts(names, date, block, i)


def _row_dicts(names: list[str], date: str, block: MarketBlock, i: int) -> Iterator[dict[str, Any]]:
    opens = (block.open[i] / 100).tolist()
    highs = (block.high[i] / 100).tolist()
    lows = (block.low[i] / 100).tolist()
    closes = (block.close[i] / 100).tolist()
    volumes = block.volume[i].tolist()
    for s, o, h, lo, c, v in zip(names, opens, highs, lows, closes, volumes, strict=True):
        yield {"symbol": s, "date": date, "open": o, "high": h, "low": lo, "close": c, "volume": v}


def write_jsonl(
    out: IO[bytes],
    n_symbols: int,
    start_year: int,
    end_year: int,
    seed: int,
    *,
    progress: bool = False,
) -> int:
    """Write one bar object per line, interleaved by date; return the number of lines."""
    names = symbol_names(n_symbols)
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    lines = 0
    bar_ctx: Any = nullcontext()
    if progress:
        from tqdm import tqdm

        total = len(trading_days(start_year, end_year)) * n_symbols
        bar_ctx = tqdm(total=total, unit="bar", unit_scale=True, file=sys.stderr, desc="generate")
    with bar_ctx as bar:
        for block in generate_blocks(n_symbols, start_year, end_year, seed):
            chunk: list[bytes] = []
            for i, date in enumerate(block.dates):
                chunk.extend(dumps(d, option=newline) for d in _row_dicts(names, date, block, i))
            out.write(b"".join(chunk))
            lines += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return lines
