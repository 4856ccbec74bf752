"""The batch contract is held by the types, not by run-time checks: a file batch handed
to the Kafka sink, or to a Kafka pipeline, is a mypy error (what `make lint` runs), and
the right pairings type-check. Checked by running mypy on two small programs."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]

HEADER = """
from service.batches import Batch, BatchOutput, FileOrigin
from service.kafka.message import KafkaOrigin
from service.kafka.sink import KafkaSink
from service.pipeline import Pipeline


async def check(
    sink: KafkaSink,
    kafka_pipeline: Pipeline[KafkaOrigin],
    file_out: BatchOutput[FileOrigin],
    kafka_out: BatchOutput[KafkaOrigin],
    file_batch: Batch[FileOrigin],
    kafka_batch: Batch[KafkaOrigin],
) -> None:
"""

WRONG = """
    sink.write_blocking(file_out)
    await kafka_pipeline.submit(file_batch)
"""

RIGHT = """
    sink.write_blocking(kafka_out)
    await kafka_pipeline.submit(kafka_batch)
"""


def _mypy(tmp_path: Path, body: str) -> tuple[str, int]:
    program = tmp_path / "program.py"
    program.write_text(HEADER + body)
    cache = ROOT / ".mypy_cache"
    out, _, status = api.run(["--cache-dir", str(cache), "--no-error-summary", str(program)])
    return out, status


def test_a_file_batch_for_the_kafka_side_is_a_type_error(tmp_path: Path) -> None:
    out, status = _mypy(tmp_path, WRONG)
    assert status == 1
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 2 and all("[arg-type]" in e for e in errors), out
    assert "BatchOutput[FileOrigin]" in errors[0] and "Batch[FileOrigin]" in errors[1]


def test_kafka_batches_for_the_kafka_side_type_check(tmp_path: Path) -> None:
    out, status = _mypy(tmp_path, RIGHT)
    assert status == 0, out
