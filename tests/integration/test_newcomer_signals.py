"""Ctrl-C as a terminal sends it: SIGINT to the whole process group of each long-running
command (`start_new_session=True`, then `os.killpg`), so helper processes (the decode
pool, the file reader, Dask workers) get it too. One line, the documented exit code, no
traceback, nothing half written; `sfa produce` says how much the topic got."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.conftest import NewTopicFactory, ServiceTopicsFactory
from tests.integration.kafka_io import produce_keyed
from tests.integration.launcher import Launcher

pytestmark = pytest.mark.integration


def _start(args: list[str], env: dict[str, str], err: Path) -> subprocess.Popen[bytes]:
    with err.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # its own group: killpg reaches every helper, as Ctrl-C
        )


def _interrupt_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 120
) -> int:
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "ended before it could be interrupted"
            assert time.monotonic() < deadline, "never got to the point to interrupt"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class _EndOffset:
    """Records in a one-partition topic written without transactions: its end offset."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
        self._partition = TopicPartition(topic, 0)

    def __call__(self) -> int:
        return int(self._consumer.get_watermark_offsets(self._partition, timeout=10)[1])

    def close(self) -> None:
        self._consumer.close()


def _years(first: int, last: int) -> list[str]:
    return ["--start-year", str(first), "--end-year", str(last)]


def _market(tmp_path: Path, symbols: int, first: int, last: int) -> Path:
    path = tmp_path / "market.jsonl"
    sfa = [sys.executable, "-m", "service"]
    done = subprocess.run(
        [*sfa, "generate", "--symbols", str(symbols), *_years(first, last), "--output", str(path)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert done.returncode == 0
    return path


def test_ctrl_c_on_run_stops_it_gracefully_without_a_traceback(
    kafka_bootstrap: str, service_topics: ServiceTopicsFactory, tmp_path: Path, sfa_run: Launcher
) -> None:
    names = service_topics(1)
    err = tmp_path / "run.err"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SFA_INPUT_TOPIC": names["input"],
        "SFA_OUTPUT_TOPIC": names["output"],
        "SFA_DLQ_TOPIC": names["dlq"],
        "SFA_STATE_TOPIC": names["state"],
        "KAFKA_GROUP_ID": names["group"],
        "SFA_METRICS_PORT": "0",
        "SFA_DECODE_PROCESSES": "1",  # the helper whose traceback a terminal showed
        "SFA_DASK_PROCESSES": "true",  # and a LocalCluster worker process, as on > 2 cores
        "DASK_N_WORKERS": "1",
    }
    # Closed windows to analyse: the LocalCluster starts its worker for the first chunk.
    market = _market(tmp_path, 3, 2015, 2020)
    produce_keyed(kafka_bootstrap, names["input"], market.read_bytes().splitlines())
    proc = sfa_run({**os.environ, **env}, log_path=err, new_session=True)

    def running() -> bool:
        # the decode helper and the Dask worker (which renames itself: not _helpers)
        helpers = 0
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # one that just ended
                helpers += "resource_tracker" not in " ".join(child.cmdline())
        return "state restored" in err.read_text() and helpers >= 2

    proc.wait_for("the service running with its helpers", running, 120, poll=0.05)
    proc.interrupt()
    code = proc.wait(60)
    text = err.read_text()
    assert code == 0, text[-2000:]  # SIGINT is SIGTERM's graceful stop for the service
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert '"msg":"stopped"' in text


def test_ctrl_c_on_replay_is_one_line_and_keeps_the_old_outputs(tmp_path: Path) -> None:
    market = _market(tmp_path, 60, 1995, 2024)
    market.write_bytes(market.read_bytes() * 3)  # corrections: the same result, more work
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    out.write_text("previous results\n")
    errors.write_text("previous errors\n")
    err = tmp_path / "replay.err"
    proc = _start(
        ["replay", str(market), "--output", str(out), "--errors", str(errors)],
        # the file reader helper, and Dask worker processes (the noisiest helpers)
        {"SFA_DECODE_PROCESSES": "1", "SFA_DASK_PROCESSES": "true", "DASK_N_WORKERS": "1"},
        err,
    )

    def writing() -> bool:
        return any(p.name.startswith(".out.jsonl") and p.stat().st_size for p in tmp_path.iterdir())

    code = _interrupt_when(proc, writing)
    assert code == 130
    assert err.read_text().strip().splitlines() == ["sfa: interrupted"]
    assert out.read_text() == "previous results\n"
    assert errors.read_text() == "previous errors\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_ctrl_c_on_produce_says_how_many_messages_the_topic_got(
    kafka_bootstrap: str, new_topic: NewTopicFactory, tmp_path: Path
) -> None:
    topic = new_topic()
    market = _market(tmp_path, 100, 2000, 2024)
    err = tmp_path / "produce.err"
    proc = _start(
        ["produce", str(market), "--topic", topic],
        {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        err,
    )
    end = _EndOffset(kafka_bootstrap, topic)
    try:
        code = _interrupt_when(proc, lambda: end() > 0)
        in_topic = end()
    finally:
        end.close()
    assert code == 130, err.read_text()
    lines = err.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    said = re.fullmatch(
        rf"sfa: interrupted: ([\d,]+) of ([\d,]+) message\(s\) sent to {topic}", lines[0]
    )
    assert said, lines[0]
    sent, total = (int(g.replace(",", "")) for g in said.groups())
    assert total == sum(1 for _ in market.open("rb"))
    assert 0 < sent < total
    assert in_topic == sent


def test_ctrl_c_on_tail_is_one_line_exit_130(
    kafka_bootstrap: str, new_topic: NewTopicFactory, tmp_path: Path
) -> None:
    topic = new_topic()
    bars = tmp_path / "bars.jsonl"
    bars.write_text('{"symbol":"A.SH","date":"2020-01-02","close":1}\n')
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    sent = subprocess.run(
        [sys.executable, "-m", "service", "produce", str(bars), "--topic", topic],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    err = tmp_path / "tail.err"
    proc = _start(["tail", topic, "--from-beginning"], env, err)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # a record printed: it is following the topic now
    assert b'"A.SH"' in first
    code = _interrupt_when(proc, lambda: True)
    assert code == 130
    assert err.read_text().strip().splitlines() == ["sfa: interrupted"]


def test_ctrl_c_on_generate_leaves_no_half_market(tmp_path: Path) -> None:
    target = tmp_path / "m.jsonl"
    target.write_text("previous\n")
    err = tmp_path / "generate.err"
    proc = _start(
        ["generate", "--symbols", "3000", *_years(1990, 2020), "--output", str(target)],
        {},
        err,
    )
    code = _interrupt_when(
        proc, lambda: any(p.name.endswith(".part") and p.stat().st_size for p in tmp_path.iterdir())
    )
    assert code == 130
    assert err.read_text().strip().splitlines() == ["sfa: interrupted"]
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generate.err", "m.jsonl"]
