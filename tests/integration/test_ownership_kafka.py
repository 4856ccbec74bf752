"""`service.ownership` against the real partitioners (SPEC 7): the Java client's murmur2
from the broker's own kafka-clients jar, and librdkafka's `murmur2_random` and
`consistent_random` as the broker records them."""

from __future__ import annotations

import os
import random
import shutil
import string
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Producer

from service.ownership import murmur2, owner
from tests.integration.conftest import NewTopicFactory

_REPO = Path(__file__).resolve().parents[2]
_JAVA = """
import org.apache.kafka.common.utils.Utils;
import java.nio.file.*;
public class Murmur { public static void main(String[] a) throws Exception {
  for (String s : Files.readAllLines(Path.of(a[0])))
    System.out.println(Utils.murmur2(s.getBytes(java.nio.charset.StandardCharsets.UTF_8)));
} }
"""


def _symbols(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "._-"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 32))) for _ in range(n)]


def _kafka_libs() -> Path:
    home = Path(os.environ.get("SFA_KAFKA_HOME", _REPO / ".cache" / "kafka"))
    libs = home / "libs"
    if not any(libs.glob("kafka-clients-*.jar")):
        pytest.fail(f"no kafka-clients jar under {libs}: run `make kafka-up` once", pytrace=False)
    return libs


def test_murmur2_equals_the_java_clients_for_random_symbols(tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java, "Java 17 is needed for the broker anyway"
    symbols = _symbols(500, seed=1)
    (tmp_path / "keys.txt").write_text("\n".join(symbols) + "\n", encoding="utf-8")
    (tmp_path / "Murmur.java").write_text(_JAVA, encoding="utf-8")
    out = subprocess.run(
        [
            java,
            "-cp",
            f"{_kafka_libs()}/*",
            str(tmp_path / "Murmur.java"),
            str(tmp_path / "keys.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert [int(v) for v in out.stdout.split()] == [murmur2(s.encode()) for s in symbols]


@pytest.mark.parametrize(
    ("librdkafka", "ours"), [("murmur2_random", "murmur2"), ("consistent_random", "crc32")]
)
def test_owner_is_the_partition_librdkafka_picks(
    kafka_bootstrap: str, new_topic: NewTopicFactory, librdkafka: str, ours: str
) -> None:
    partitions = 7
    topic = new_topic(partitions=partitions)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": librdkafka})
    landed: dict[str, int] = {}

    def record(err: object, msg: object) -> None:
        assert err is None, err
        landed[msg.key().decode()] = msg.partition()  # type: ignore[attr-defined]

    symbols = _symbols(300, seed=2)
    for s in symbols:
        producer.produce(topic, key=s.encode(), value=b"{}", on_delivery=record)
    assert producer.flush(30) == 0
    assert landed == {s: owner(s, partitions, ours) for s in symbols}  # type: ignore[arg-type]
    assert len(set(landed.values())) == partitions  # the test spans every partition
