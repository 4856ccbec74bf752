"""`sfa`: run | replay | generate | produce | topics | tail | recommend.

Settings are read once, before anything starts; a bad value prints one line naming
the variable and exits 2. Exit codes, for every command:

    0  done (bad records included: they are dead letters, not failures)
    1  nothing (more) could be done: an unreadable input at start, an output that
       cannot be written or that names an input, a missing topic, an unreachable
       broker; one line
    2  bad configuration or arguments; one line naming the variable or flag
    3  incomplete: done except what is named on stderr, one line each (a file
       that broke part way, a line `sfa produce` could not send)
    130  interrupted (Ctrl-C), except `sfa run`: SIGINT is its graceful stop, as SIGTERM
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from service import __version__
from service.errors import ConfigError, SfaError

__all__ = ["main"]

# command -> (module, help). Modules load lazily so `sfa --help` stays fast.
_COMMANDS = {
    "run": ("service.cli.run", "consume bars from Kafka and publish results (the service)"),
    "replay": ("service.cli.replay", "run bar files through the pipeline on a local Dask cluster"),
    "generate": ("service.cli.generate", "write a deterministic synthetic market as JSONL"),
    "produce": ("service.cli.produce", "load bar files into a Kafka topic, keyed by symbol"),
    "topics": ("service.cli.topics", "create the input (and service) topics from the settings"),
    "tail": ("service.cli.tail", "print a topic's committed records as JSON lines"),
    "recommend": ("service.cli.recommend", "sizing advice for a batch analysis (original API)"),
    "plot": ("service.cli.plot", "draw a symbol's aligned yearly paths, mean curve, peak, trough"),
}
_NEEDS_SETTINGS = {"run", "replay", "produce", "topics", "tail"}
# Kafka tools: client configs and brokers are checked before the command starts, so a bad
# KAFKA_* property or an unreachable broker reads the same in each (`sfa run` checks
# both itself, signals taken, waiting SFA_KAFKA_CONNECT_SECONDS).
_KAFKA_TOOLS = {"produce", "topics", "tail"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands; with `only`, just that one gets its full arguments, so running a
    command does not import the others (the Kafka client and Dask cost a second or two)."""
    parser = argparse.ArgumentParser(
        prog="sfa",
        description="Spring Festival alignment of daily stock bars: streaming service and tools. "
        "Configuration comes from the environment (SFA_*, KAFKA_*, DASK_*: docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"sfa {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in _COMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    in_process = argv is not None  # called from Python (tests), not as the `sfa` process
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    mask: set[int | signal.Signals] | None = None
    if first in ("run", "replay"):
        # Before anything starts a thread (importing Dask does): every thread and helper
        # process inherits SIGINT blocked, and one thread of the command takes it
        # (`service.cli.interrupt`); a Ctrl-C before then waits for that thread.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return _main(argv, first)
    finally:
        # An in-process caller gets its signal mask back: left blocked, SIGINT would stay
        # blocked in every process it starts afterwards (they inherit the mask).
        if in_process and mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _main(argv: list[str], first: str | None) -> int:
    args = build_parser(first if first in _COMMANDS else None).parse_args(argv)
    module = importlib.import_module(_COMMANDS[args.command][0])
    try:
        if args.command in _NEEDS_SETTINGS:
            from service.logs import setup_logging
            from service.settings import load_settings

            settings = load_settings()
            # The service logs JSON for collectors; at a terminal, text a person reads.
            json_logs = args.command == "run" and not sys.stderr.isatty()
            setup_logging(settings.monitor.log_level, json=json_logs)
            if args.command in _KAFKA_TOOLS:
                from service.kafka.reach import check_tool

                check_tool(settings.kafka)
            return int(module.run(args, settings))
        return int(module.run(args))
    except ConfigError as exc:
        print(f"sfa: configuration error: {exc}", file=sys.stderr)
        return 2
    except SfaError as exc:
        print(f"sfa: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sfa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
