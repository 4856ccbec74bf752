"""`sfa produce FILE... --topic T`: load bar files into Kafka, keyed by symbol.

The key matters: per-symbol state lives with the partition that carries the symbol,
so every bar of a symbol must land on the same partition (SPEC 1).

Nothing is lost quietly: a line the broker cannot take (larger than the topic's
`max.message.bytes`) is named with its file and line and skipped, the rest is sent,
and the exit code is 3; so is a file that breaks part way. A missing topic is one
line before anything is read (librdkafka alone would wait for it).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

from service.cli.report import EXIT_INCOMPLETE
from service.files.readers import FileFailure, keyed_messages, total_size_hint
from service.kafka.admin import require_topic
from service.kafka.producer import AtLeastOnceProducer, RecordRefused
from service.settings import Settings

__all__ = ["add_arguments", "run"]

_FLUSH_EVERY = 50_000
_SHOWN = 20  # skipped lines named one by one; beyond, a count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSONL, CSV or Parquet bars")
    parser.add_argument(
        "--topic", default=None, help="target topic (default: SFA_INPUT_TOPIC, 'stock-bars')"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Skips:
    """Lines not sent, each with why; delivery callbacks add to it from `poll`/`flush`."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self.undelivered = 0  # of `count`: handed to the producer, refused by the broker

    def add(self, file: str, line: int, why: str) -> None:
        self.count += 1
        if self.count <= _SHOWN:
            print(f"sfa: skipped {file} line {line}: {why}", file=sys.stderr)

    def delivered(self, file: str, line: int, size: int, err: object, _msg: object) -> None:
        if err is None:
            return
        self.undelivered += 1
        code = getattr(err, "name", lambda: "")()
        if code == "MSG_SIZE_TOO_LARGE":
            self.add(file, line, self.too_large(size))
        else:
            self.add(file, line, f"not delivered: {getattr(err, 'str', lambda: err)()}")

    def too_large(self, size: int) -> str:
        limit = (
            f" (max.message.bytes {self.limit:,}, record framing included)" if self.limit else ""
        )
        return f"message of {size:,} bytes is too large for the topic{limit}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    topic = args.topic or settings.input_topic
    limit = require_topic(settings, topic)
    producer = AtLeastOnceProducer(settings, max_message_bytes=limit)
    skips = _Skips(limit)
    failures: list[FileFailure] = []
    bar = None
    if sys.stderr.isatty() and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total_size_hint(args.files), unit="B", unit_scale=True, desc="produce")
    started = time.perf_counter()
    count = 0
    try:
        for m in keyed_messages(args.files, failures):
            size = len(m.value) + len(m.key or b"")
            try:
                producer.produce(
                    topic,
                    m.value,
                    key=m.key,
                    on_delivery=partial(skips.delivered, m.file, m.line, size),
                )
                count += 1
            except RecordRefused:
                skips.add(m.file, m.line, skips.too_large(size))
            if bar is not None:
                bar.update(len(m.value) + 1)
            if count % _FLUSH_EVERY == 0:
                producer.flush_and_verify()
        producer.flush_and_verify()
    finally:
        if bar is not None:
            bar.close()
        producer.close()
    seconds = time.perf_counter() - started
    for failure in failures:
        print(f"sfa: {failure.message()}", file=sys.stderr)
    sent = count - skips.undelivered
    if skips.count > _SHOWN:
        print(f"sfa: ... and {skips.count - _SHOWN} more skipped line(s)", file=sys.stderr)
    print(
        f"produce: {sent} messages to {topic} in {seconds:.1f}s "
        f"({sent / seconds if seconds else 0:,.0f} msg/s), {skips.count} skipped",
        file=sys.stderr,
    )
    if skips.count or failures:
        print(
            "produce: INCOMPLETE: "
            + ", ".join(
                part
                for part in (
                    f"{skips.count} line(s) not sent" if skips.count else "",
                    f"{len(failures)} file(s) not read to the end" if failures else "",
                )
                if part
            ),
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0
