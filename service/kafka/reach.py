"""Can the brokers be reached at all? Asked once at start, before any real client exists.

librdkafka never gives up on a broker it cannot reach: it retries, logs, and every call
waits out its own timeout, so a closed port, TLS against a plaintext listener or a wrong
password otherwise show up as a start-up that hangs or fails much later with a generic
timeout. Here one metadata request is retried for `SFA_KAFKA_CONNECT_SECONDS` while the
client's error callback collects librdkafka's own reasons; a failure is one line naming
the bootstrap servers and the most telling reason. Authentication and TLS failures are
final at once: retrying cannot fix a wrong password. librdkafka's own log lines about the
failed attempts are not shown: the verdict says what they say, once.

`check_tool` is the start of every command that talks to Kafka besides the service
(`topics`, `tail`, `produce`): the client configs, then the brokers, with the service's
wording and exit codes, but waiting at most `TOOL_CONNECT_SECONDS` (a command typed at a
terminal should answer quickly; the service may wait out a broker that is restarting).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from service.errors import SfaError
from service.kafka.clientlog import LIBRDKAFKA_LOGGER
from service.kafka.config import admin_config, check_client_configs
from service.settings import KafkaSettings

__all__ = ["TOOL_CONNECT_SECONDS", "BrokerUnreachableError", "check_reachable", "check_tool"]

#: The most a command other than `sfa run` waits for the brokers (SFA_KAFKA_CONNECT_SECONDS
#: when lower).
TOOL_CONNECT_SECONDS = 5.0

# Reasons that say nothing beyond "it failed": used only when nothing better was heard.
_VAGUE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}
_FINAL = {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED}
# librdkafka reports these as transport errors; they are final all the same.
_FINAL_TEXT = ("SSL handshake failed", "SASL", "Authentication", "authentication")


class BrokerUnreachableError(SfaError):
    """The brokers cannot be reached or refuse us; the message names them and why."""


def check_reachable(
    settings: KafkaSettings,
    timeout_s: float | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Return once the brokers answer a metadata request; raise `BrokerUnreachableError`
    after `timeout_s` (default SFA_KAFKA_CONNECT_SECONDS) or at the first final error.

    `stopped` is asked between attempts, so a signal during start-up is not held up.
    """
    limit = settings.kafka_connect_seconds if timeout_s is None else timeout_s
    heard: list[KafkaError] = []  # from the error callback: librdkafka's own reasons
    calls: list[KafkaError] = []  # from the metadata call: mostly "transport failure"
    conf = admin_config(settings)
    conf["error_cb"] = heard.append
    conf["client.id"] = f"sfa-check-{settings.instance_id}"
    log = _Muted()
    conf["logger"] = log
    admin = AdminClient(conf)
    deadline = time.monotonic() + limit
    try:
        while True:
            try:
                admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                if exc.args and isinstance(exc.args[0], KafkaError):
                    calls.append(exc.args[0])
            admin.poll(0.1)  # serves error_cb (and hands queued log lines to the logger)
            final = [e for e in heard + calls if _is_final(e)]
            if stopped():
                return  # the caller is shutting down; it does not need a verdict
            if final or time.monotonic() >= deadline:
                raise BrokerUnreachableError(_verdict(settings, final or heard or calls, limit))
    finally:
        # The client is dropped, not closed (an AdminClient has no close): lines it still
        # queued would surface whenever it is collected, after the verdict, even after a
        # shutdown's last line. What they say, the verdict has said.
        log.muted = True


class _Muted:
    """librdkafka's logger for the check client: DEBUG lines of the service's logger until
    muted. The failed attempts' ERROR lines would only say, two or three times over and
    before it, what the verdict says once; a line queued after the verdict is dropped."""

    def __init__(self) -> None:
        self.muted = False

    def log(self, level: int, msg: str, *args: object) -> None:
        if not self.muted:
            LIBRDKAFKA_LOGGER.debug(msg, *args)


def _is_final(error: KafkaError) -> bool:
    """Retrying cannot fix a wrong protocol, certificate or password."""
    text = error.str()
    return error.code() in _FINAL or any(marker in text for marker in _FINAL_TEXT)


def _verdict(settings: KafkaSettings, errors: list[KafkaError], limit: float) -> str:
    where = f"cannot reach Kafka at {settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)"
    if not errors:
        return f"{where}: no answer within {limit:g} s; is a broker running there?"
    best = next((e for e in errors if e.code() not in _VAGUE), None)
    best = best or next((e for e in errors if e.code() == KafkaError._TRANSPORT), errors[0])
    hint = "" if _is_final(best) else "; is a broker running there?"
    return f"{where}: {_reason(best)}{hint}"


def _reason(error: KafkaError) -> str:
    # librdkafka prefixes the broker's name ("ssl://127.0.0.1:1/bootstrap: "); drop it.
    text = error.str().strip()
    head, sep, rest = text.partition(": ")
    return rest if sep and "/" in head and " " not in head else text


def check_tool(settings: KafkaSettings) -> None:
    """Before a Kafka command other than the service does anything: every client config
    (`ConfigError` naming the variable, exit 2), then the brokers
    (`BrokerUnreachableError`, exit 1) within `TOOL_CONNECT_SECONDS`."""
    check_client_configs(settings)
    check_reachable(settings, min(settings.kafka_connect_seconds, TOOL_CONNECT_SECONDS))
