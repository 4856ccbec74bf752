"""`sfa replay --partitions` on real worker processes, against the single-process replay.

A process LocalCluster (DASK_N_WORKERS=2), and a real `dask scheduler` with `dask worker`
processes (DASK_SCHEDULER_ADDRESS): the same `--emit final` bytes and dead letters as
`--partitions 1`; a worker SIGKILLed mid-run changes nothing; a scheduler killed mid-run
is exit 3, one line, nothing at the output path; a worker that cannot read an input is
exit 2 before any work. The in-process property tests (tests/unit/partitioned/test_partitioned.py)
cover the awkward inputs; these few show Dask runs the same functions the same way.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from distributed import Client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
BAD = b'{"symbol":"X","date":"2019-02-30","close":1}\nnot json\n[{"symbol":"Y","close":2}]\n'


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "SFA_"))}
    env.update(extra)
    return env


def _replay(
    files: list[Path], out: Path, *flags: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(VENV_BIN / "sfa"),
            "replay",
            *map(str, files),
            "--emit",
            "final",
            "-o",
            str(out),
            "--errors",
            str(out.with_suffix(".errors")),
            *flags,
        ],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _generate(path: Path, symbols: int, start: int, end: int) -> None:
    subprocess.run(
        [
            str(VENV_BIN / "sfa"),
            "generate",
            "--symbols",
            str(symbols),
            "--start-year",
            str(start),
            "--end-year",
            str(end),
            "--seed",
            "4",
            "--output",
            str(path),
        ],
        check=True,
        capture_output=True,
        env=_env(),
    )


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three files: JSONL with bad records in it, the same market's corrections gzipped,
    an empty file."""
    tmp = tmp_path_factory.mktemp("market")
    a = tmp / "a.jsonl"
    _generate(a, 60, 2012, 2019)
    lines = a.read_bytes().splitlines(keepends=True)
    a.write_bytes(b"".join(lines[: len(lines) // 2]) + BAD + b"".join(lines[len(lines) // 2 :]))
    corrections = [line.replace(b'"close":', b'"close":1') for line in lines[1000:40000:7]]
    b = tmp / "b.jsonl.gz"
    b.write_bytes(gzip.compress(b"".join(corrections)))
    c = tmp / "c.jsonl"
    c.write_bytes(b"")
    return [a, b, c]


@pytest.fixture(scope="module")
def reference(market: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    out = tmp_path_factory.mktemp("ref") / "single.jsonl"
    done = _replay(market, out, "--partitions", "1", DASK_ENABLE_DISTRIBUTED="false")
    assert done.returncode == 0, done.stderr
    assert "mode=single-process" in done.stderr
    return out.read_bytes(), out.with_suffix(".errors").read_bytes()


def test_a_local_cluster_gives_the_single_process_output(
    market: list[Path], reference: tuple[bytes, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "part.jsonl"
    done = _replay(market, out, "--partitions", "3", "--block-bytes", "500000", DASK_N_WORKERS="2")
    assert done.returncode == 0, done.stderr
    assert "mode=partitioned, workers=2, partitions=3" in done.stderr
    assert (out.read_bytes(), out.with_suffix(".errors").read_bytes()) == reference
    assert reference[1].count(b"\n") == 3 and reference[0].count(b'"status":"ok"') == 60
    # --emit batch: a batch is a block; each symbol's last result is its final one
    batch = tmp_path / "batch.jsonl"
    flags = ("--partitions", "3", "--block-bytes", "500000")
    done = _replay(market, batch, *flags, "--emit", "batch", DASK_N_WORKERS="2")
    assert done.returncode == 0, done.stderr
    last = {orjson.loads(line)["symbol"]: line for line in batch.read_bytes().splitlines()}
    final = {orjson.loads(line)["symbol"]: line for line in reference[0].splitlines()}
    assert last == final and batch.read_bytes().count(b"\n") > 3 * len(final)


def test_the_local_cluster_hands_a_worker_its_next_block_only_when_it_is_free() -> None:
    """Dask's default worker saturation lets a one-thread worker hold a second block
    waiting, which left one of two workers idle for a block's time at the end."""
    from service.compute.partitioned import _client
    from service.settings import load_settings

    with _client(load_settings({}), 1) as (client, mode):
        saturation = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.WORKER_SATURATION
        )
    assert mode == "local_cluster" and saturation == 1.0


# --- a real scheduler and workers ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "dask scheduler not listening"
            time.sleep(0.1)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """`dask scheduler` and two `dask worker --no-nanny` (a killed one stays dead), the
    workers in a directory of their own (so a relative path the driver reads is not theirs)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    elsewhere = tmp_path / "workers"
    elsewhere.mkdir()
    procs = [
        subprocess.Popen(
            [
                str(VENV_BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
    ]
    try:
        _wait_listening(port)
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(VENV_BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--memory-limit",
                        "1GB",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=elsewhere,
                    env=_env(),
                )
            )
        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield address, procs
    finally:
        _stop(procs)


def _start(files: list[Path], out: Path, address: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(VENV_BIN / "sfa"),
            "replay",
            *map(str, files),
            "--emit",
            "final",
            "-o",
            str(out),
            "--errors",
            str(out.with_suffix(".errors")),
            "--partitions",
            "4",
            *flags,
        ],
        env=_env(DASK_SCHEDULER_ADDRESS=address, DASK_CONNECT_TIMEOUT="3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _holder_of_a_block(client: Client, replay: subprocess.Popen[str]) -> str:
    """A worker holding a block's output while the run is still going."""
    while replay.poll() is None:
        for worker, keys in client.has_what().items():
            if any(str(k).startswith("sfa-block-") for k in keys):
                return str(worker)
        time.sleep(0.02)
    raise AssertionError("the replay ended before any block was held")


def test_a_worker_killed_mid_run_changes_nothing(
    market: list[Path],
    reference: tuple[bytes, bytes],
    remote: tuple[str, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    address, _ = remote
    out = tmp_path / "part.jsonl"
    with Client(address, timeout=30) as client:
        pids = client.run(os.getpid)
        replay = _start(market, out, address, "--block-bytes", "300000")
        victim = _holder_of_a_block(client, replay)
        os.kill(pids[victim], signal.SIGKILL)
        _, stderr = replay.communicate(timeout=240)
        assert list(client.scheduler_info(n_workers=-1)["workers"]) != [victim]
        assert victim not in client.scheduler_info(n_workers=-1)["workers"]
    assert replay.returncode == 0, stderr
    assert "compute=remote, mode=partitioned" in stderr
    assert (out.read_bytes(), out.with_suffix(".errors").read_bytes()) == reference


def test_a_lost_scheduler_is_exit_3_and_nothing_written(
    market: list[Path], remote: tuple[str, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    address, procs = remote
    out = tmp_path / "part.jsonl"
    with Client(address, timeout=30) as client:
        replay = _start(market, out, address, "--block-bytes", "300000")
        _holder_of_a_block(client, replay)
        procs[0].kill()  # the scheduler
        _, stderr = replay.communicate(timeout=120)
    assert replay.returncode == 3, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("sfa:")]
    assert len(lines) == 1 and "lost during the replay" in lines[0], stderr
    assert not out.exists() and not out.with_suffix(".errors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part.")]


def test_a_worker_that_cannot_read_an_input_is_exit_2_before_any_work(
    market: list[Path], remote: tuple[str, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    """The driver reads `a.jsonl` relative to its directory; the workers run elsewhere."""
    address, _ = remote
    out = tmp_path / "part.jsonl"
    done = subprocess.run(
        [str(VENV_BIN / "sfa"), "replay", "a.jsonl", "-o", str(out), "--partitions", "2"],
        cwd=market[0].parent,
        env=_env(DASK_SCHEDULER_ADDRESS=address),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("sfa: worker tcp://") and "cannot read input file a.jsonl" in line
    assert not out.exists()


def test_a_file_that_breaks_part_way_is_exit_3_with_the_rest_written(
    market: list[Path], tmp_path: Path
) -> None:
    whole = market[1].read_bytes()
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    files = [market[0], broken]
    single = tmp_path / "single.jsonl"
    expected = _replay(files, single, "--partitions", "1", DASK_ENABLE_DISTRIBUTED="false")
    out = tmp_path / "part.jsonl"
    done = _replay(files, out, "--partitions", "2", "--block-bytes", "500000", DASK_N_WORKERS="2")
    assert expected.returncode == done.returncode == 3, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("sfa:")]
    assert line in expected.stderr and f"input file {broken} broken at line" in line
    assert out.read_bytes() == single.read_bytes()
