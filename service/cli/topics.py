"""`sfa topics create | delete`: the topics of a first run, from the settings' names.

The dev broker (like many production ones) does not create topics on first use,
and `sfa run` creates only its own output topics, shaped like an input that must
already exist. This makes the input topic (and, with `--all`, the output,
dead-letter, compacted state and repartition topics exactly as `sfa run` would), so a
first run needs nothing but `sfa`, and a service without CREATE finds them all.
Idempotent: a topic that exists with the asked partition count is fine; another count
is one line, exit 1 (the count decides which instance owns which symbols, so it is
never changed here).

`delete` is the way back to a clean start (the quickstart's "again from scratch"): the
same topics as `create` names, refused without `--yes`, since the state topic is the
only copy of the service's state.
"""

from __future__ import annotations

import argparse
import sys

from service.kafka.admin import create_topics, delete_topics, topic_plans
from service.settings import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create SFA_INPUT_TOPIC (and with --all the service's topics) if missing",
        description="create SFA_INPUT_TOPIC (and with --all the service's topics) if missing",
    )
    create.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="partition count (default 1; the unit of "
        "parallelism: at most this many `sfa run` instances share the work)",
    )
    create.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="replicas per partition (default: the broker's default.replication.factor)",
    )
    create.add_argument(
        "--all",
        action="store_true",
        help="also SFA_OUTPUT_TOPIC, SFA_DLQ_TOPIC, SFA_STATE_TOPIC (compacted) and "
        "SFA_REPARTITION_TOPIC",
    )

    delete = actions.add_parser(
        "delete",
        help="delete SFA_INPUT_TOPIC (and with --all the service's topics): start again clean",
        description="delete SFA_INPUT_TOPIC (and with --all the service's topics, its state "
        "included); refused without --yes. Stop every `sfa run` of the group first.",
    )
    delete.add_argument(
        "--all",
        action="store_true",
        help="also SFA_OUTPUT_TOPIC, SFA_DLQ_TOPIC, SFA_STATE_TOPIC, SFA_REPARTITION_TOPIC",
    )
    delete.add_argument("--yes", action="store_true", help="really delete them")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "delete":
        return _delete(args, settings)
    if args.partitions < 1:
        print("sfa: --partitions must be >= 1", file=sys.stderr)
        return 2
    if args.replication_factor is not None and args.replication_factor < 1:
        print("sfa: --replication-factor must be >= 1", file=sys.stderr)
        return 2
    plans = topic_plans(settings.kafka, service_topics=args.all)
    done = create_topics(settings.kafka, plans, args.partitions, args.replication_factor)
    for (name, status), plan in zip(done, plans, strict=True):
        print(f"topics: {name} ({plan.variable}): {status}, {args.partitions} partition(s)")
    return 0


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    """Deleting loses data, so it names what it would delete and asks for --yes."""
    plans = topic_plans(settings.kafka, service_topics=args.all)
    if not args.yes:
        names = ", ".join(plan.name for plan in plans)
        print(f"sfa: would delete {names}; add --yes to delete them", file=sys.stderr)
        return 2
    for (name, status), plan in zip(delete_topics(settings.kafka, plans), plans, strict=True):
        print(f"topics: {name} ({plan.variable}): {status}")
    return 0
