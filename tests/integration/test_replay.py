"""`sfa replay` as a user runs it: real processes, a real LocalCluster, files on disk."""

from __future__ import annotations

import asyncio
import datetime as dt
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


@pytest.mark.parametrize("processes", ["0", "1"])
def test_a_file_that_breaks_part_way_keeps_what_was_read(
    market: Path, tmp_path: Path, processes: str
) -> None:
    """Results of the readable part and of the other files are written; the broken file
    is named with its line on one line; exit 3. Same with and without the reader process."""
    data = market.read_bytes()
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(data)[:200_000])  # truncated stream
    other = tmp_path / "other.csv"
    other.write_text("symbol,date,close\nZZ.SH,2021-03-01,10.5\nZZ.SH,2021-03-02,11\n")
    out = tmp_path / "r.jsonl"
    env = {"SFA_DECODE_PROCESSES": processes, "SFA_BATCH_MAX_MESSAGES": "2000"}
    done = _sfa("replay", str(broken), str(other), "--output", str(out), env=env)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "NoneType" not in done.stderr
    named = [line for line in done.stderr.splitlines() if "broken.jsonl.gz" in line]
    assert len(named) == 1, done.stderr
    line = int(named[0].split("broken at line ")[1].split(":")[0])
    assert 1000 < line < len(data.splitlines())
    # exactly what a replay of the readable lines and the other file gives
    readable = tmp_path / "readable.jsonl"
    readable.write_bytes(b"".join(data.splitlines(keepends=True)[: line - 1]))
    want = tmp_path / "want.jsonl"
    clean = _sfa("replay", str(readable), str(other), "--output", str(want), env=env)
    assert clean.returncode == 0, clean.stderr
    assert _last(out) == _last(want) and "ZZ.SH" in _last(out)


def test_a_failed_run_leaves_existing_outputs_untouched(market: Path, tmp_path: Path) -> None:
    prev, errs = tmp_path / "prev.jsonl", tmp_path / "errs.jsonl"
    prev.write_bytes(b"previous results\n")
    errs.write_bytes(b"previous errors\n")
    done = _sfa(
        "replay", str(market), str(tmp_path / "typo.jsonl"), "-o", str(prev), "--errors", str(errs)
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sfa: cannot read input file {tmp_path / 'typo.jsonl'}: no such file"
    ]
    assert prev.read_bytes() == b"previous results\n"
    assert errs.read_bytes() == b"previous errors\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errs.jsonl", "prev.jsonl"]  # no temp


def test_a_good_run_replaces_the_output_keeping_its_mode(market: Path, tmp_path: Path) -> None:
    prev = tmp_path / "prev.jsonl"
    prev.write_bytes(b"previous results\n")
    prev.chmod(0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(prev)
    done = _sfa("replay", str(market), "-o", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and len(_last(prev)) == 30
    assert prev.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "prev.jsonl"]


def test_an_output_that_is_an_input_is_refused(market: Path, tmp_path: Path) -> None:
    bars = tmp_path / "bars.jsonl"
    bars.write_bytes(market.read_bytes()[:100_000].rsplit(b"\n", 1)[0] + b"\n")
    original = bars.read_bytes()
    (tmp_path / "sym.jsonl").symlink_to(bars)
    os.link(bars, tmp_path / "hard.jsonl")
    for flag, target in [
        ("--output", str(bars)),
        ("--output", str(tmp_path / "." / "bars.jsonl")),
        ("--errors", str(tmp_path / "sym.jsonl")),
        ("--output", str(tmp_path / "hard.jsonl")),
    ]:
        done = _sfa("replay", str(bars), flag, target)
        assert done.returncode == 1, (flag, target, done.stderr)
        assert done.stderr.strip().splitlines() == [
            f"sfa: {flag} {target} is also an input file; refusing to write over it"
        ]
        assert bars.read_bytes() == original
    same = _sfa("replay", str(bars), "-o", str(tmp_path / "x"), "--errors", str(tmp_path / "x"))
    assert same.returncode == 1 and "name the same file" in same.stderr
    assert not (tmp_path / "x").exists()


def test_an_unwritable_output_is_one_line(market: Path, tmp_path: Path) -> None:
    for target in [str(tmp_path), str(tmp_path / "no" / "such" / "dir.jsonl")]:
        done = _sfa("replay", str(market), "--output", target)
        assert done.returncode == 1
        assert len(done.stderr.strip().splitlines()) == 1 and target in done.stderr


def test_bad_csv_and_parquet_records_cost_one_dead_letter_each(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        f"S{i % 7}.SH,20{10 + i // 240:02d}-{1 + i // 20 % 12:02d}-{1 + i % 20:02d},{10 + i % 9}"
        for i in range(2400)
    ]
    clean = tmp_path / "clean.csv"
    clean.write_text("symbol,date,close\n" + "\n".join(rows) + "\n")
    dirty = tmp_path / "dirty.csv"
    lines = [b"symbol,date,close", *(r.encode() for r in rows)]
    lines.insert(101, b"\xe9\xe9.SH,2012-01-01,1")  # line 102: not UTF-8
    lines.insert(1501, b'Q.SH,"2013-01-01,1')  # line 1502: a quote that never closes
    dirty.write_bytes(b"\n".join(lines) + b"\n")
    table = pa.table(
        {
            "symbol": [r.split(",")[0] for r in rows],
            "date": [r.split(",")[1] for r in rows],
            "close": [float(r.split(",")[2]) for r in rows],
            "blob": pa.array([b"\x00"] * len(rows), pa.binary()),
            "held": pa.array([dt.timedelta(seconds=1)] * len(rows), pa.duration("s")),
        }
    )
    parquet = tmp_path / "extra.parquet"
    pq.write_table(table, parquet)
    outs = {}
    for name in ("clean.csv", "dirty.csv", "extra.parquet"):
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        done = _sfa("replay", str(tmp_path / name), "-o", str(out), "--errors", str(err))
        assert done.returncode == 0, done.stderr
        outs[name] = (_last(out), [orjson.loads(x) for x in err.read_bytes().splitlines()])
    assert outs["dirty.csv"][0] == outs["clean.csv"][0] == outs["extra.parquet"][0]
    assert outs["clean.csv"][1] == outs["extra.parquet"][1] == []
    assert [(e["reason"], e["source"]["line"]) for e in outs["dirty.csv"][1]] == [
        ("invalid_json", 102),
        ("invalid_json", 1502),
    ]


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


def test_emit_final_writes_one_result_per_symbol(market: Path, tmp_path: Path) -> None:
    """`--emit final` on a local Dask cluster: the end state of each symbol, once, sorted."""
    per_batch = _sfa("replay", str(market), "-o", str(tmp_path / "b.jsonl"), "--no-progress")
    final = _sfa(
        "replay", str(market), "-o", str(tmp_path / "f.jsonl"), "--emit", "final", "--no-progress"
    )
    assert per_batch.returncode == 0 and final.returncode == 0, final.stderr
    assert "30 results (30 ok)" in final.stderr
    lines = (tmp_path / "f.jsonl").read_bytes().splitlines()
    symbols = [orjson.loads(line)["symbol"] for line in lines]
    assert symbols == sorted(set(symbols)) and len(symbols) == 30
    assert {s: orjson.loads(x) for s, x in zip(symbols, lines, strict=True)} == _last(
        tmp_path / "b.jsonl"
    )
