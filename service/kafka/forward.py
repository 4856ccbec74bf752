"""Forwarding (SPEC 7) as the stage the Kafka side hands the pipeline.

A bar read from the input topic off a partition other than its symbol's owner is not
applied here: it is handed on to partition `owner` of the repartition topic, where its
owner reads it with its twin input partition. Bars read from the repartition topic are
on their owner's partition already and are never forwarded again. Replay has no such
stage: every bar of a file is applied.
"""

from __future__ import annotations

import numpy as np

from service.batches import Forward, Routed
from service.decode.types import DecodedBatch
from service.encode import encode_forwarded_bars
from service.kafka.message import KafkaOrigin
from service.ownership import Routing

__all__ = ["Forwarder"]


class Forwarder:
    """`Router[KafkaOrigin]`: splits off the bars to forward; the rest, re-factorized, is
    applied.

    A forwarded bar keeps its record's timestamp, so event order (SPEC 1) is the same
    whichever way it reaches its owner. Rejects stay with the batch that read them: a
    bad record is dead-lettered where it was first read, once.
    """

    def __init__(self, routing: Routing) -> None:
        self.routing = routing

    def route(
        self, origin: KafkaOrigin, decoded: DecodedBatch, partitions: np.ndarray, stamps: np.ndarray
    ) -> Routed:
        routing = self.routing
        from_source: bool | np.ndarray
        if origin.topics is None:
            from_source = origin.topic == routing.source
        else:
            by_message = np.fromiter(
                (t == routing.source for t in origin.topics), bool, len(origin.topics)
            )
            from_source = by_message[decoded.message_index]
        mask = routing.to_forward(decoded.codes, decoded.uniques, partitions, from_source)
        if mask is None:
            return Routed(decoded, partitions, stamps, [])
        uniques = decoded.uniques
        owners = routing.owners(uniques)
        out = np.flatnonzero(mask)
        codes = decoded.codes[out].tolist()
        symbols = [uniques[c] for c in codes]
        values = encode_forwarded_bars(symbols, decoded.days[out], decoded.closes[out])
        keys = [s.encode() for s in uniques]
        forwards = list(
            map(
                Forward,
                owners[codes].tolist(),
                [keys[c] for c in codes],
                values,
                stamps[out].tolist(),
            )
        )
        keep = ~mask
        kept_codes = decoded.codes[keep]
        used = np.unique(kept_codes)  # codes follow first appearance: so does `used`
        remap = np.full(len(uniques), -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        applied = DecodedBatch(
            codes=remap[kept_codes],
            uniques=[uniques[i] for i in used.tolist()],
            days=decoded.days[keep],
            closes=decoded.closes[keep],
            message_index=decoded.message_index[keep],
            rejects=decoded.rejects,
        )
        return Routed(applied, partitions[keep], stamps[keep], forwards)
