"""`sfa run`: the Kafka service (`service.instance.Service`) until SIGTERM.

Everything is configured from the environment; exit 0 after a clean SIGTERM/SIGINT,
3 when Kafka reports the instance fenced or fatally broken (its supervisor restarts
it), 2 for a configuration error (printed by `service.__main__`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from service.errors import FatalError
from service.instance import Service
from service.settings import Settings

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Everything is configured from the environment (SPEC section 9), e.g. "
        "KAFKA_BOOTSTRAP_SERVERS, KAFKA_GROUP_ID, SFA_INPUT_TOPIC, SFA_PROCESSING_GUARANTEE, "
        "SFA_METRICS_PORT, DASK_SCHEDULER_ADDRESS; any KAFKA_SOME_PROPERTY reaches librdkafka "
        "as some.property."
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(Service(settings).serve())
    except FatalError as exc:
        log.error("fatal: %s", exc)
        return 3
