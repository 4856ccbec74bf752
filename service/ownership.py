"""Which input partition owns a symbol (SPEC 7): `owner(s) = P(s) mod N`.

`P` is one of the two partitioners Kafka clients use for keyed records, so a producer
that keys by symbol with its client's default lands every bar on the owner already:

- `murmur2`: the Java client's (and Kafka Streams') default, librdkafka's
  `murmur2_random`: `(murmur2(key) & 0x7fffffff) % N`, murmur2 with Kafka's seed.
- `crc32`: librdkafka's default `consistent_random` for non-empty keys:
  `crc32(key) % N`.

Written here rather than asked of the client because the decision is needed where no
producer is involved (which partition's state a decoded bar belongs to), and a pure
function can be checked against Kafka's own values in unit tests. A symbol's owner is
computed once per process and cached: symbols are few, bars many.

`Routing` is the service's side of SPEC 7: which bars of a Kafka batch were read off a
partition other than their owner and must be forwarded to the repartition topic.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Partitioner", "Routing", "murmur2", "owner", "partition_of_key"]

Partitioner = Literal["murmur2", "crc32"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` as the Java client returns it: a signed 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of_key(key: bytes, partitions: int, partitioner: Partitioner = "murmur2") -> int:
    """The partition a Kafka client with `partitioner` picks for a non-empty `key`."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if partitioner == "murmur2":
        return (murmur2(key) & 0x7FFFFFFF) % partitions
    return zlib.crc32(key) % partitions


_OWNERS: dict[tuple[str, int, str], int] = {}


def owner(symbol: str, partitions: int, partitioner: Partitioner = "murmur2") -> int:
    """The input partition that owns `symbol` on a topic of `partitions` partitions."""
    cache_key = (symbol, partitions, partitioner)
    found = _OWNERS.get(cache_key)
    if found is None:
        found = _OWNERS[cache_key] = partition_of_key(symbol.encode(), partitions, partitioner)
    return found


@dataclass(frozen=True, slots=True)
class Routing:
    """Where bars belong in the service (SPEC 7): `source` is the input topic (N =
    `partitions`), `repartition` the topic forwarded bars travel through."""

    source: str
    repartition: str
    partitions: int
    partitioner: Partitioner = "murmur2"

    def owners(self, symbols: Sequence[str]) -> np.ndarray:
        """int32 owner partition of each symbol (a batch's uniques: few, cached)."""
        n, how = self.partitions, self.partitioner
        return np.fromiter((owner(s, n, how) for s in symbols), np.int32, len(symbols))

    def to_forward(
        self,
        codes: np.ndarray,
        uniques: Sequence[str],
        bar_partitions: np.ndarray,
        from_source: bool | np.ndarray,
    ) -> np.ndarray | None:
        """Mask of the bars to forward: read from the input topic (`from_source`, per bar
        or for all) off a partition other than their symbol's owner. None: none (the
        well-keyed fast path, one vectorised compare). Bars read from the repartition
        topic are never forwarded again: they are on their owner's partition already.
        """
        if from_source is False or not len(codes):
            return None
        misplaced = self.owners(uniques)[codes] != bar_partitions
        if from_source is not True:
            misplaced &= from_source
        return misplaced if misplaced.any() else None
