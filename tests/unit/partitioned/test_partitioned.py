"""Partitioned replay, in-process (`run_inline`), against the single-process replay.

The single-process replay (`service.files.replay.replay`, Dask off, no decode helper) is
the oracle: `--emit final` must give the same bytes, results and dead letters, for
markets with the awkward cases (arrays of many symbols, corrections across files and
across blocks, bad records, blank lines, gzip, CSV, Parquet, empty files), cut into
blocks small enough that every file is split many times. `--emit batch`: each
symbol's last result equals its final one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import io
import random
from pathlib import Path
from typing import ClassVar

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import InputError, SfaError
from service.files.replay import replay
from service.partitioned import plan_blocks, run_inline
from service.partitioned.blocks import BlockStatus, read_block, split_by_owner
from service.partitioned.merge import PartDirectory
from service.partitioned.owners import counted_blocks
from service.partitioned.plan import Block, check_inputs
from service.settings import load_settings

SETTINGS = load_settings(
    {
        "DASK_ENABLE_DISTRIBUTED": "false",
        "SFA_DECODE_PROCESSES": "0",
        "SFA_BATCH_MAX_MESSAGES": "37",  # many batches per block, too
        "DASK_CHUNK_SIZE": "3",
    }
)


def _single(paths: list[str], emit: str = "final") -> tuple[bytes, bytes, int]:
    results, errors = io.BytesIO(), io.BytesIO()
    stats, _ = asyncio.run(replay(paths, SETTINGS, results, errors, False, emit))  # type: ignore[arg-type]
    return results.getvalue(), errors.getvalue(), stats.bars


def _partitioned(
    paths: list[str], partitions: int, block_bytes: int, emit: str = "final"
) -> tuple[bytes, bytes, int]:
    results, errors = io.BytesIO(), io.BytesIO()
    totals = run_inline(
        paths,
        SETTINGS,
        results,
        errors,
        emit=emit,
        partitions=partitions,
        block_bytes=block_bytes,
    )
    return results.getvalue(), errors.getvalue(), totals.bars


def _bar(symbol: str, day: dt.date, close: float) -> dict[str, object]:
    return {"symbol": symbol, "date": day.isoformat(), "close": close}


def _market(rng: random.Random, symbols: int, years: int) -> list[bytes]:
    """Weekday bars of `symbols` symbols from 2016, some days as one array line of
    every symbol (a snapshot), some as one line per bar."""
    names = [f"S{i}.SH" for i in range(symbols)]
    prices = {s: 10.0 + i for i, s in enumerate(names)}
    lines: list[bytes] = []
    day = dt.date(2016, 1, 1)
    while day.year < 2016 + years:
        if day.weekday() < 5:
            bars = []
            for s in names:
                prices[s] *= 1 + rng.gauss(0.0003, 0.02)
                bars.append(_bar(s, day, round(prices[s], 4)))
            if rng.random() < 0.3:
                lines.append(orjson.dumps(bars))
            else:
                lines.extend(orjson.dumps(b) for b in bars)
        day += dt.timedelta(days=1)
    return lines


BAD = [
    b'{"symbol":"X","date":"2019-02-30","close":1}',
    b'{"symbol":"X","date":"2019-02-03"}',
    b"not json",
    b'[{"symbol":"Y","date":"2019-02-04","close":2},{"symbol":"Y","close":3}, 7]',
    b"   ",
    b"",
    b'{"symbol":"bad symbol!","date":"2019-02-04","close":2}',
]


def _awkward(rng: random.Random, lines: list[bytes]) -> list[bytes]:
    """Bad records and blank lines sprinkled in; corrections of earlier bars later on."""
    out = list(lines)
    for _ in range(max(1, len(out) // 40)):
        out.insert(rng.randrange(len(out) + 1), rng.choice(BAD))
    for _ in range(max(1, len(out) // 30)):  # a correction: an earlier bar, new close
        src = orjson.loads(rng.choice(lines))
        bar = rng.choice(src) if isinstance(src, list) else src
        bar["close"] = round(float(bar["close"]) * rng.uniform(0.5, 1.5), 4)
        out.insert(rng.randrange(len(out) + 1), orjson.dumps(bar))
    return out


def _write(
    tmp: Path, name: str, lines: list[bytes], crlf: bool = False, last_nl: bool = True
) -> str:
    path = tmp / name
    end = b"\r\n" if crlf else b"\n"
    data = end.join(lines) + (end if lines and last_nl else b"")
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif name.endswith(".csv"):
        rows = ["symbol,date,close"]
        for line in lines:
            try:
                bar = orjson.loads(line)
            except orjson.JSONDecodeError:
                rows.append("oops,,")
                continue
            for b in bar if isinstance(bar, list) else [bar]:
                if isinstance(b, dict):
                    rows.append(f"{b.get('symbol', '')},{b.get('date', '')},{b.get('close', '')}")
        path.write_text("\n".join(rows) + "\n")
    elif name.endswith(".parquet"):
        bars = []
        for line in lines:
            try:
                bar = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            bars += [b for b in (bar if isinstance(bar, list) else [bar]) if isinstance(b, dict)]
        table = pa.table(
            {
                "symbol": [b.get("symbol") for b in bars],
                "date": [b.get("date") for b in bars],
                "close": [b.get("close") for b in bars],
            }
        )
        pq.write_table(table, path, row_group_size=50)
    else:
        path.write_bytes(data)
    return str(path)


def _files(tmp: Path, rng: random.Random, lines: list[bytes], kinds: list[str]) -> list[str]:
    """The lines spread over consecutive files of the given kinds (order kept); JSONL
    sometimes with CRLF endings, sometimes without a newline after the last line."""
    cuts = sorted(rng.randrange(len(lines) + 1) for _ in range(len(kinds) - 1))
    bounds = [0, *cuts, len(lines)]
    return [
        _write(
            tmp,
            f"part{i}{kind}",
            lines[bounds[i] : bounds[i + 1]],
            crlf=rng.random() < 0.25,
            last_nl=rng.random() < 0.75,
        )
        for i, kind in enumerate(kinds)
    ]


KINDS = st.lists(
    st.sampled_from([".jsonl", ".jsonl", ".jsonl.gz", ".csv", ".parquet"]), min_size=1, max_size=4
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10_000),
    symbols=st.integers(1, 7),
    years=st.integers(1, 5),
    kinds=KINDS,
    partitions=st.integers(1, 5),
    block_bytes=st.integers(200, 5000),
)
def test_final_output_is_the_single_process_output(
    tmp_path_factory, seed, symbols, years, kinds, partitions, block_bytes
) -> None:
    tmp = tmp_path_factory.mktemp("m")
    rng = random.Random(seed)
    lines = _awkward(rng, _market(rng, symbols, years))
    paths = _files(tmp, rng, lines, kinds)
    expected = _single(paths)
    got = _partitioned(paths, partitions, block_bytes)
    assert got[2] == expected[2]
    assert got[0] == expected[0]
    assert got[1] == expected[1]


def test_a_larger_market_with_ok_patterns_and_an_empty_file(tmp_path: Path) -> None:
    rng = random.Random(5)
    lines = _awkward(rng, _market(rng, 12, 8))
    paths = _files(tmp_path, rng, lines, [".jsonl", ".jsonl.gz", ".jsonl"])
    paths.insert(1, _write(tmp_path, "empty.jsonl", []))
    expected = _single(paths)
    assert b'"status":"ok"' in expected[0] and expected[1]
    for partitions, block_bytes in ((1, 10_000), (8, 777)):
        assert _partitioned(paths, partitions, block_bytes) == expected


def test_batch_mode_ends_each_symbol_on_its_final_result(tmp_path: Path) -> None:
    rng = random.Random(9)
    lines = _awkward(rng, _market(rng, 6, 6))
    paths = _files(tmp_path, rng, lines, [".jsonl", ".jsonl"])
    final = {orjson.loads(r)["symbol"]: r for r in _single(paths)[0].splitlines()}
    batch, errors, _ = _partitioned(paths, 3, 3000, emit="batch")
    last = {orjson.loads(r)["symbol"]: r for r in batch.splitlines()}
    assert last == final
    assert len(batch.splitlines()) > len(final)  # one result per block that touched it
    assert errors == _single(paths)[1]


def test_a_gzip_that_breaks_keeps_what_was_read(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = _market(rng, 4, 4)
    good = _write(tmp_path, "a.jsonl", lines[: len(lines) // 2])
    whole = gzip.compress(b"\n".join(lines[len(lines) // 2 :]) + b"\n")
    broken = tmp_path / "b.jsonl.gz"
    broken.write_bytes(whole[: len(whole) * 2 // 3])
    results, errors = io.BytesIO(), io.BytesIO()
    totals = run_inline([good, str(broken)], SETTINGS, results, errors, partitions=3)
    expected_results, _, expected_bars = _single([good, str(broken)])
    assert results.getvalue() == expected_results and totals.bars == expected_bars
    [failure] = totals.failures
    assert failure.file == str(broken) and failure.line > 1


def test_ranges_own_every_line_once(tmp_path: Path) -> None:
    """Whatever the cut points, the blocks of a file hold its lines once, in order."""
    lines = [
        orjson.dumps(_bar(f"S{i % 5}", dt.date(2020, 1, 1 + i % 28), 1.0 + i)) for i in range(300)
    ]
    lines[17] = b"x" * 900  # a line longer than a block
    path = _write(tmp_path, "a.jsonl", lines)
    size = Path(path).stat().st_size
    for block_bytes in (50, 333, 1000, size):
        blocks = plan_blocks([path], [size], block_bytes)
        outs = [read_block(b, 1, 7, 1 << 20) for b in blocks]
        assert sum(o["meta"].n_lines for o in outs) == (300 if len(blocks) > 1 else 0)
        assert sum(o["meta"].n_messages for o in outs) == 300
        assert sum(len(o[0]) for o in outs) == 299  # the long line is a dead letter


def test_a_byte_order_mark_counts_only_at_the_start_of_the_file(tmp_path: Path) -> None:
    """A BOM opening a later line is invalid JSON there, as in the single-process
    replay, even when a block starts at that line."""
    first = b'{"symbol":"600000.SH","date":"2021-02-03","close":1.5}\n'
    later = b'\xef\xbb\xbf{"symbol":"600000.SH","date":"2021-02-04","close":1.5}\n'
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + first + later)
    size = path.stat().st_size
    starts_file = read_block(Block(0, 0, str(path), "range", 0, 3), 1, 100, 1 << 20)
    starts_later = read_block(
        Block(1, 0, str(path), "range", 3 + len(first), size), 1, 100, 1 << 20
    )
    assert starts_file["meta"].n_bars == 1 and starts_file["meta"].rejects == []
    assert starts_later["meta"].n_bars == 0
    assert [r[2] for r in starts_later["meta"].rejects] == ["invalid_json"]


def test_split_by_owner_keeps_order_and_uses_every_unique() -> None:
    import numpy as np

    uniques = [f"S{i}" for i in range(20)]
    codes = np.array([i % 20 for i in range(200)][::-1], dtype=np.int32)
    days = np.arange(200, dtype=np.int32)
    pieces = split_by_owner(codes, uniques, days, days.astype(float), 4)
    assert sum(len(p) for p in pieces) == 200
    for p in pieces:
        assert list(p.days) == sorted(p.days)  # file order kept
        assert sorted(set(p.codes.tolist())) == list(range(len(p.uniques)))


def test_no_block_of_a_file_counts_after_its_break() -> None:
    statuses = [
        BlockStatus(0, False),
        BlockStatus(0, True),
        BlockStatus(1, False),
        BlockStatus(0, False),
    ]
    assert counted_blocks(statuses) == [True, True, True, False]


def test_an_output_directory_holds_one_part_per_partition(tmp_path: Path) -> None:
    rng = random.Random(11)
    paths = _files(tmp_path, rng, _awkward(rng, _market(rng, 9, 4)), [".jsonl"])
    expected = _single(paths)[0].splitlines()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_bytes(b"")
    with pytest.raises(SfaError, match="not an empty directory"):
        PartDirectory(str(tmp_path / "taken") + "/")
    parts = PartDirectory(str(tmp_path / "out") + "/")
    run_inline(paths, SETTINGS, parts, None, partitions=3, block_bytes=2000)
    assert not (tmp_path / "out").exists()  # nothing visible before the commit
    parts.commit()
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    got = [line for n in names for line in (tmp_path / "out" / n).read_bytes().splitlines()]
    assert sorted(got) == sorted(expected)
    for n in names:  # each part sorted by symbol, and no symbol in two parts
        symbols = [
            orjson.loads(r)["symbol"] for r in (tmp_path / "out" / n).read_bytes().splitlines()
        ]
        assert symbols == sorted(symbols)
    assert len({orjson.loads(r)["symbol"] for r in got}) == len(got)


def test_parquet_is_read_by_row_group(tmp_path: Path) -> None:
    rng = random.Random(21)
    paths = _files(tmp_path, rng, _awkward(rng, _market(rng, 5, 4)), [".parquet", ".jsonl"])
    sizes, problems, groups = check_inputs(paths)
    assert not problems and groups[0] > 3 and groups[1] == 0
    blocks = plan_blocks(paths, sizes, 1 << 20, groups)
    assert [b.kind for b in blocks].count("rowgroup") == groups[0]
    bad = b'{"symbol":"X","date":"2019-02-30","close":1}'
    table = pq.read_table(paths[0])
    rows = table.to_pylist()
    rows.insert(120, orjson.loads(bad))  # a dead letter in a later row group: row 121
    pq.write_table(pa.Table.from_pylist(rows), paths[0], row_group_size=50)
    expected = _single(paths)
    assert b'"line":121' in expected[1]
    assert _partitioned(paths, 3, 1 << 20) == expected


def test_fsspec_urls_read_as_their_paths(tmp_path: Path) -> None:
    """`file://` URLs (what a worker reads through fsspec, like `s3://`): the same output,
    dead letters naming the URL; a URL that names nothing is one line."""
    rng = random.Random(8)
    kinds = [".jsonl", ".jsonl.gz", ".csv", ".parquet"]
    paths = _files(tmp_path, rng, _awkward(rng, _market(rng, 5, 3)), kinds)
    urls = [Path(p).as_uri() for p in paths]
    expected, expected_errors, _ = _single(paths)
    got, errors, _ = _partitioned(urls, 3, 3000)
    assert got == expected and _single(urls)[0] == expected
    for path, url in zip(paths, urls, strict=True):
        expected_errors = expected_errors.replace(orjson.dumps(path), orjson.dumps(url))
    assert errors == expected_errors and errors
    with pytest.raises(InputError, match="cannot read input file file:///nowhere"):
        run_inline(["file:///nowhere/bars.jsonl"], SETTINGS, io.BytesIO(), None)


class _RemoteFile(AbstractBufferedFile):
    """What s3fs or gcsfs hand out: ranged fetches, no `read1`."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return bytes(self.fs.blobs[self.path][start:end])


class _RemoteFS(AbstractFileSystem):
    protocol = "sfatestremote"
    blobs: ClassVar[dict[str, bytes]] = {}

    def _open(self, path: str, mode: str = "rb", **kwargs: object) -> _RemoteFile:
        return _RemoteFile(self, path, mode, size=len(self.blobs[path]), cache_type="none")

    def info(self, path: str, **kwargs: object) -> dict[str, object]:
        return {"name": path, "size": len(self.blobs[path]), "type": "file"}


def test_a_remote_file_without_read1_reads_like_a_local_one(tmp_path: Path) -> None:
    fsspec.register_implementation(_RemoteFS.protocol, _RemoteFS, clobber=True)
    rng = random.Random(13)
    [path] = _files(tmp_path, rng, _awkward(rng, _market(rng, 4, 3)), [".jsonl"])
    _RemoteFS.blobs[_RemoteFS._strip_protocol("sfatestremote://bars.jsonl")] = Path(
        path
    ).read_bytes()
    url = "sfatestremote://bars.jsonl"
    assert not hasattr(_RemoteFile, "read1")
    expected = _single([path])[0]
    assert _single([url])[0] == expected
    assert _partitioned([url], 2, 2000)[0] == expected
