"""What each input file gave: messages, valid bars, and its first rejects in words.

A file from which not one valid bar could be read is almost always the wrong file or
the wrong form (dates as `20180101`, a spreadsheet's column names, gzip data read as
text), not a market whose every bar is bad. Counting its dead letters and exiting 0
hid that; it is a failure of that file instead, named with its first reasons, so the
user sees what to fix without opening the errors file. Batches never span two files
(`service.files.readers`), so a batch's counts are its file's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from service.batches import BatchOutput, FileOrigin
from service.files.breaks import FileFailure

__all__ = ["FileTallies", "FileTally"]

_SHOWN = 3  # rejects quoted per file


@dataclass(slots=True)
class FileTally:
    messages: int = 0
    bars: int = 0
    first: list[str] = field(default_factory=list)  # "line N: reason (hint)"


def _field(raw: bytes, name: str) -> object:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj.get(name) if type(obj) is dict else None


def _keys(raw: bytes) -> list[str]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return [str(k) for k in obj][:6] if type(obj) is dict else []


def describe(reason: str, raw: bytes) -> str:
    """A reject's reason code with what a user needs to fix the input."""
    if reason in ("invalid_field:date", "date_out_of_range"):
        value = _field(raw, "date")
        value = _field(raw, "trade_date") if value is None else value
        return f"{reason} ({orjson.dumps(value).decode()[:40]}; expected YYYY-MM-DD)"
    if reason.startswith("missing_field:"):
        keys = _keys(raw)
        return f"{reason} (fields: {', '.join(keys)})" if keys else reason
    return reason


class FileTallies:
    """Per-file counts, fed each delivered batch output."""

    def __init__(self) -> None:
        self.files: dict[str, FileTally] = {}

    def add(self, out: BatchOutput[FileOrigin]) -> None:
        origin = out.batch.origin
        if not out.batch.n_messages:
            return
        tally = self.files.setdefault(origin.file, FileTally())
        tally.messages += out.batch.n_messages
        tally.bars += out.n_bars
        for reject in out.rejects:
            if len(tally.first) >= _SHOWN:
                break
            line = origin.line_of(reject.index)
            tally.first.append(f"line {line}: {describe(reject.reason, reject.raw)}")

    def unread(self, paths: list[str], failed: set[str]) -> list[FileFailure]:
        """A failure for every file in `paths`, not already in `failed`, whose every record
        was rejected (with the first reasons).

        An empty file is not one: it holds nothing wrong (a day's empty export in a
        backfill is common), and the partitioned replay must give the same answer as this
        one for it. A run whose inputs gave no valid bar at all still fails as a whole
        and replaces no output (`service.cli.replay`)."""
        out: list[FileFailure] = []
        for path in dict.fromkeys(paths):
            tally = self.files.get(path, FileTally())
            if path in failed or tally.bars:
                continue
            if not tally.messages:
                continue
            out.append(
                FileFailure(
                    path,
                    0,
                    f"no valid bar in {tally.messages:,} record(s); first: "
                    + "; ".join(tally.first),
                )
            )
        return out
