"""The native code under the Kafka client, named in the service's first log line.

A crash inside librdkafka (or the OpenSSL it carries) leaves a core and no Python
traceback; the backtrace is only readable against the exact builds that were loaded,
so `sfa run` says which ones they were before it does anything else.

confluent-kafka's wheels link OpenSSL statically into librdkafka and export none of its
symbols, so its version is read from the loaded library's own version string (the same
text `OpenSSL_version()` returns). Where librdkafka is a system library linked against a
shared libssl, that library is read instead.
"""

from __future__ import annotations

import functools
import re
import ssl
from pathlib import Path

import confluent_kafka

__all__ = ["native_versions"]

_OPENSSL = re.compile(rb"OpenSSL (\d+\.\d+\.\d+[a-z]?(?:-\w+)?) +\d{1,2} [A-Z][a-z]{2} \d{4}")
_MAPS = Path("/proc/self/maps")


def _loaded_libraries(maps: str) -> list[Path]:
    """Paths of the shared objects mapped into this process, librdkafka's first."""
    fields = (line.split(None, 5) for line in maps.splitlines())
    paths = {f[5] for f in fields if len(f) == 6}  # anonymous mappings have no path
    chosen = [p for p in paths if "librdkafka" in p] + [p for p in paths if "libssl" in p]
    return [Path(p) for p in chosen if p.startswith("/")]


def openssl_version_in(data: bytes) -> str | None:
    """The OpenSSL version string compiled into a binary, if it carries one."""
    found = _OPENSSL.search(data)
    return found.group(1).decode() if found else None


def _librdkafka_openssl() -> str:
    try:
        maps = _MAPS.read_text()
    except OSError:  # not Linux: say so rather than guess
        return "unknown"
    for library in _loaded_libraries(maps):
        try:
            version = openssl_version_in(library.read_bytes())
        except OSError:
            continue
        if version is not None:
            return version
    return "unknown"


@functools.cache
def native_versions() -> dict[str, str]:
    """confluent-kafka, librdkafka and the OpenSSL librdkafka uses (and Python's own)."""
    return {
        "confluent_kafka": str(confluent_kafka.__version__),
        "librdkafka": confluent_kafka.libversion()[0],
        "librdkafka_openssl": _librdkafka_openssl(),
        "python_openssl": ssl.OPENSSL_VERSION,
    }
