"""`sfa tail TOPIC`: print a topic's committed records, one JSON object per line.

For looking at what the service wrote (results, dead letters with their `sfa.*`
headers, state records) without a Kafka tool: read_committed, so an aborted
transaction's records never show, and no consumer group is joined or committed.
Each line: key, partition, offset, timestamp (ms), value (JSON as is, otherwise
text), headers. Ends after `--max` records, after `--timeout` seconds without one,
or at Ctrl-C (`sfa: interrupted`, exit 130 as for `tail -f`).

With SFA_SCHEMA_REGISTRY_URL set, a wire-format value (Avro, Protobuf, JSON Schema) is
printed decoded (its record as JSON); a value whose schema the registry does not know, or
that does not decode with it, is printed as text like any other non-JSON value.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.cli.interrupt import EXIT_INTERRUPTED, Interrupted
from service.decode.wire import WireSchema, decode_payloads, is_wire, schema_id
from service.kafka.admin import tail_records
from service.registry import RegistryClient, RegistryUnavailableError, client_from_settings
from service.settings import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="TOPIC", help="the topic to read")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record (default: new)"
    )
    parser.add_argument("--max", type=int, default=None, help="stop after N records")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="stop after S seconds without a record (default: wait until Ctrl-C)",
    )


class _WireValues:
    """Decodes wire-format values for printing; schemas fetched once per id."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._schemas: dict[int, WireSchema | None] = {}

    def __call__(self, value: bytes) -> Any:
        if not is_wire(value):
            return None
        sid = schema_id(value)
        if sid not in self._schemas:
            try:
                self._schemas[sid] = self._client.schema(sid)
            except RegistryUnavailableError as exc:
                print(f"sfa: {exc}", file=sys.stderr)
                return None  # shown as text; asked again for the next record
        schema = self._schemas[sid]
        if schema is None:
            return None
        try:
            return decode_payloads(schema, [memoryview(value)[5:]])[0]
        except ValueError:  # a schema the decoder refuses: show the bytes
            return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.max is not None and args.max < 1:
        print("sfa: --max must be >= 1", file=sys.stderr)
        return 2
    if args.timeout is not None and args.timeout <= 0:
        print("sfa: --timeout must be > 0", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    client = client_from_settings(settings.registry)
    with Interrupted() as stop:
        try:
            for line in tail_records(
                settings.kafka,
                args.topic,
                from_beginning=args.from_beginning,
                max_records=args.max,
                idle_timeout_s=args.timeout,
                decode=_WireValues(client) if client is not None else None,
                stopped=lambda: stop.hit,
            ):
                out.write(line + b"\n")
                out.flush()
        except BrokenPipeError:  # `sfa tail T | head`
            return 0
    if stop.hit:  # the usual way to stop following: 130, as `tail -f` does
        print("sfa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
