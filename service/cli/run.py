"""`sfa run`: the Kafka service (`service.run.Service`) until SIGTERM.

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
import threading
from types import FrameType

from service.cli.interrupt import block_sigint
from service.configdoc import help_epilog
from service.errors import FatalError
from service.kafka.config import check_client_configs
from service.kafka.errors import FencedError, MemberFencedError
from service.memtrace import start_from_env as start_memtrace
from service.run.core import REJOIN_WINDOW_S
from service.run.shell import Service
from service.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = help_epilog()


def run(args: argparse.Namespace, settings: Settings) -> int:
    signals = _Signals()  # first: every thread and process started later inherits its mask
    check_client_configs(settings.kafka)
    start_memtrace()
    service = Service(settings)
    signals.take(service)  # kept until exit: a late signal must not raise a traceback
    try:
        return asyncio.run(service.serve())
    except MemberFencedError as exc:
        log.error(
            "fatal: fenced out of the consumer group twice within %g s: %s. Another "
            "instance joined with group.instance.id %r: give each instance its own "
            "SFA_INSTANCE_ID",
            REJOIN_WINDOW_S,
            exc,
            settings.kafka.instance_id,
        )
        return 3
    except FencedError as exc:
        log.error(
            "fatal: fenced: %s. Another instance took over transactional id %r: give each "
            "instance its own SFA_INSTANCE_ID (now %r)",
            exc,
            settings.kafka.effective_transactional_id,
            settings.kafka.instance_id,
        )
        return 3
    except FatalError as exc:
        log.error("fatal: %s", exc)
        return 3


class _Signals:
    """SIGTERM and SIGINT: the first stops the service, a second exits now.

    A terminal sends Ctrl-C to the whole process group, and a helper process that gets it
    while its interpreter starts (a Dask worker the LocalCluster is spawning) prints a
    KeyboardInterrupt traceback before any of our code can ignore it. So SIGINT is
    blocked here, before any thread exists: every thread started later, and every process
    those threads start, inherits the blocked mask and never sees it, and one thread
    takes it with `sigwait`. SIGTERM stays a plain handler: multiprocessing and Dask stop
    their children with it.
    """

    def __init__(self) -> None:
        self._service: Service | None = None
        self._seen: list[int] = []
        block_sigint()  # quiets and starts the resource tracker first
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)  # for a thread that does not block it
        threading.Thread(target=self._wait, name="sfa-sigint", daemon=True).start()

    def take(self, service: Service) -> None:
        self._service = service
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # whatever ran meanwhile

    def _wait(self) -> None:
        while True:
            self._handle(signal.sigwait({signal.SIGINT}), None)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self._service is None:  # still checking the configuration: nothing to finish
            os.write(2, b"sfa: interrupted\n")
            os._exit(128 + number)
        if self._seen:
            os.write(2, f"sfa: second signal ({name}): exiting now\n".encode())
            os._exit(128 + number)
        self._seen.append(number)
        self._service.request_stop(f"{name} received; a second signal exits at once")
