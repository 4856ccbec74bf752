"""Avro container files (`.avro`) for `sfa replay` and `sfa produce`.

A container file carries its writer schema in its header, so no registry is needed.
Each record becomes one message value, as a Parquet row does: its JSON (dates and bytes
as text; a NaN or infinity as null, so a NaN close is `missing_field:close`, as in
Parquet), and a record holding one array of bars (and no `symbol` of its own) becomes
an array message, as in the wire format (`service.decode.wire.bars_of`). Positions are
record numbers, from 1. A file that is not an Avro container, or breaks part way (a
truncated or corrupt block), stops at the first record not read, as a broken gzip does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fastavro
import orjson

from service.decode.wire import bars_of
from service.errors import InputError
from service.files.breaks import BrokenAt

__all__ = ["avro_records"]

_dumps = orjson.dumps


def _json(record: Any) -> bytes:
    array = bars_of(record)
    return _dumps(record if array is None else array, default=str)


def avro_records(path: str, chunk: int) -> Iterator[tuple[list[bytes], list[int]]]:
    """(message values, record numbers), `chunk` records at a time."""
    with open(path, "rb") as f:
        try:
            reader = fastavro.reader(f)
        except Exception as exc:  # fastavro: ValueError, EOFError, SchemaParseException
            raise BrokenAt(0, InputError(f"not an Avro container file ({exc})")) from exc
        row = 0
        values: list[bytes] = []
        records = iter(reader)
        while True:
            try:
                record = next(records, None)
            except Exception as exc:  # any failure inside a block: corrupt or cut short
                if values:
                    yield values, list(range(row + 1, row + 1 + len(values)))
                    row += len(values)
                raise BrokenAt(row + 1, InputError("truncated or corrupt Avro block")) from exc
            if record is None:
                break
            values.append(_json(record))
            if len(values) >= chunk:
                yield values, list(range(row + 1, row + 1 + len(values)))
                row += len(values)
                values = []
        if values:
            yield values, list(range(row + 1, row + 1 + len(values)))
