"""`sfa replay` of Avro container files (`.avro`): results equal the replay of the same
bars as JSONL, bad bars are dead letters with their record number, and a file cut short
keeps what was read before the break."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from service.wireformat import BAR_SCHEMA

pytestmark = pytest.mark.integration

# A snapshot record: one array of bars, as an end-of-day feed writes it.
SNAPSHOT = {
    "type": "record",
    "name": "Snapshot",
    "fields": [{"name": "bars", "type": {"type": "array", "items": BAR_SCHEMA}}],
}


def _sfa(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DASK_ENABLE_DISTRIBUTED": "false"}
    command = [sys.executable, "-m", "service", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _record(bar: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: bar.get(f["name"]) for f in BAR_SCHEMA["fields"]}


def _last(path: Path) -> dict[str, dict]:
    return {r["symbol"]: r for r in map(orjson.loads, path.read_bytes().splitlines())}


def test_avro_container_files_replay_as_their_jsonl(tmp_path: Path) -> None:
    market = tmp_path / "bars.jsonl"
    made = _sfa(
        "generate", "--symbols", "6", "--start-year", "2017", "--end-year", "2021",
        "--seed", "9", "--output", str(market),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    bars = [orjson.loads(line) for line in market.read_bytes().splitlines()]
    bad = {"symbol": "BAD SYMBOL", "date": "2020-01-02", "close": 1.0}
    singles = tmp_path / "singles.avro"
    with singles.open("wb") as f:
        records = [_record(b) for b in bars[:1000]]
        records.insert(10, _record(bad))
        fastavro.writer(f, fastavro.parse_schema(BAR_SCHEMA), records)
    snapshots = tmp_path / "snapshots.avro"
    rest = bars[1000:]
    with snapshots.open("wb") as f:
        chunks = [rest[i : i + 50] for i in range(0, len(rest), 50)]
        snaps = [{"bars": [_record(b) for b in chunk]} for chunk in chunks]
        fastavro.writer(f, fastavro.parse_schema(SNAPSHOT), snaps)

    want, got = tmp_path / "want.jsonl", tmp_path / "got.jsonl"
    errors = tmp_path / "errors.jsonl"
    assert _sfa("replay", str(market), "--output", str(want)).returncode == 0
    files = [str(singles), str(snapshots)]
    done = _sfa("replay", *files, "--output", str(got), "--errors", str(errors))
    assert done.returncode == 0, done.stderr
    assert _last(got) == _last(want)
    (error,) = map(orjson.loads, errors.read_bytes().splitlines())
    assert error["reason"] == "invalid_field:symbol"
    assert error["source"] == {"file": str(singles), "line": 11, "index": None}

    # Cut short: what was read before the break is replayed, the file is named, exit 3.
    cut = tmp_path / "cut.avro"
    cut.write_bytes(singles.read_bytes()[: singles.stat().st_size // 2])
    done = _sfa("replay", str(cut), "--output", str(tmp_path / "cut.jsonl"))
    assert done.returncode == 3, done.stderr
    assert "cut.avro" in done.stderr and "Traceback" not in done.stderr
    not_avro = tmp_path / "text.avro"
    not_avro.write_text("hello\n")
    done = _sfa("replay", str(not_avro), "--output", str(tmp_path / "x.jsonl"))
    assert done.returncode == 3 and "not an Avro container file" in done.stderr, done.stderr
