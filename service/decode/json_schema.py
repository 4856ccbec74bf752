"""JSON Schema payloads -> Python objects: JSON, valid against the registered schema.

The payload after the 5-byte header is UTF-8 JSON. It is parsed with orjson and checked
against its schema with jsonschema (a validator built once per schema text); a payload
that is not JSON or breaks its schema is `None`, the caller's `invalid_json_schema`.
SPEC 1's rules still apply afterwards: a schema looser than SPEC 1 (a `close` that may
be a string) lets through what SPEC 1 then rejects with its own reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from jsonschema import exceptions as schema_errors
from jsonschema import validators

__all__ = ["decode_json_schema"]

_VALIDATORS: dict[str, Any] = {}
_CACHE_LIMIT = 1_000


def _validator(text: str) -> Any:
    found = _VALIDATORS.get(text)
    if found is None:
        try:
            schema = orjson.loads(text)
            cls = validators.validator_for(schema)
            cls.check_schema(schema)
        except (orjson.JSONDecodeError, schema_errors.SchemaError, TypeError) as exc:
            raise ValueError(f"not a JSON Schema: {exc}") from None
        if len(_VALIDATORS) >= _CACHE_LIMIT:
            _VALIDATORS.clear()
        found = _VALIDATORS[text] = cls(schema)
    return found


def decode_json_schema(
    payloads: Sequence[bytes | memoryview], schema_text: str
) -> list[Any | None]:
    """Each payload parsed and valid against the schema, else None; ValueError when the
    schema itself is invalid."""
    is_valid = _validator(schema_text).is_valid
    out: list[Any | None] = []
    for payload in payloads:
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            out.append(None)
            continue
        out.append(value if is_valid(value) else None)
    return out
