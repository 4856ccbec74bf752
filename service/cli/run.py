"""`sfa run`: the Kafka service (`service.instance.Service`) until SIGTERM.

Everything is configured from the environment; exit 0 after a clean SIGTERM/SIGINT,
3 when Kafka reports the instance fenced or fatally broken (its supervisor restarts
it), 2 for a configuration error (printed by `service.__main__`), 1 when the brokers
cannot be reached.

Before anything starts, every librdkafka client config is built once without brokers
(`check_client_configs`), so a property librdkafka rejects is a configuration error.
Signals are ours from here on: the first SIGTERM/SIGINT asks the service to stop (at any
moment, start-up included); a second one exits at once with one line and no traceback,
for an operator who does not want to wait for in-flight batches (uncommitted work is
read again by whoever owns the partitions next).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from types import FrameType

from service.configdoc import help_epilog
from service.errors import FatalError
from service.instance import Service
from service.kafka.config import check_client_configs
from service.kafka.errors import FencedError
from service.memtrace import start_from_env as start_memtrace
from service.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = help_epilog()


# multiprocessing's resource tracker outlives an instance that was SIGKILLed, removes the
# semaphores the instance could not release, and says so with a plain-text UserWarning
# on the stderr it shares with us: two lines that are not JSON in a JSON log. The
# removal is the whole remedy, so the note is dropped; the tracker is a new interpreter
# started later with our environment, which is how the filter reaches it.
_TRACKER_FILTER = "ignore:resource_tracker:UserWarning"


def _quiet_resource_tracker() -> None:
    present = os.environ.get("PYTHONWARNINGS", "")
    if _TRACKER_FILTER not in present.split(","):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (present, _TRACKER_FILTER)))


def run(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_resource_tracker()
    check_client_configs(settings)
    start_memtrace()
    service = Service(settings)
    _take_signals(service)  # kept until exit: a late signal must not raise a traceback
    try:
        return asyncio.run(service.serve())
    except FencedError as exc:
        log.error(
            "fatal: fenced: %s. Another instance took over transactional id %r: give each "
            "instance its own SFA_INSTANCE_ID (now %r)",
            exc,
            settings.effective_transactional_id,
            settings.instance_id,
        )
        return 3
    except FatalError as exc:
        log.error("fatal: %s", exc)
        return 3


def _take_signals(service: Service) -> None:
    """SIGTERM and SIGINT: the first stops the service, a second exits now."""
    seen: list[int] = []

    def handle(number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if seen:
            os.write(2, f"sfa: second signal ({name}): exiting now\n".encode())
            os._exit(128 + number)
        seen.append(number)
        service.request_stop(f"{name} received; a second signal exits at once")

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, handle)
