"""`sfa produce FILE... --topic T`: load bar files into Kafka, keyed by symbol.

The key matters: per-symbol state lives with the partition that carries the symbol,
so every bar of a symbol must land on the same partition (SPEC 1).
"""

from __future__ import annotations

import argparse
import sys
import time

from service.files.readers import iter_keyed_bars, total_size_hint
from service.kafka.producer import AtLeastOnceProducer
from service.settings import Settings

__all__ = ["add_arguments", "run"]

_FLUSH_EVERY = 50_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSONL, CSV or Parquet bars")
    parser.add_argument(
        "--topic", default=None, help="target topic (default: SFA_INPUT_TOPIC, 'stock-bars')"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings) -> int:
    topic = args.topic or settings.input_topic
    producer = AtLeastOnceProducer(settings)
    bar = None
    if sys.stderr.isatty() and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total_size_hint(args.files), unit="B", unit_scale=True, desc="produce")
    started = time.perf_counter()
    count = 0
    try:
        for key, value in iter_keyed_bars(args.files):
            producer.produce(topic, value, key=key)
            count += 1
            if bar is not None:
                bar.update(len(value) + 1)
            if count % _FLUSH_EVERY == 0:
                producer.flush_and_verify()
        producer.flush_and_verify()
    finally:
        if bar is not None:
            bar.close()
        producer.close()
    seconds = time.perf_counter() - started
    print(
        f"produce: {count} messages to {topic} in {seconds:.1f}s "
        f"({count / seconds if seconds else 0:,.0f} msg/s)",
        file=sys.stderr,
    )
    return 0
