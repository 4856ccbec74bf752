"""`sfa replay` as a user runs it: real processes, a real LocalCluster, files on disk."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from service.files.replay import replay
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


def test_reader_process_and_inline_reading_agree(market: Path, tmp_path: Path) -> None:
    """Replay reads and decodes in a helper process when it has a core to spare; the
    output, dead letters and their line numbers must not depend on that."""
    good = market.read_bytes().splitlines()
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(
        b"\n".join(good[:700])
        + b"\n\n  \r\n{oops\r\n"
        + b"\n".join(good[700:1500])
        + b'\n{"symbol":"X.SH","date":"2020-02-30","close":1}\n'
        + b"\n".join(good[1500:])
    )  # no final newline
    zipped = tmp_path / "more.jsonl.gz"
    zipped.write_bytes(gzip.compress(b"\n".join(good[:900]) + b'\n{"symbol":1}\n'))
    csv_file = tmp_path / "bars.csv"
    csv_file.write_text("symbol,date,close\n600000.SH,2021-03-01,10.5\n600000.SH,2021-03-02,x\n")
    files = [str(jsonl), str(zipped), str(csv_file)]
    outputs = {}
    for processes in ("1", "0"):
        out, err = tmp_path / f"r{processes}.jsonl", tmp_path / f"e{processes}.jsonl"
        done = _sfa(
            "replay",
            *files,
            "--output",
            str(out),
            "--errors",
            str(err),
            env={"SFA_DECODE_PROCESSES": processes, "SFA_BATCH_MAX_MESSAGES": "257"},
        )
        assert done.returncode == 0, done.stderr
        outputs[processes] = (out.read_bytes(), err.read_bytes(), done.stderr.splitlines()[-1])
    assert outputs["1"][0] == outputs["0"][0] and outputs["1"][0]
    assert outputs["1"][1] == outputs["0"][1]
    errors = [orjson.loads(x) for x in outputs["1"][1].splitlines()]
    assert [(e["source"]["file"], e["source"]["line"], e["reason"]) for e in errors] == [
        (str(jsonl), 703, "invalid_json"),
        (str(jsonl), 1504, "invalid_field:date"),
        (str(zipped), 901, "missing_field:date"),
        (str(csv_file), 3, "invalid_field:close"),
    ]


def test_a_file_that_breaks_mid_replay_fails_with_one_line(market: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(market.read_bytes())[:200_000])  # truncated stream
    done = _sfa("replay", str(broken), "--output", str(tmp_path / "r.jsonl"))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "broken.jsonl.gz" in done.stderr


def test_reader_process_exits_with_its_parent(market: Path, tmp_path: Path) -> None:
    """A SIGKILLed replay cannot stop its helper; the helper must notice by itself."""
    script = (
        "import sys, time\n"
        "from service.files.source import FileSource\n"
        f"src = FileSource([{str(market)!r}], 10, 1 << 20, read_ahead=1)\n"
        "print(src._proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    helper = int(parent.stdout.readline())
    os.kill(helper, 0)  # alive: blocked on a full pipe
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"helper {helper} outlived its parent")
