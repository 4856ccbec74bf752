"""What a committed batch adds to the metrics and the progress line.

Kept out of the shell so the shell only carries out instructions; everything here is
counting, read at scrape time by the probe helper (`service.run.metrics`).
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from service.batches import BatchOutput
from service.kafka.message import KafkaOrigin
from service.run.metrics import Metrics
from service.run.progress import Progress

__all__ = ["Accounting"]


class Accounting:
    def __init__(self, metrics: Metrics, progress: Progress) -> None:
        self._metrics = metrics
        self._progress = progress

    def committed(self, out: BatchOutput[KafkaOrigin]) -> None:
        m = self._metrics
        batch = out.batch
        now_ms = time.time() * 1000.0
        kafka = batch.origin
        if kafka.topics is not None:
            for topic, n in Counter(kafka.topics).items():
                m.messages_consumed(topic, n)
        else:
            m.messages_consumed(kafka.topic, batch.n_messages)
        m.bars_processed(out.n_bars)
        if out.forwards:
            m.bars_forwarded(sum(f.n_bars for f in out.forwards))
        for reject in out.rejects:
            m.dead_letter(reject.reason)
        for status, n in out.statuses.items():
            m.result_produced(status, n)
            m.analyses(status, n)
        m.batch("ok")
        self._progress.batch_committed(batch.n_messages, out.n_bars)
        m.observe_batch(batch.n_messages, time.monotonic() - batch.closed_at)
        if kafka.timestamps_ms:
            stamps = np.asarray(kafka.timestamps_ms, dtype=np.float64)
            m.observe_end_to_end((now_ms - stamps[stamps > 0]) / 1000.0)
