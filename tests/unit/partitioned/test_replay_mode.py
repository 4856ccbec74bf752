"""Which replay `sfa replay` runs: the size threshold, `--partitions`, and what conflicts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from service.cli import replay as cli
from service.errors import ConfigError
from service.partitioned.plan import PARTITIONED_MIN_BYTES
from service.settings import load_settings


def _args(files: list[str], **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(files)
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def _sparse(path: Path, size: int) -> str:
    with open(path, "wb") as fh:
        fh.truncate(size)  # a sparse file: the size without the disk
    return str(path)


def test_the_size_threshold_picks_the_mode(tmp_path: Path) -> None:
    on = load_settings({})
    small = _sparse(tmp_path / "small.jsonl", PARTITIONED_MIN_BYTES - 1)
    big = _sparse(tmp_path / "big.jsonl", PARTITIONED_MIN_BYTES)
    assert not cli._partitioned(_args([small]), on)
    assert cli._partitioned(_args([big]), on)
    assert cli._partitioned(_args([small, small]), on)  # the inputs together
    assert not cli._partitioned(_args([big], summary=True), on)  # --summary: one process
    off = load_settings({"DASK_ENABLE_DISTRIBUTED": "false"})
    assert not cli._partitioned(_args([big]), off)
    assert not cli._partitioned(_args([big, str(tmp_path / "missing")]), on)


def test_partitions_decide_over_the_size(tmp_path: Path) -> None:
    on = load_settings({})
    small = _sparse(tmp_path / "small.jsonl", 10)
    big = _sparse(tmp_path / "big.jsonl", PARTITIONED_MIN_BYTES)
    assert cli._partitioned(_args([small], partitions=2), on)
    assert not cli._partitioned(_args([big], partitions=1), on)
    with pytest.raises(ConfigError, match="--partitions must be >= 1"):
        cli._partitioned(_args([small], partitions=0), on)
    with pytest.raises(ConfigError, match="--summary needs"):
        cli._partitioned(_args([small], partitions=3, summary=True), on)


def test_a_directory_of_parts_needs_the_partitioned_replay(tmp_path: Path) -> None:
    small = _sparse(tmp_path / "small.jsonl", 10)
    args = _args([small], output=os.path.join(str(tmp_path), "out") + "/", partitions=1)
    with pytest.raises(ConfigError, match="needs --partitions > 1"):
        cli.run(args, load_settings({}))
    assert not (tmp_path / "out").exists()
