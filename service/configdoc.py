"""The configuration reference, generated from the parts of the settings (docs/configuration.md
and the epilog of `sfa run --help`).

Written by hand, such a table drifts from the code the first time someone adds a knob;
generated from the fields' aliases, defaults, constraints and descriptions, it cannot,
and a unit test regenerates it and compares with the committed file.

    .venv/bin/python -m service.configdoc > docs/configuration.md
"""

from __future__ import annotations

import sys
import typing
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.settings import PARTS

__all__ = ["help_epilog", "markdown", "rows"]

_HEADER = """\
# Configuration

Generated from `service/settings/` by `python -m service.configdoc`; do not edit by hand
(`tests/unit/test_config_doc.py` fails when this file and the code disagree).

Everything is read from the environment once, at start. A bad value stops every command
that reads the settings (`run`, `replay`, `produce`, `topics`, `tail`) with one line
naming the variable (exit 2). An empty variable counts as unset, except the names marked
*not empty*, which must be unset or hold a value: an empty group id or topic is a
templating mistake, and falling back to the default could join someone else's consumer
group.

**Internal topics are named per group.** The state topic (`SFA_STATE_TOPIC`) defaults to
`<KAFKA_GROUP_ID>-state`, as the repartition topic defaults to
`<KAFKA_GROUP_ID>-repartition`: a state topic shared by two groups (two input topics, two
deployments on one cluster) let one restore the other's symbols. In 0.1.0 and before, the
default was `sfa-state`; **a service that ran with that default keeps its state by setting
`SFA_STATE_TOPIC=sfa-state`** (the Kubernetes manifests in `deploy/` set it). Without it,
the service starts with an empty state on `<group>-state` and rebuilds only from the
input it reads from now on.

**Two instances on one machine.** Each needs its own `SFA_METRICS_PORT` (or 0); with a
port other than 8000 the default `SFA_INSTANCE_ID` becomes `<host>-<port>`, so the
instances do not fence each other. With `SFA_METRICS_PORT=0` on both, set
`SFA_INSTANCE_ID` instead.

| variable | default | allowed | meaning |
|---|---|---|---|
"""

_FOOTER = """
## librdkafka properties

Any other `KAFKA_SOME_PROPERTY` reaches the Kafka clients as `some.property`
(`KAFKA_SECURITY_PROTOCOL=SASL_SSL` -> `security.protocol`), so TLS and SASL need no
code. A property librdkafka keeps for one kind of client goes to that kind only:
`KAFKA_FETCH_MIN_BYTES` to the consumers, `KAFKA_LINGER_MS` to the producer and the admin
client (librdkafka itself is asked which kind a property is, so its other clients log no
"will be ignored" warning). Each client config is built once at start without brokers:
a property librdkafka does not know, or a value it refuses, is one line naming the
variable (exit 2). What correctness needs is not overridable:
`enable.auto.commit=false`, `isolation.level` read_committed, `enable.idempotence=true`,
`acks=all`.

Values whose name looks secret (`password`, `secret`, `key`, `token`, `credential`,
`jaas`) are never shown: not in logs, errors, metrics or `repr`. Inside composite values
(`KAFKA_SASL_OAUTHBEARER_CONFIG="clientId=sfa clientSecret=..."`) the secret parts are
masked and the rest is shown.

Kubernetes injects service-link variables for a Service whose name starts with `kafka`:
`KAFKA_SERVICE_HOST`, `KAFKA_SERVICE_PORT`, `KAFKA_SERVICE_PORT_<NAME>`, `KAFKA_PORT`,
`KAFKA_PORT_<n>_<TCP|UDP|SCTP>` and its `_PROTO`, `_PORT`, `_ADDR` variants (and the
same after `KAFKA_<NAME>_` for a Service called `kafka-<name>`). They are no librdkafka
properties: `sfa run` ignores them (a DEBUG line names each). The project's own scripts
use `KAFKA_PORT` for the dev broker's port, which is ignored the same way.

## Start-up and signals

`sfa run` tries the brokers for `SFA_KAFKA_CONNECT_SECONDS` and then exits 1 with one
line naming `KAFKA_BOOTSTRAP_SERVERS` and librdkafka's reason (connection refused, name
not resolved); a TLS handshake or SASL failure ends the attempt at once. Until it is
ready, `/readyz` answers 503 with the stage it is in (`{"stage": "connecting to Kafka at
...", "reason": ...}`). SIGTERM and SIGINT are honoured at any moment, start-up
included: the first finishes in-flight batches and exits 0; a second exits at once (exit
128 + the signal's number) with one line and no traceback. `/healthz`, `/readyz` and
`/metrics` never wait on Kafka or Dask and answer within 100 ms whatever the pipeline
does. Every `SFA_PROGRESS_SECONDS` an INFO line reports bars/s, lag, batches and the
Dask fallback. A fenced instance (another one took its transactional id) exits 3, and its
last line says to give each instance its own `SFA_INSTANCE_ID`.

## Dask

Without `DASK_SCHEDULER_ADDRESS`, `sfa run` starts a LocalCluster. It opens no
dashboard unless `SFA_DASK_DASHBOARD_ADDRESS` asks for one (then bound there, and the
address is logged); the HTTP servers distributed cannot do without listen on free
loopback ports only. A refused scheduler port fails (or falls back, per
`SFA_DASK_FALLBACK`) at once instead of after `DASK_CONNECT_TIMEOUT`.

The LocalCluster is set up for a process that runs for months: a scheduler "spans"
extension that records nothing (distributed's keeps every task group a span saw for the
life of the scheduler), the workers' statistical profiler only with the dashboard that
shows it (on a small machine the worker is threaded and the profiler sampled the
service's own loop every 10 ms), and five minutes of host samples instead of an hour.
`DASK_MEMORY_LIMIT` and the memory fractions bound worker processes only: a threaded
worker would measure the whole service's process, its state included, and past the
pause fraction stop running the analyses for good, so it has no limit (the container's
limit bounds that process).

A remote scheduler that serves the service gets the same spans stand-in with
`dask scheduler --preload service.compute.preload`, as the compose and Kubernetes
manifests do (docs/deploy.md).
"""


