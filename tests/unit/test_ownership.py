"""The service's partitioners against Kafka's own values (SPEC 7).

The murmur2 values are what the Java client's `Utils.murmur2` returns (as published in
other projects' tests of their Kafka-compatible ports); the integration test
`test_ownership_kafka.py` checks many more keys against the Java client and librdkafka.
"""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.ownership import murmur2, owner, partition_of_key

# Utils.murmur2(s.getBytes(UTF_8)) of the Java client, covering every tail length (0-3).
JAVA_MURMUR2 = {
    "1": -1993445489,
    "12": 126087238,
    "123": -267702483,
    "1234": -1614185708,
    "12345": -1188365604,
    "600519.SH": -1807954771,
    "000001.SZ": -623719019,
}


@pytest.mark.parametrize(("text", "expected"), sorted(JAVA_MURMUR2.items()))
def test_murmur2_equals_the_java_client(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def test_murmur2_partition_masks_the_sign_bit_like_the_java_client() -> None:
    # toPositive(-1807954771) = -1807954771 & 0x7fffffff = 339528877; % 8 = 5
    assert partition_of_key(b"600519.SH", 8) == 339528877 % 8
    assert owner("600519.SH", 8) == 5


def test_crc32_is_librdkafkas_consistent_partitioner() -> None:
    assert partition_of_key(b"600519.SH", 7, "crc32") == zlib.crc32(b"600519.SH") % 7


@given(
    st.text(min_size=1, max_size=32), st.integers(1, 1000), st.sampled_from(["murmur2", "crc32"])
)
def test_owner_is_a_partition_and_stable(symbol: str, n: int, partitioner: str) -> None:
    first = owner(symbol, n, partitioner)  # type: ignore[arg-type]
    assert 0 <= first < n
    assert owner(symbol, n, partitioner) == first  # type: ignore[arg-type]
    assert first == partition_of_key(symbol.encode(), n, partitioner)  # type: ignore[arg-type]


def test_one_partition_owns_everything_and_zero_is_refused() -> None:
    assert {owner(f"S{i}", 1) for i in range(50)} == {0}
    with pytest.raises(ValueError, match="partitions"):
        partition_of_key(b"x", 0)
