"""`sfa produce FILE... --topic T`: load bar files into Kafka, as a feed would send them.

By default every record is one symbol's, keyed by it, on the partition that owns it
with the service's partitioner (`SFA_PARTITIONER`), so the service forwards nothing;
`--unkeyed` and `--snapshot` send the other shapes real feeds have (`service.feed`).
Records are stamped with strictly increasing timestamps in line order, so a file's
corrections win in Kafka exactly as in `sfa replay`. Stamping needs the record count
first: the files are read twice (reading is several times faster than sending).

Nothing is lost quietly: a line the broker cannot take (larger than the topic's
`max.message.bytes`) is named with its file and line and skipped, the rest is sent,
and the exit code is 3; so is a file that breaks part way. A missing topic is one
line before anything is read (librdkafka alone would wait for it).

`--format avro|protobuf|jsonschema` writes each bar in the Confluent wire format
instead of JSON: the bar schema of that kind (`service.wireformat`) is registered
under the subject `<topic>-value` of SFA_SCHEMA_REGISTRY_URL, whose compatibility is
set to BACKWARD first (Apicurio's default is NONE). A line the format cannot carry is
named and skipped like a refused one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from functools import partial

from service.cli.interrupt import EXIT_INTERRUPTED, Interrupted
from service.cli.report import EXIT_INCOMPLETE
from service.errors import ConfigError
from service.feed import FeedRecord, keyed_records, snapshot_records, stamps
from service.files.readers import FileFailure, keyed_messages
from service.kafka.admin import TopicShape, require_topic
from service.kafka.producer import AtLeastOnceProducer, RecordRefused
from service.ownership import Partitioner
from service.registry import RegistryClient, client_from_settings
from service.settings import Settings
from service.wireformat import (
    BAR_JSON_SCHEMA_TEXT,
    BAR_PROTO_TEXT,
    BAR_SCHEMA_TEXT,
    AvroBarEncoder,
    BarEncoder,
    JsonSchemaBarEncoder,
    ProtobufBarEncoder,
)

__all__ = ["add_arguments", "run"]

_FLUSH_EVERY = 50_000
_SHOWN = 20  # skipped lines named one by one; beyond, a count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSONL, CSV or Parquet bars")
    parser.add_argument(
        "--topic", default=None, help="target topic (default: SFA_INPUT_TOPIC, 'stock-bars')"
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--unkeyed",
        action="store_true",
        help="send every line as read with no key (the client spreads them over partitions)",
    )
    shape.add_argument(
        "--snapshot",
        action="store_true",
        help="send one unkeyed array per date holding every symbol's bar of that day "
        "(holds the input in memory)",
    )
    parser.add_argument(
        "--format",
        choices=("json", "avro", "protobuf", "jsonschema"),
        default="json",
        help="json (default): lines as read; avro, protobuf, jsonschema: one bar per "
        "message in the Confluent wire format, its schema registered at "
        "SFA_SCHEMA_REGISTRY_URL (subject <topic>-value, compatibility BACKWARD)",
    )
    parser.add_argument(
        "--subject",
        default=None,
        help="registry subject of the schema (default: <topic>-value); one subject holds "
        "one kind of schema, so a topic fed in two wire formats needs a second subject",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Skips:
    """Lines not sent, each with why; delivery callbacks add to it from `poll`/`flush`."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self.undelivered = 0  # of `count`: handed to the producer, refused by the broker
        self.acked = 0  # records the broker acknowledged: what an interrupted run reports

    def add(self, file: str, line: int, why: str) -> None:
        self.count += 1
        if self.count <= _SHOWN:
            print(f"sfa: skipped {file} line {line}: {why}", file=sys.stderr)

    def delivered(self, file: str, line: int, size: int, err: object, _msg: object) -> None:
        if err is None:
            self.acked += 1
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


def _records(
    args: argparse.Namespace,
    partitions: int,
    partitioner: Partitioner,
    limit: int | None,
    failures: list[FileFailure],
) -> Iterator[FeedRecord]:
    """The records to send, in the order they are stamped; `failures` gets broken files."""
    messages = ((m.value, m.file, m.line) for m in keyed_messages(args.files, failures))
    if args.snapshot:
        arrays, leftovers = snapshot_records(messages, limit)
        yield from leftovers
        yield from arrays
        return
    yield from keyed_records(messages, partitions, partitioner, keyed=not args.unkeyed)


