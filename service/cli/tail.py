"""`sfa tail TOPIC`: print a topic's committed records, one JSON object per line.

For looking at what the service wrote (results, dead letters with their `sfa.*`
headers, state records) without a Kafka tool: read_committed, so an aborted
transaction's records never show, and no consumer group is joined or committed.
Each line: key, partition, offset, timestamp (ms), value (JSON as is, otherwise
text), headers. Ends after `--max` records, after `--timeout` seconds without one,
or at Ctrl-C (`sfa: interrupted`, exit 130 as for `tail -f`).
"""

from __future__ import annotations

import argparse
import sys

from service.cli.interrupt import EXIT_INTERRUPTED, Interrupted
from service.kafka.admin import tail_records
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.max is not None and args.max < 1:
        print("sfa: --max must be >= 1", file=sys.stderr)
        return 2
    if args.timeout is not None and args.timeout <= 0:
        print("sfa: --timeout must be > 0", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    with Interrupted() as stop:
        try:
            for line in tail_records(
                settings,
                args.topic,
                from_beginning=args.from_beginning,
                max_records=args.max,
                idle_timeout_s=args.timeout,
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
