"""librdkafka's own log lines (config warnings, broker trouble) go through Python logging.

Left alone, librdkafka prints `%4|...|CONFWARN|...` straight to stderr, which breaks the
service's one-JSON-object-per-line log. With a `logger` in the client config,
confluent-kafka hands each line to that logger when the client is polled.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LIBRDKAFKA_LOGGER", "with_logger"]

LIBRDKAFKA_LOGGER = logging.getLogger("service.kafka.librdkafka")


def with_logger(conf: dict[str, Any]) -> dict[str, Any]:
    """`conf` plus the logger (in place, and returned for chaining)."""
    conf["logger"] = LIBRDKAFKA_LOGGER
    return conf
