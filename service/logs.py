"""Logging: one JSON object per line for the service (log shippers parse it), plain text
for interactive commands.

Secrets never reach a log: settings are logged redacted, and both formatters pass every
finished line through `service.secrets.mask`, which also catches a secret quoted by text
we did not write (a librdkafka line, an exception).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from service.secrets import mask

__all__ = ["JsonFormatter", "PlainFormatter", "setup_logging"]

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return mask(orjson.dumps(data, default=str).decode())


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, then its fields as `key=value` (each cut at 80 characters: a person
        at a terminal reads this; the full values are in the JSON log)."""
        fields = [
            f"{key}={_short(value)}"
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        ]
        line = super().format(record)
        return mask(f"{line} ({', '.join(fields)})" if fields else line)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def setup_logging(level: str = "INFO", json: bool = True) -> None:
    """`level` in any case (`info`); `json` for the service, plain text for commands."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # distributed is chatty at INFO about cluster start/stop; keep its warnings.
    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    adopt_library_loggers()


def adopt_library_loggers() -> None:
    """Route distributed's loggers through ours: on import it gives them a plain-text
    stderr handler of its own and stops propagation, so a line like "Failed to reconnect
    to scheduler" would bypass the JSON log. Called by `setup_logging` and again when
    the compute layer imports distributed (whichever comes second is the one that
    counts)."""
    root = logging.getLogger()
    for name in list(logging.root.manager.loggerDict):
        if name in ("distributed", "tornado") or name.startswith(("distributed.", "tornado.")):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
    logging.getLogger("distributed").setLevel(max(logging.WARNING, root.level))
