"""The columnar fast path of decoding: a block of one-object-per-line messages straight
to validated columns, with msgspec typed decoding instead of a dict per bar.

Why: building a dict per bar with orjson and reading it back column by column cost
twice the parse itself. A msgspec `Struct` decoder checks the JSON types while it
parses (a bool or a string where a number belongs is an error there), so what is
left for Python is a few C-level column passes.

This path only ever *accepts* what the exact path (`service.decode.exact`,
orjson plus `service.decode.rules`) accepts, with the same values; anything else it hands
back, message by message, to the exact path, which alone decides a reason:

* a message msgspec refuses (malformed JSON, a wrong type, a number out of range)
  is located from the error's path or byte offset and re-decoded exactly;
* a row the column checks flag (null or unknown symbol/date, a close that is not a
  finite positive number, low above high, a field given under its alias, ...)
  is re-decoded exactly; the exact path may still keep it.

Property tests in `tests/unit/decode/test_decode_fast.py` hold the two paths to the same
output on random and adversarial input.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np

from service.decode.rules import _SYMBOLS_OK, cached_days, parse_day, symbol_ok
from service.state.batch import factorize

__all__ = ["Columns", "decode_block"]

_NAN = math.nan


# Range rules checked by msgspec while it parses (a breach is an error naming the
# row, which then goes the exact path), so open and volume need no column at all.
_Price = Annotated[float, msgspec.Meta(gt=0.0)]
_Volume = Annotated[float, msgspec.Meta(ge=0.0)]


class _Bar(msgspec.Struct, gc=False):
    """The canonical fields; absent prices and volume are NaN, a null one is None."""

    symbol: str | None = None
    date: str | None = None
    close: _Price | None = None
    open: _Price | None = _NAN
    high: _Price | None = _NAN
    low: _Price | None = _NAN
    volume: _Volume | None = _NAN


class _AliasBar(_Bar, gc=False):
    """Used only when a block mentions an alias key: such rows go the exact path."""

    stock_code: Any = None
    trade_date: Any = None
    close_price: Any = None
    open_price: Any = None
    high_price: Any = None
    low_price: Any = None


_DECODE = msgspec.json.Decoder(list[_Bar]).decode
_DECODE_ALIASED = msgspec.json.Decoder(list[_AliasBar]).decode
_DECODE_LINES = msgspec.json.Decoder(_Bar).decode_lines
_DECODE_LINES_ALIASED = msgspec.json.Decoder(_AliasBar).decode_lines
_BRACE = ord("{")
_CLOSING = ord("}")
_NEWLINE = ord("\n")
_ALIAS_FIELDS = attrgetter(
    "stock_code", "trade_date", "close_price", "open_price", "high_price", "low_price"
)
_NO_ALIAS = (None,) * 6
_AT_ROW = re.compile(r"at `\$\[(\d+)\]")
_AT_BYTE = re.compile(r"\(byte (\d+)\)")
_SYMBOL = attrgetter("symbol")
_CLOSE = attrgetter("close")
_HIGH = attrgetter("high")
_LOW = attrgetter("low")
_DATE = attrgetter("date")


class Columns:
    """A block's rows as columns (every row, in order) and which ones are settled.

    Symbols come factorized over all rows: `uniques[codes[i]]`. `keep` is None when
    every row is a valid bar; otherwise the rows not kept are listed in `refer`, for
    the exact path to decide (their column values are meaningless).
    """

    __slots__ = ("_blob", "_starts", "closes", "codes", "days", "keep", "refer", "uniques")

    def __init__(
        self,
        blob: bytes,
        starts: np.ndarray,
        codes: np.ndarray,
        uniques: list[Any],
        days: np.ndarray,
        closes: np.ndarray,
        keep: np.ndarray | None,
        refer: list[int],
    ) -> None:
        self._blob = blob
        self._starts = starts
        self.codes = codes
        self.uniques = uniques
        self.days = days
        self.closes = closes
        self.keep = keep
        self.refer = refer

    def message(self, row: int) -> bytes:
        """The bytes of message `row`."""
        starts = self._starts
        a = 0 if row == 0 else int(starts[row - 1])
        b = len(self._blob) if row == len(starts) else int(starts[row]) - 1
        return self._blob[a:b]


def decode_block(blob: bytes, max_message_bytes: int, expect: int | None = None) -> Columns | None:
    """Decode messages joined by single newlines, each one starting with `{`.

    Returns None when the block does not meet the preconditions of the joined parse
    (one message per line, none over the size limit, no `[` anywhere): the caller then
    decodes message by message. `expect`, when given, is the number of messages the
    caller joined: a message with a newline of its own then fails the check. One
    numpy pass over the bytes checks everything; `bytes.count` scans would cost as
    much as the parse.
    """
    raw = np.frombuffer(blob, dtype=np.uint8)
    if len(raw) == 0 or raw[0] != _BRACE or raw[-1] == _NEWLINE or b"[" in blob:
        return None
    starts = np.flatnonzero(raw == _NEWLINE) + 1
    if expect is not None and len(starts) + 1 != expect:
        return None
    if not (raw[starts] == _BRACE).all():
        return None
    if len(blob) > max_message_bytes:
        lengths = np.diff(starts, prepend=0, append=len(blob) + 1) - 1
        if lengths.max() > max_message_bytes:
            return None
    aliased = b"_" in blob  # every alias key has one; no canonical key has
    closed = raw[-1] == _CLOSING and bool((raw[starts - 2] == _CLOSING).all())
    parsed = _parse(blob, starts, aliased, closed)
    if parsed is None:
        return None
    return _columns(blob, starts, parsed[0], parsed[1], aliased)


def _joined(blob: bytes) -> bytes:
    """`[m0,\\nm1,\\n...]`: the separator keeps its newline, which no JSON string can
    hold, so a separator can never end up inside a string (the proof needs it)."""
    return b"[" + blob.replace(b"\n", b",\n") + b"]"


def _parse(
    blob: bytes, starts: np.ndarray, aliased: bool, closed: bool = False
) -> tuple[list[Any], list[int]] | None:
    """One typed parse of the block; messages it refuses are left as None rows and
    listed for the exact path.

    When every line ends with `}` (`closed`), the block is parsed as it is, as a stream
    of values (msgspec's `decode_lines`), which spares building a joined copy (a tenth
    of the decode). Row i is then message i whenever there are `count` values. Proof:
    every line starts with `{` and there is no `[`, so after a line's final `}` comes a
    newline and `{`; inside an object that is malformed (after a member comes `,` or
    `}`), and a string cannot hold the newline. So every line ends at the top level, no
    value spans lines, and each line holds at least one value: `count` values means one
    a line. Otherwise the joined text `[m0,m1,...]` parses to exactly `count` objects
    when it parses at all (see `service.decode.exact._parse_joined` for the proof).
    """
    count = len(starts) + 1
    bars: list[Any]
    if closed:
        try:
            bars = (_DECODE_LINES_ALIASED if aliased else _DECODE_LINES)(blob)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        else:
            if len(bars) == count:
                return bars, []
    decode = _DECODE_ALIASED if aliased else _DECODE
    try:
        bars = decode(_joined(blob))
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    else:
        if len(bars) == count:
            return bars, []
    bounds = [0, *starts.tolist(), len(blob) + 1]  # message i: blob[bounds[i]:bounds[i+1]-1]
    return _parse_around_errors(blob, bounds, decode)


# Each refused message costs a re-parse of what follows it; past this many in a block
# (a producer that always sends, say, volume as a string) the exact path is cheaper.
MAX_REFUSED = 16


def _parse_around_errors(
    blob: bytes, bounds: list[int], decode: Callable[[bytes], list[Any]]
) -> tuple[list[Any], list[int]] | None:
    """Rare and slower: ranges of messages, split at each refused one.

    msgspec stops at the first error and names its row (`$[i]`) or byte offset; a
    range is then split there. A truncated message may be blamed on its successor,
    so the part before the blamed message is tried again on its own, and an error
    with no location halves the range. None once more than `MAX_REFUSED` failed.
    """
    count = len(bounds) - 1
    out: list[Any] = [None] * count
    refer: list[int] = []
    todo = [(0, count)]
    failures = 0
    while todo:
        a, b = todo.pop()
        if a >= b:
            continue
        text = _joined(blob[bounds[a] : bounds[b] - 1])
        try:
            part = decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            failures += 1
            if failures > MAX_REFUSED:
                return None
            j = _blamed_row(str(exc), bounds, a, b)
            if j is None:
                if b - a == 1:
                    refer.append(a)
                else:
                    mid = (a + b) // 2
                    todo += [(mid, b), (a, mid)]
            elif j == a:
                refer.append(a)
                todo.append((a + 1, b))
            else:
                todo += [(j, b), (a, j)]
            continue
        if len(part) == b - a:
            out[a:b] = part
        else:  # cannot happen (see the proof); stay exact if it does
            refer.extend(range(a, b))
    refer.sort()
    return out, refer


def _blamed_row(text: str, bounds: list[int], a: int, b: int) -> int | None:
    """The message an error of the range [a, b) points at, if it says."""
    m = _AT_ROW.search(text)
    if m is not None:
        return min(a + int(m[1]), b - 1)
    m = _AT_BYTE.search(text)
    if m is not None:
        # where each message starts in the joined text: "[" first, then one comma each
        first = bounds[a]
        starts = [1 + bounds[i] - first + (i - a) for i in range(a, b)]
        return a + max(0, bisect.bisect_right(starts, int(m[1])) - 1)
    return None


def _floats(bars: list[Any], getter: Callable[[Any], Any], n: int) -> np.ndarray:
    """A float column; None (null, or a refused row) becomes NaN."""
    try:
        return np.fromiter(map(getter, bars), np.float64, n)
    except TypeError:
        return np.array([_NAN if v is None else v for v in map(getter, bars)], np.float64)


def _columns(
    blob: bytes, starts: np.ndarray, bars: list[Any], refer: list[int], aliased: bool
) -> Columns:
    n = len(bars)
    flagged = np.zeros(n, dtype=bool)
    if refer:
        flagged[refer] = True
        filler = _AliasBar() if aliased else _Bar()
        bars = [filler if b is None else b for b in bars]

    codes, uniques = factorize(list(map(_SYMBOL, bars)))
    # symbol_ok caches the good ones: only new symbols cost a regex
    bad = [i for i, s in enumerate(uniques) if s not in _SYMBOLS_OK and not symbol_ok(s)]
    if bad:
        flagged |= np.isin(codes, bad)

    dates = list(map(_DATE, bars))
    days = cached_days(dates)
    if days is None:  # a null or invalid date somewhere: find the rows
        found = [parse_day(d) for d in dates]
        flagged |= np.fromiter((type(d) is str for d in found), bool, n)
        days = np.array([0 if type(d) is str else d for d in found], dtype=np.int32)

    # msgspec has checked every number's range and refuses those beyond a double, so
    # each value here is a finite positive price, or NaN where absent or null.
    closes = _floats(bars, _CLOSE, n)
    flagged |= np.isnan(closes)  # a missing close
    with np.errstate(invalid="ignore"):
        flagged |= _floats(bars, _LOW, n) > _floats(bars, _HIGH, n)
    if aliased:
        flagged |= np.fromiter((_ALIAS_FIELDS(b) != _NO_ALIAS for b in bars), bool, n)

    if not flagged.any():
        return Columns(blob, starts, codes, uniques, days, closes, None, [])
    refer = np.flatnonzero(flagged).tolist()
    return Columns(blob, starts, codes, uniques, days, closes, ~flagged, refer)
