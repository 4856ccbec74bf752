"""Messages -> `DecodedBatch`: the columnar fast path first, the exact path for the rest.

The fast path (`service.decode.fast`) takes a newline-joined block of one-object
messages; every row it refuses or flags, and every batch it cannot take at all, is
decided by the exact path (`service.decode.exact`), so the result is always the
exact path's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.decode.exact import decode_values
from service.decode.fast import Columns, decode_block
from service.decode.types import DecodedBatch, Reject
from service.state.batch import factorize

__all__ = ["decode_batch", "decode_lines"]


def decode_batch(values: Sequence[bytes], max_message_bytes: int = 1_048_576) -> DecodedBatch:
    """Parse and validate a batch of message values; bad records become `Reject`s.

    Messages without a newline of their own are joined into one block for the
    columnar fast path (`service.decode.fast`); anything it cannot take is decoded
    message by message, exactly.
    """
    if values:
        blob = b"\n".join(values)
        fast = decode_block(blob, max_message_bytes, expect=len(values))
        if fast is not None:
            return _assemble(fast, values.__getitem__, max_message_bytes)
    return _decoded(*decode_values(values, max_message_bytes))


def decode_lines(blob: bytes, max_message_bytes: int = 1_048_576) -> DecodedBatch:
    """`decode_batch` of `blob.split(b"\\n")`, without splitting in the usual case: file
    batches travel to the decoder as one bytes object."""
    if blob:
        fast = decode_block(blob, max_message_bytes)
        if fast is not None:
            return _assemble(fast, fast.message, max_message_bytes)
    return _decoded(*decode_values(blob.split(b"\n") if blob else [], max_message_bytes))


def _assemble(
    fast: Columns, message: Callable[[int], bytes], max_message_bytes: int
) -> DecodedBatch:
    """The fast path's columns, with every row it referred decided by the exact path."""
    n = len(fast.days)
    if fast.keep is None:
        index = np.arange(n, dtype=np.int32)
        return DecodedBatch(fast.codes, fast.uniques, fast.days, fast.closes, index, [])
    keep = fast.keep
    uniques = fast.uniques
    symbols = [uniques[c] for c in fast.codes.tolist()]
    days, closes = fast.days.copy(), fast.closes.copy()
    rejects: list[Reject] = []
    for row in fast.refer:
        value = message(row)
        one_symbol, one_day, one_close, _, one_rejects = decode_values([value], max_message_bytes)
        if one_symbol:  # the message is one object, so one bar or one reject
            symbols[row], days[row], closes[row] = one_symbol[0], one_day[0], one_close[0]
            keep[row] = True
        else:
            rejects.extend(Reject(row, r.array_index, r.reason, r.raw) for r in one_rejects)
    codes, kept_uniques = factorize([s for s, k in zip(symbols, keep.tolist(), strict=True) if k])
    index = np.flatnonzero(keep).astype(np.int32)
    return DecodedBatch(codes, kept_uniques, days[keep], closes[keep], index, rejects)


def _decoded(
    symbols: list[str],
    days: np.ndarray,
    closes: np.ndarray,
    message_index: np.ndarray,
    rejects: list[Reject],
) -> DecodedBatch:
    codes, uniques = factorize(symbols)
    return DecodedBatch(codes, uniques, days, closes, message_index, rejects)
