"""What the decode stage hands on: a batch's valid bars as columns, and its rejects.

Plain data only (numpy arrays, lists, bytes), so a decoded batch crosses the process
boundary from the decoder helpers and the replay reader in a few pickled arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DecodedBatch", "Reject"]


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
