"""Bytes -> validated bar columns plus rejects (SPEC 1): the per-message hot path.

- `rules`: the SPEC 1 rules for one bar, which alone decide a reason code.
- `columns`: the columnar check of a batch of parsed dicts (flags rows for `rules`).
- `exact`: orjson parsing, message by message in effect: the reference path.
- `fast`: the msgspec columnar fast path, held to `exact` by property tests.
- `batch`: `decode_batch` / `decode_lines`: fast path first, exact for the rest.
- `pool`: where decoding runs: inline, or in helper processes.
- `types`: `DecodedBatch` and `Reject`, what the stage hands on.
"""

from service.decode.batch import decode_batch, decode_lines
from service.decode.types import DecodedBatch, Reject

__all__ = ["DecodedBatch", "Reject", "decode_batch", "decode_lines"]
