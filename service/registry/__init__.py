"""The schema registry: a small typed HTTP client and the per-id schema cache.

- `client`: the Confluent-compatible REST calls sfa needs (schema by id, register,
  compatibility), over the standard library's `urllib`.
- `schemas`: `Schemas`, the cache the decode stage asks before a batch: fetched once
  per id, retried with backoff while the registry is unreachable, reported to health
  and metrics.

Why not `confluent_kafka.schema_registry`: its client would have to live in
`service/kafka/` (the only package allowed to import `confluent_kafka`) although it is
no Kafka code, it needs the `schemaregistry` extra (httpx, authlib, attrs, cachetools),
and its deserializers decode one message at a time; sfa needs four GET/POST/PUT calls
and decodes whole batches itself (`service.decode.wire`).
"""

from service.registry.client import (
    RegistryClient,
    RegistryError,
    RegistryUnavailableError,
    client_from_settings,
)
from service.registry.schemas import Schemas, backoff_seconds

__all__ = [
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailableError",
    "Schemas",
    "backoff_seconds",
    "client_from_settings",
]
