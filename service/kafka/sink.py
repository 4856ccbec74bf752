"""The Kafka sink: one batch's results, dead letters and state changes, then its offsets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.batches import BatchOutput
from service.encode import dead_letter_headers
from service.kafka.producer import TransactionalProducer

if TYPE_CHECKING:
    from service.instance import Service

__all__ = ["KafkaSink"]


class KafkaSink:
    """Writes one batch's results, dead letters and state changes, then commits its offsets.

    exactly_once: all of it, offsets included, in one transaction.
    at_least_once: produce, flush and verify delivery, then commit the offsets.
    """

    def __init__(self, service: Service) -> None:
        self._svc = service

    async def write(self, out: BatchOutput) -> None:
        await self._svc.in_producer_thread(lambda: self._write_blocking(out))
        self._svc.after_commit(out)

    def _write_blocking(self, out: BatchOutput) -> None:
        svc = self._svc
        s = svc.settings
        producer = svc.producer
        raw = out.raw
        if isinstance(producer, TransactionalProducer):
            producer.begin()
        for symbol, payload in out.results:
            producer.produce(s.output_topic, payload, key=symbol.encode())
        for reject in out.rejects:
            assert raw.partitions is not None and raw.offsets is not None
            headers: list[tuple[str, str | bytes | None]] = [
                *dead_letter_headers(
                    reject,
                    raw.topic or s.input_topic,
                    raw.partitions[reject.index],
                    raw.offsets[reject.index],
                )
            ]
            producer.produce(s.dlq_topic, reject.raw, headers=headers)
        for key, value, partition in svc.state_records_with_partitions(out):
            producer.produce(s.state_topic, value, key=key, partition=partition)
        offsets = raw.next_offsets()
        if isinstance(producer, TransactionalProducer):
            producer.commit(offsets, svc.consumer.group_metadata())
        else:
            producer.flush_and_verify()
            svc.consumer.commit_offsets(offsets)
