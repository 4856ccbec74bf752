"""Environment -> frozen settings, read once at start (SPEC 9), one part per concern.

    kafka.py     brokers, group, topics, guarantee, identity; KAFKA_* passthrough
    batching.py  batch size, in-flight batches (backpressure), message size, decoders
    registry.py  the input format and the schema registry
    engine.py    windows, years, alignment -> EngineParams
    monitor.py   metrics/health HTTP, stall, progress line, log level
    compute.py   Dask: cluster, memory, timeouts, retries, fallback
    fields.py    what the parts share: the environment source, durations, sizes
    load.py      the composite `Settings` and `load_settings`

Each part is a pydantic-settings class; each field names its environment variable in
`alias` and says what it means in `description`: `service.configdoc` renders both
(docs/configuration.md, `sfa run --help`), so the reference cannot drift from the code. A
bad value raises `ConfigError` with one line naming the variable, so the CLI can print it
and exit 2. Every secret (secret-looking KAFKA_* values, the registry password, passwords
inside URLs and composite values) is registered with `service.secrets`, so no rendering,
log line or error shows them.
"""

from __future__ import annotations

from service.settings.batching import BatchSettings
from service.settings.compute import DaskSettings
from service.settings.engine import EngineSettings
from service.settings.fields import MaskedSecret, Part
from service.settings.kafka import KafkaSettings, is_service_link, kafka_variable
from service.settings.load import PARTS, Settings, load_settings
from service.settings.monitor import MonitorSettings
from service.settings.registry import RegistrySettings

__all__ = [
    "PARTS",
    "BatchSettings",
    "DaskSettings",
    "EngineSettings",
    "KafkaSettings",
    "MaskedSecret",
    "MonitorSettings",
    "Part",
    "RegistrySettings",
    "Settings",
    "is_service_link",
    "kafka_variable",
    "load_settings",
]
