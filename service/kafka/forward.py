"""Forwarding (SPEC 7) as the stage the Kafka side hands the pipeline, both ways.

Sending (`Forwarder.route`): a bar read from the input topic off a partition other than
its symbol's owner is not applied here. The batch hands each destination partition's
bars on as one record of the repartition topic (`service.kafka.repartition`: columns,
many bars a record), which its owner reads with its twin input partition.

Receiving (`Forwarder.decode`): a batch holding repartition records decodes them with a
few `numpy.frombuffer` calls, the input messages with the usual decoder, and merges the
two in read order. Each forwarded bar brings its original timestamp, so event order
(SPEC 1) is the same whichever way a bar reaches its owner. A record it cannot read is
one dead letter (`invalid_forward`). Bars read from the repartition topic are on their
owner's partition already and are never forwarded again.

Replay has no such stage: every bar of a file is applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.batches import Batch, Forward, PayloadDecoder, Routed
from service.decode.types import DecodedBatch, Reject, recode
from service.kafka.message import KafkaOrigin
from service.kafka.repartition import (
    MAX_BARS_PER_RECORD,
    ForwardedBars,
    InvalidForward,
    decode_record,
    encode_record,
    is_columnar,
)
from service.ownership import Routing

__all__ = ["INVALID_FORWARD", "Forwarder"]

INVALID_FORWARD = "invalid_forward"


class Forwarder:
    """`Router[KafkaOrigin]` for `sfa run`. Rejects stay with the batch that read them: a
    bad record is dead-lettered where it was first read, once."""

    def __init__(self, routing: Routing) -> None:
        self.routing = routing

    # --- sending ---

    def route(
        self, origin: KafkaOrigin, decoded: DecodedBatch, partitions: np.ndarray, stamps: np.ndarray
    ) -> Routed:
        """Split off the bars to forward, as records; the rest, re-factorized, is applied."""
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
        forwards = self._records(origin, decoded, partitions, stamps, np.flatnonzero(mask))
        keep = ~mask
        uniques = decoded.uniques
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
            stamps=None if decoded.stamps is None else decoded.stamps[keep],
        )
        return Routed(applied, partitions[keep], stamps[keep], forwards)

    def _records(
        self,
        origin: KafkaOrigin,
        decoded: DecodedBatch,
        partitions: np.ndarray,
        stamps: np.ndarray,
        out: np.ndarray,
    ) -> list[Forward]:
        """The bars at `out` (read order), one record per destination partition (split
        at MAX_BARS_PER_RECORD), each bar with its timestamp, read position and order."""
        message = decoded.message_index
        ordinals = _ordinals(message)
        offsets = np.asarray(origin.offsets, dtype=np.int64)
        dest = self.routing.owners(decoded.uniques)[decoded.codes[out]]
        order = np.argsort(dest, kind="stable")  # by destination, read order kept inside
        out, dest = out[order], dest[order]
        cuts = np.flatnonzero(np.diff(dest)) + 1
        records: list[Forward] = []
        for group in np.split(np.arange(len(out)), cuts):
            partition = int(dest[group[0]])
            for start in range(0, len(group), MAX_BARS_PER_RECORD):
                at = out[group[start : start + MAX_BARS_PER_RECORD]]
                used, codes = np.unique(decoded.codes[at], return_inverse=True)
                bars = ForwardedBars(
                    topic=self.routing.source,
                    uniques=[decoded.uniques[c] for c in used.tolist()],
                    codes=codes.astype(np.int32),
                    days=decoded.days[at],
                    closes=decoded.closes[at],
                    stamps=stamps[at],
                    partitions=partitions[at],
                    offsets=offsets[message[at]],
                    ordinals=ordinals[at],
                )
                records.append(
                    Forward(partition, None, encode_record(bars), int(bars.stamps.max()), len(at))
                )
        return records

    # --- receiving ---

    async def decode(self, batch: Batch[KafkaOrigin], decoder: PayloadDecoder) -> DecodedBatch:
        """The input messages through `decoder`, the repartition records here."""
        origin, values = batch.origin, batch.messages()
        repartition = self.routing.repartition
        if origin.topics is None and origin.topic != repartition:
            return await decoder.decode(values)
        topics = origin.topics or [origin.topic] * len(values)
        columnar = [i for i, t in enumerate(topics) if t == repartition and is_columnar(values[i])]
        if not columnar:
            decoded = await decoder.decode(values)  # input, and version-0 records (JSON bars)
            decoded.rejects = _forward_reasons(decoded.rejects, topics, repartition)
            return decoded
        is_record = set(columnar)
        rest = [i for i in range(len(values)) if i not in is_record]
        parts: list[tuple[DecodedBatch, np.ndarray]] = []
        if rest:
            decoded = await decoder.decode([values[i] for i in rest])
            where = np.asarray(rest, dtype=np.int32)
            stamps = np.asarray(origin.timestamps_ms, dtype=np.int64)[where[decoded.message_index]]
            parts.append((decoded, stamps))
            index_of = where
        else:
            index_of = np.empty(0, np.int32)
        rejects: list[Reject] = [
            Reject(int(index_of[r.index]), r.array_index, r.reason, r.raw)
            for r in (parts[0][0].rejects if parts else [])
        ]
        records: list[tuple[int, ForwardedBars]] = []
        for i in columnar:
            try:
                records.append((i, decode_record(values[i])))
            except InvalidForward:
                rejects.append(Reject(i, None, INVALID_FORWARD, values[i]))
        merged = _merge(parts, index_of, records)
        merged.rejects = sorted(
            _forward_reasons(rejects, topics, repartition), key=lambda r: r.index
        )
        return merged


def _ordinals(message: np.ndarray) -> np.ndarray:
    """Each bar's place among its message's valid bars (bars come in message order)."""
    n = len(message)
    if n == 0:
        return np.empty(0, np.int32)
    index = np.arange(n)
    first = np.r_[True, message[1:] != message[:-1]]
    return (index - np.maximum.accumulate(np.where(first, index, 0))).astype(np.int32)


def _forward_reasons(
    rejects: Sequence[Reject], topics: list[str], repartition: str
) -> list[Reject]:
    """A version-0 record that does not decode is ours, so it is `invalid_forward` too."""
    if not any(topics[r.index] == repartition for r in rejects):
        return list(rejects)
    return [
        r if topics[r.index] != repartition else Reject(r.index, None, INVALID_FORWARD, r.raw)
        for r in rejects
    ]


def _merge(
    parts: list[tuple[DecodedBatch, np.ndarray]],
    index_of: np.ndarray,
    records: list[tuple[int, ForwardedBars]],
) -> DecodedBatch:
    """One DecodedBatch in message order: the decoded input (its message indexes mapped
    back through `index_of`) and each record's bars, every bar with its own stamp."""
    inputs = [decoded for decoded, _ in parts]
    forwarded = [bars for _, bars in records]
    coded, uniques = recode(
        [(d.uniques, d.codes) for d in inputs] + [(f.uniques, f.codes) for f in forwarded]
    )
    messages = [index_of[d.message_index].astype(np.int32) for d in inputs]
    messages += [np.full(len(bars), i, np.int32) for i, bars in records]
    message = np.concatenate(messages) if messages else np.empty(0, np.int32)
    order = np.argsort(message, kind="stable")  # message order; read order inside each
    codes = np.concatenate(coded)[order]
    days = [d.days for d in inputs] + [f.days for f in forwarded]
    closes = [d.closes for d in inputs] + [f.closes for f in forwarded]
    stamps = [st for _, st in parts] + [f.stamps for f in forwarded]
    # `uniques` in first appearance, as every DecodedBatch has them
    first = np.unique(codes, return_index=True)
    appear = first[0][np.argsort(first[1], kind="stable")]
    remap = np.full(len(uniques), -1, np.int32)
    remap[appear] = np.arange(len(appear), dtype=np.int32)
    return DecodedBatch(
        codes=remap[codes],
        uniques=[uniques[c] for c in appear.tolist()],
        days=np.concatenate(days).astype(np.int32)[order],
        closes=np.concatenate(closes).astype(np.float64)[order],
        message_index=message[order],
        rejects=[],
        stamps=np.concatenate(stamps).astype(np.int64)[order],
    )