def _registry(args: argparse.Namespace, settings: Settings) -> RegistryClient | None:
    """The registry `--format` needs (checked before anything is read or sent)."""
    fmt = args.format
    if fmt == "json":
        return None
    if args.snapshot:
        raise ConfigError(f"--format {fmt} sends one bar per message; --snapshot is JSON only")
    client = client_from_settings(settings.registry)
    if client is None:
        raise ConfigError(f"SFA_SCHEMA_REGISTRY_URL: must be set for --format {fmt}")
    return client


def _encoder(
    args: argparse.Namespace, client: RegistryClient | None, topic: str
) -> BarEncoder | None:
    """The wire-format encoder `--format` asks for, its schema registered; None for JSON."""
    fmt = args.format
    if client is None:
        return None
    subject = args.subject or f"{topic}-value"
    client.set_compatibility(subject, "BACKWARD")
    if fmt == "avro":
        return AvroBarEncoder(client.register(subject, BAR_SCHEMA_TEXT))
    if fmt == "protobuf":
        return ProtobufBarEncoder(client.register(subject, BAR_PROTO_TEXT, "PROTOBUF"))
    return JsonSchemaBarEncoder(client.register(subject, BAR_JSON_SCHEMA_TEXT, "JSON"))


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = _registry(args, settings)  # its settings are checked before Kafka is asked
    topic = args.topic or settings.kafka.input_topic
    shape = require_topic(settings.kafka, topic)
    encoder = _encoder(args, client, topic)
    with Interrupted() as stop:
        return _send(args, settings, topic, shape, encoder, stop)


def _send(
    args: argparse.Namespace,
    settings: Settings,
    topic: str,
    shape: TopicShape,
    encoder: BarEncoder | None,
    stop: Interrupted,
) -> int:
    """Count, then send; Ctrl-C (`stop.hit`) ends either pass between two records."""
    limit = shape.max_message_bytes
    total = 0
    for _ in _records(args, shape.partitions, settings.kafka.partitioner, limit, []):
        total += 1
        if stop.hit:  # still counting: say so, as a later Ctrl-C says how far it got
            print(f"sfa: interrupted: nothing sent to {topic}", file=sys.stderr)
            return EXIT_INTERRUPTED
    producer = AtLeastOnceProducer(settings.kafka, max_message_bytes=limit)
    skips = _Skips(limit)
    failures: list[FileFailure] = []
    bar = None
    if sys.stderr.isatty() and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="msg", unit_scale=True, desc="produce")
    started = time.perf_counter()
    count = 0
    stamp = iter(stamps(total, int(time.time() * 1000)))
    try:
        for m in _records(args, shape.partitions, settings.kafka.partitioner, limit, failures):
            if stop.hit:
                break
            size = len(m.value) + len(m.key or b"")
            # Every record takes its stamp, sent or not, so the order never depends on skips;
            # a file that grew between the passes takes the last stamp for its extra records.
            timestamp = next(stamp, None)
            value: bytes | str = m.value if encoder is None else encoder.encode(m.value)
            if isinstance(value, str):
                skips.add(m.file, m.line, f"cannot be written as {args.format}: {value}")
                if bar is not None:
                    bar.update(1)
                continue
            try:
                producer.produce(
                    topic,
                    value,
                    key=m.key,
                    partition=m.partition,
                    timestamp_ms=timestamp,
                    on_delivery=partial(skips.delivered, m.file, m.line, size),
                )
                count += 1
            except RecordRefused:
                skips.add(m.file, m.line, skips.too_large(size))
            if bar is not None:
                bar.update(1)
            if count % _FLUSH_EVERY == 0:
                producer.flush_and_verify()
        if stop.hit:
            # Ctrl-C: what was handed to the client is delivered (for a few seconds at
            # most) and counted, so the user knows where the topic stands.
            producer.close(timeout_s=5.0)
            if bar is not None:
                bar.close()
            print(
                f"sfa: interrupted: {skips.acked:,} of {total:,} message(s) sent to {topic}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
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
