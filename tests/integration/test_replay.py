"""`sfa replay` as a user runs it: real processes, a real LocalCluster, files on disk."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from service.replay import replay
from service.settings import load_settings

pytestmark = pytest.mark.integration


def _sfa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m") / "bars.jsonl"
    done = _sfa(
        "generate",
        "--symbols",
        "30",
        "--start-year",
        "2012",
        "--end-year",
        "2021",
        "--seed",
        "5",
        "--output",
        str(path),
    )
    assert done.returncode == 0, done.stderr
    return path


def _last(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in path.read_bytes().splitlines():
        result = orjson.loads(line)
        out[result["symbol"]] = result
    return out


def test_replay_runs_on_dask_worker_processes(market: Path, tmp_path: Path) -> None:
    """The Dask path really runs on the workers: they report who executed each chunk."""
    settings = load_settings(
        {
            "SFA_DASK_PROCESSES": "true",
            "DASK_N_WORKERS": "2",
            "DASK_CHUNK_SIZE": "7",
            "SFA_BATCH_MAX_MESSAGES": "3000",
        }
    )
    with open(tmp_path / "r.jsonl", "wb") as results:
        stats, pipeline = asyncio.run(replay([str(market)], settings, results, None))
    assert stats.compute_mode == "local_cluster"
    assert stats.fallback_reason is None
    workers = {w for w in stats.executed_by if w != "local"}
    assert workers and all(w.startswith("tcp://") for w in workers), stats.executed_by
    assert "local" not in stats.executed_by
    assert stats.analysed > 0 and len(pipeline.state) == 30


def test_replay_matches_local_compute_and_reports_errors(market: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = market.read_bytes().splitlines()
    bad_lines = [
        b"{oops",
        orjson.dumps({"symbol": "X.SH", "date": "2020-02-30", "close": 1}),
        orjson.dumps([{"symbol": "Y.SH", "date": "2020-01-02", "close": 0}, orjson.loads(good[0])]),
    ]
    bad.write_bytes(b"\n".join(good[:500] + bad_lines + good[500:]) + b"\n")
    on_dask = _sfa(
        "replay",
        str(bad),
        "--output",
        str(tmp_path / "a.jsonl"),
        "--errors",
        str(tmp_path / "e.jsonl"),
    )
    assert on_dask.returncode == 0, on_dask.stderr
    assert "compute=local_cluster" in on_dask.stderr
    local = _sfa(
        "replay",
        str(market),
        "--output",
        str(tmp_path / "b.jsonl"),
        env={"DASK_ENABLE_DISTRIBUTED": "false"},
    )
    assert local.returncode == 0, local.stderr
    assert _last(tmp_path / "a.jsonl") == _last(tmp_path / "b.jsonl")
    errors = [orjson.loads(x) for x in (tmp_path / "e.jsonl").read_bytes().splitlines()]
    assert [(e["reason"], e["source"]["line"], e["source"]["index"]) for e in errors] == [
        ("invalid_json", 501, None),
        ("invalid_field:date", 502, None),
        ("invalid_field:close", 503, 0),
    ]
    assert errors[0]["raw"] == "{oops"
    assert all(e["source"]["file"] == str(bad) for e in errors)


def test_replay_exit_codes(tmp_path: Path) -> None:
    missing = _sfa("replay", str(tmp_path / "nope.jsonl"), "--output", "-")
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1 and "nope.jsonl" in missing.stderr
    (tmp_path / "x.jsonl").write_text("")
    bad_env = _sfa("replay", str(tmp_path / "x.jsonl"), env={"SFA_WINDOW_DAYS": "500"})
    assert bad_env.returncode == 2
    assert (
        bad_env.stderr.strip().splitlines() == [bad_env.stderr.strip().splitlines()[0]]
        and "SFA_WINDOW_DAYS" in bad_env.stderr
    )
