"""Avro payloads -> Python objects with fastavro, a whole batch of one schema at a time.

fastavro's schemaless reader is fed one stream holding every payload of a batch that
shares a schema id, so the per-message cost is the C reader's and no per-message
stream is built; the stream position after each record must land exactly on the next
payload's start. When it does not (a truncated payload, one written with another
schema, trailing bytes), the batch falls back to one stream per payload, which finds
the culprits: each is `None`, the caller's `invalid_avro`.

Parsed schemas are cached by their text: the decode helpers receive the text (plain
data), and parsing it costs far more than a batch's lookups.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import fastavro
import orjson

__all__ = ["decode_avro", "parsed_schema"]

_PARSED: dict[str, Any] = {}
_CACHE_LIMIT = 1_000  # schemas; a registry with more live versions than this is unusual


def parsed_schema(text: str) -> Any:
    """The fastavro schema of a registry's schema text (cached); ValueError when invalid."""
    schema = _PARSED.get(text)
    if schema is None:
        try:
            schema = fastavro.parse_schema(orjson.loads(text))
        except (orjson.JSONDecodeError, fastavro.schema.SchemaParseException, TypeError) as exc:
            raise ValueError(f"not an Avro schema: {exc}") from None
        if len(_PARSED) >= _CACHE_LIMIT:
            _PARSED.clear()
        _PARSED[text] = schema
    return schema


def decode_avro(payloads: Sequence[bytes | memoryview], schema_text: str) -> list[Any | None]:
    """Each payload (the bytes after the 5-byte wire header) read with the writer schema;
    `None` for a payload that does not decode to exactly its own bytes."""
    schema = parsed_schema(schema_text)
    read = fastavro.schemaless_reader
    joined = io.BytesIO(b"".join(payloads))
    out: list[Any | None] = []
    end = 0
    try:
        for payload in payloads:
            end += len(payload)
            out.append(read(joined, schema, None))
            if joined.tell() != end:
                break
        else:
            return out
    except Exception:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        pass
    return [_one(read, payload, schema) for payload in payloads]


def _one(read: Any, payload: bytes | memoryview, schema: Any) -> Any | None:
    stream = io.BytesIO(payload)
    try:
        value = read(stream, schema, None)
    except Exception:  # any failure of the reader means the bytes do not fit the schema
        return None
    return value if stream.tell() == len(payload) else None
