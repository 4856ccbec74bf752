"""What the decode stage hands on: a batch's valid bars as columns, and its rejects.

Plain data only (numpy arrays, lists, bytes), so a decoded batch crosses the process
boundary from the decoder helpers and the replay reader in a few pickled arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DecodedBatch", "Reject", "concat", "recode"]


@dataclass(frozen=True, slots=True)
class Reject:
    """One dead letter: a rejected message, or one rejected element of an array."""

    index: int  # index of the message within the batch
    array_index: int | None  # position inside a JSON array message, else None
    reason: str
    raw: bytes  # the message bytes; for an array element: that element's JSON


@dataclass(slots=True)
class DecodedBatch:
    """Valid bars of a batch as columns (arrival order) plus the rejects.

    Symbols come factorized (`uniques[codes[i]]` is bar i's symbol, uniques in order of
    first appearance): the state groups by code, and a batch crosses the process
    boundary as a few arrays and one short list instead of a string per bar.
    """

    codes: np.ndarray  # int32 index into `uniques`, per valid bar
    uniques: list[str]
    days: np.ndarray  # int32 day numbers
    closes: np.ndarray  # float64
    message_index: np.ndarray  # int32: the message that carried each valid bar
    rejects: list[Reject]
    #: int64 event stamp of each bar when bars carry their own (forwarded records bring
    #: the stamp of the message they were first read in); None: their message's.
    stamps: np.ndarray | None = None

    @property
    def symbols(self) -> list[str]:
        """Each valid bar's symbol (a new list; tests and small callers)."""
        uniques = self.uniques
        return [uniques[c] for c in self.codes.tolist()]

    def __len__(self) -> int:
        return len(self.codes)


def recode(parts: Sequence[tuple[Sequence[str], np.ndarray]]) -> tuple[list[np.ndarray], list[str]]:
    """Codes of several `(uniques, codes)` factorizations in one shared table: each part's
    codes mapped into it, and the table, in order of first appearance across the parts
    (part by part, each in its own uniques' order)."""
    code_of: dict[str, int] = {}
    out: list[np.ndarray] = []
    for names, codes in parts:
        table = np.fromiter(
            (code_of.setdefault(u, len(code_of)) for u in names), np.int32, len(names)
        )
        out.append(table[codes] if len(codes) else np.empty(0, np.int32))
    return out, list(code_of)


def concat(parts: list[tuple[int, DecodedBatch]]) -> DecodedBatch:
    """One batch from the decodes of consecutive slices of it, each `(start, decoded)`
    with `start` the index of the slice's first message: as if decoded whole (message
    indexes shifted, symbols factorized again in order of first appearance)."""
    if len(parts) == 1 and parts[0][0] == 0:
        return parts[0][1]
    codes, uniques = recode([(p.uniques, p.codes) for _, p in parts])
    stamps = [p.stamps for _, p in parts if p.stamps is not None]
    return DecodedBatch(
        codes=np.concatenate(codes).astype(np.int32),
        uniques=uniques,
        days=np.concatenate([p.days for _, p in parts]).astype(np.int32),
        closes=np.concatenate([p.closes for _, p in parts]).astype(np.float64),
        message_index=np.concatenate(
            [p.message_index.astype(np.int32) + start for start, p in parts]
        ),
        rejects=[
            Reject(r.index + start, r.array_index, r.reason, r.raw)
            for start, p in parts
            for r in p.rejects
        ],
        stamps=np.concatenate(stamps) if len(stamps) == len(parts) else None,
    )
