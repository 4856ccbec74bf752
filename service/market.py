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
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import orjson

from service.calendar import FIRST_YEAR, LAST_BAR_YEAR, date_to_day, day_to_date, sf_day_table

__all__ = [
    "FESTIVAL_SPAN",
    "MarketBlock",
    "MarketDay",
    "generate_bars",
    "generate_blocks",
    "generate_days",
    "symbol_names",
    "trading_days",
    "write_jsonl",
]

FESTIVAL_SPAN = 15  # trading days on each side of SF(y) that carry the festival drift
_HOLIDAY_DAYS = 7  # SF(y) .. SF(y)+6 is the closed holiday week
_MEAN_REVERSION = 1.0 / 250  # keeps log prices near their base over decades
LAST_YEAR = LAST_BAR_YEAR  # SPEC 1: dates up to 2099-12-31


@dataclass(frozen=True, slots=True)
class MarketDay:
    """One trading day of bars, one element per symbol (in `symbol_names` order).

    Prices are int64 cents (divide by 100 for the JSON number); volume is int64 shares.
    """

    day: int  # day number (`service.calendar`)
    date: str  # YYYY-MM-DD
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


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


def generate_days(n_symbols: int, start_year: int, end_year: int, seed: int) -> Iterator[MarketDay]:
    """Yield the market day by day: memory is O(symbols), whatever the range.

    Each symbol: base price, daily volatility, and a festival effect -- a positive
    drift before SF(y) and a symbol-specific (either sign) drift after it, both
    per trading day -- on a mean-reverting geometric random walk.

    The random numbers are those of one (days x symbols) draw per quantity and year
    (that is how the market was first defined, and seeds must keep meaning the same
    market), taken here one day at a time: a cheap pre-pass over each year finds
    where every quantity's draws start in the stream (`_year_streams`).
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
    prev = np.rint(np.exp(base) * 100).astype(np.int64)  # the previous close
    keep = 1.0 - _MEAN_REVERSION
    state = rng.bit_generator.state
    for y in range(start_year, end_year + 1):
        lo = int(np.searchsorted(days, date_to_day(dt.date(y, 1, 1))))
        hi = int(np.searchsorted(days, date_to_day(dt.date(y, 12, 31)), side="right"))
        if hi == lo:
            continue
        moves, gaps, spans, volumes = _year_streams(state, hi - lo, n)
        for i in range(lo, hi):
            # the recurrence is sequential in time, vectorised over symbols
            eps = moves.standard_normal(n) * sigma
            eps += pre_mask[i] * pre_drift + post_mask[i] * post_drift
            x = keep * x + eps
            close = np.maximum(1, np.rint(np.exp(x + base) * 100)).astype(np.int64)
            gap = np.exp(gaps.normal(0.0, 0.3, n) * sigma)
            open_ = np.maximum(1, np.rint(prev * gap)).astype(np.int64)
            top = np.maximum(open_, close)
            bottom = np.minimum(open_, close)
            span = np.abs(spans.normal(0.0, 0.5, (2, n))) * sigma
            high = top + np.rint(top * span[0]).astype(np.int64)
            low = np.maximum(1, bottom - np.rint(bottom * span[1]).astype(np.int64))
            volume = np.rint(volume_base * volumes.lognormal(0.0, 0.4, n) / 100).astype(np.int64)
            prev = close
            day = int(days[i])
            yield MarketDay(
                day=day,
                date=day_to_date(day).isoformat(),
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=volume * 100,
            )
        state = volumes.bit_generator.state  # the last quantity's stream ends the year


def _year_streams(state: Mapping[str, Any], m: int, n: int) -> list[np.random.Generator]:
    """Four generators at the starts of a year's moves, gaps, spans and volumes.

    The year draws, in stream order, m x n moves, m x n gaps, m x 2 x n spans, then
    m x n volumes. A normal draw takes a variable number of raw words (ziggurat), so
    the starts are found by drawing and discarding the first three quantities, in
    row blocks of about a million numbers.
    """
    streams = []
    scratch = np.random.Generator(np.random.PCG64())
    scratch.bit_generator.state = state
    for rows_per_day in (1, 1, 2, 0):
        stream = np.random.Generator(np.random.PCG64())
        stream.bit_generator.state = scratch.bit_generator.state
        streams.append(stream)
        total = m * rows_per_day
        if total:
            block = max(1, (1 << 20) // n)
            buf = np.empty((block, n))
            for done in range(0, total, block):
                rows = min(block, total - done)
                scratch.standard_normal(out=buf[:rows])
    return streams


def generate_blocks(
    n_symbols: int, start_year: int, end_year: int, seed: int
) -> Iterator[MarketBlock]:
    """`generate_days` stacked into calendar years (memory O(trading days x symbols))."""
    year: list[MarketDay] = []

    def stacked(rows: list[MarketDay]) -> MarketBlock:
        return MarketBlock(
            days=np.array([r.day for r in rows], dtype=np.int32),
            dates=[r.date for r in rows],
            open=np.vstack([r.open for r in rows]),
            high=np.vstack([r.high for r in rows]),
            low=np.vstack([r.low for r in rows]),
            close=np.vstack([r.close for r in rows]),
            volume=np.vstack([r.volume for r in rows]),
        )

    for row in generate_days(n_symbols, start_year, end_year, seed):
        if year and year[0].date[:4] != row.date[:4]:
            yield stacked(year)
            year = []
        year.append(row)
    if year:
        yield stacked(year)


def generate_bars(
    n_symbols: int, start_year: int, end_year: int, seed: int
) -> Iterator[dict[str, Any]]:
    """Row view of `generate_days`: bar dicts in feed order (by date, then symbol)."""
    names = symbol_names(n_symbols)
    for day in generate_days(n_symbols, start_year, end_year, seed):
        yield from _row_dicts(names, day)


def _row_dicts(names: list[str], day: MarketDay) -> Iterator[dict[str, Any]]:
    opens = (day.open / 100).tolist()
    highs = (day.high / 100).tolist()
    lows = (day.low / 100).tolist()
    closes = (day.close / 100).tolist()
    volumes = day.volume.tolist()
    date = day.date
    for s, o, h, lo, c, v in zip(names, opens, highs, lows, closes, volumes, strict=True):
        yield {"symbol": s, "date": date, "open": o, "high": h, "low": lo, "close": c, "volume": v}


def _day_lines(names: list[str], day: MarketDay) -> bytes:
    """The day's bars as JSONL, from one `orjson.dumps` of the list: the objects hold
    no braces inside, so `},{` only ever separates two bars."""
    blob = orjson.dumps(list(_row_dicts(names, day)))
    return blob[1:-1].replace(b"},{", b"}\n{") + b"\n"


CSV_HEADER = b"symbol,date,open,high,low,close,volume\n"


def _day_csv(names: list[str], day: MarketDay) -> bytes:
    """The day's bars as CSV rows, numbers written as the JSONL writes them (shortest
    round-trip form), so both files hold the same market."""
    columns = zip(
        names,
        (day.open / 100).tolist(),
        (day.high / 100).tolist(),
        (day.low / 100).tolist(),
        (day.close / 100).tolist(),
        day.volume.tolist(),
        strict=True,
    )
    date = day.date
    return "".join(
        f"{s},{date},{o!r},{h!r},{lo!r},{c!r},{v}\n" for s, o, h, lo, c, v in columns
    ).encode()


def write_jsonl(
    out: IO[bytes],
    n_symbols: int,
    start_year: int,
    end_year: int,
    seed: int,
    *,
    progress: bool = False,
    csv: bool = False,
) -> int:
    """Write one bar object per line (`csv`: a header, then one row per bar),
    interleaved by date; return the number of bars.

    Written a day at a time, so memory stays flat (a day of 100,000 symbols is ~10 MB).
    """
    day_bytes = _day_csv if csv else _day_lines
    if csv:
        out.write(CSV_HEADER)
    names = symbol_names(n_symbols)
    lines = 0
    bar_ctx: Any = nullcontext()
    if progress:
        from tqdm import tqdm

        total = len(trading_days(start_year, end_year)) * n_symbols
        bar_ctx = tqdm(total=total, unit="bar", unit_scale=True, file=sys.stderr, desc="generate")
    with bar_ctx as bar:
        for day in generate_days(n_symbols, start_year, end_year, seed):
            out.write(day_bytes(names, day))
            lines += n_symbols
            if bar is not None:
                bar.update(n_symbols)
    return lines