def _default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "default_text" in extra:
        return str(extra["default_text"])
    value = info.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int):
        return f"{value:_}".replace("_", ",") if value >= 10_000 else str(value)
    return str(value)


def _allowed(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "allowed" in extra:
        return str(extra["allowed"])
    choices = [
        arg
        for arg in _flatten(info.annotation)
        if isinstance(arg, str) and typing.get_origin(arg) is None
    ]
    if choices:
        return ", ".join(f"`{c}`" for c in choices)
    low: Any = None
    high: Any = None
    low_open = high_open = False
    min_len = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, low_open = item.gt, True
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high, high_open = item.lt, True
        elif isinstance(item, annotated_types.MinLen):
            min_len = item.min_length
    kinds = set(_flatten(info.annotation)) - {type(None)}
    if kinds == {bool}:
        return "`true`, `false`"
    durations = {"stall_seconds", "dask_connect_timeout", "dask_tcp_timeout"}
    unit = " (s; or 500ms, 2m)" if info.alias and _field_name(info) in durations else ""
    if low is not None or high is not None:
        left = "" if low is None else f"{_num(low)} {'<' if low_open else '<='} "
        right = "" if high is None else f" {'<' if high_open else '<='} {_num(high)}"
        return f"{left}n{right}{unit}"
    if min_len:
        return "not empty"
    return "see meaning"


def _field_name(info: FieldInfo) -> str:
    return next(name for name, field in _fields() if field is info)


def _fields() -> list[tuple[str, FieldInfo]]:
    """Every field of every part, in the reference's order (Kafka first, Dask last)."""
    return [item for part in PARTS.values() for item in part.model_fields.items()]


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    if typing.get_origin(annotation) in (frozenset, set, list, tuple, dict):
        return [annotation]
    return [leaf for arg in args for leaf in _flatten(arg)]


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return (
        f"{value:_}".replace("_", ",") if isinstance(value, int) and value >= 10_000 else str(value)
    )


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, allowed, meaning) for every environment variable, in field order."""
    table = []
    for _, info in _fields():
        alias = info.alias or ""
        if not alias or alias.startswith("_"):
            continue  # internal fields, filled by load_settings
        table.append((alias, _default(info), _allowed(info), info.description or ""))
    return table


def markdown() -> str:
    lines = [
        f"| `{var}` | {default} | {allowed} | {meaning.replace('|', '/')} |"
        for var, default, allowed, meaning in rows()
    ]
    return _HEADER + "\n".join(lines) + "\n" + _FOOTER


def help_epilog() -> str:
    """The variables with their defaults, for `sfa run --help`."""
    width = max(len(var) for var, *_ in rows())
    lines = ["environment (docs/configuration.md has ranges and meanings):"]
    lines += [f"  {var:<{width}}  {default}" for var, default, _, _ in rows()]
    lines.append("  KAFKA_SOME_PROPERTY" + " " * max(2, width - 17) + "librdkafka's some.property")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown())
