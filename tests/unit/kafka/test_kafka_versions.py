"""The native builds named in `sfa run`'s first line (service/kafka/versions.py)."""

from __future__ import annotations

import re

import confluent_kafka

from service.kafka.versions import native_versions, openssl_version_in


def test_the_version_string_is_found_inside_a_binary() -> None:
    blob = b"\x00\x7fELF...\x00OpenSSL 3.5.8 25 Aug 2026\x00more\x00OpenSSL 1.1.1w  11 Sep 2023"
    assert openssl_version_in(blob) == "3.5.8"
    assert openssl_version_in(b"OpenSSL 1.1.1w  11 Sep 2023") == "1.1.1w"
    assert openssl_version_in(b"no such text; OpenSSL_version") is None


def test_the_loaded_librdkafka_and_its_openssl_are_named() -> None:
    found = native_versions()
    assert found["librdkafka"] == confluent_kafka.libversion()[0]
    assert found["confluent_kafka"] == confluent_kafka.__version__
    # The wheels link OpenSSL statically into librdkafka: its version is read from there.
    assert re.fullmatch(r"\d+\.\d+\.\d+[a-z]?", found["librdkafka_openssl"]), found
