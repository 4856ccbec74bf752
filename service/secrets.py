"""What counts as a secret, and the process-wide mask that keeps secrets out of any text.

Wrapping secret settings in `SecretStr` protects renderings of the settings, but a secret
can still reach a log line or an error through text we did not write: librdkafka echoing
a value, an exception message, a composite property such as
`sasl.oauthbearer.config="clientId=x clientSecret=y"` whose key does not look secret.
So every secret value met while reading the settings is registered here once, and the log
formatters and `SfaError.__str__` pass their text through `mask`. This module imports
nothing of the service, so every other module may use it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable

__all__ = ["MASK", "is_secret_name", "mask", "mask_composite", "register"]

MASK = "***"

_SECRET_NAME = re.compile(r"password|passwd|secret|key|token|credential|jaas", re.IGNORECASE)
# `name=value` or `name: value` pairs inside a composite value (OAuth config, JAAS lines).
_PAIR = re.compile(
    r"(?P<name>[A-Za-z0-9_.\-]*(?:password|passwd|secret|token|credential|key)[A-Za-z0-9_.\-]*)"
    r"(?P<sep>\s*[=:]\s*)(?P<quote>[\"']?)(?P<value>[^\s,;\"'&]+)",
    re.IGNORECASE,
)
# Credentials inside a URL: scheme://user:password@host.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^\s:/@]+:)(?P<value>[^\s@/]+)(?=@)")
# Shorter values would mask ordinary text; nobody's password is two characters long.
_MIN_LEN = 3

_lock = threading.Lock()
_forms: list[str] = []


def is_secret_name(name: str) -> bool:
    """A setting or property whose whole value is secret (`sasl.password`, `ssl.key.pem`)."""
    return bool(_SECRET_NAME.search(name))


def mask_composite(text: str) -> tuple[str, list[str]]:
    """`text` with the secret parts of its `name=value` pairs and URL passwords masked,
    and the secret parts found (empty when the value holds no secret)."""
    found: list[str] = []

    def pair(match: re.Match[str]) -> str:
        found.append(match.group("value"))
        return f"{match.group('name')}{match.group('sep')}{match.group('quote')}{MASK}"

    def url(match: re.Match[str]) -> str:
        found.append(match.group("value"))
        return f"{match.group('head')}{MASK}"

    masked = _URL_PASSWORD.sub(url, _PAIR.sub(pair, text))
    return masked, found


def register(values: Iterable[str]) -> None:
    """Remember secret values; from now on `mask` hides them (and their JSON-escaped form)."""
    with _lock:
        known = set(_forms)
        for value in values:
            if len(value) < _MIN_LEN:
                continue
            for form in (value, json.dumps(value)[1:-1]):
                if form not in known:
                    known.add(form)
                    _forms.append(form)
        _forms.sort(key=len, reverse=True)  # a secret containing another is masked whole


def mask(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    with _lock:
        forms = tuple(_forms)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text
