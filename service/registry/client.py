"""The few Confluent-compatible schema-registry calls sfa makes, over `urllib`.

Errors say which kind they are, so callers never inspect HTTP codes: a refused
connection, a timeout or a 5xx is `RegistryUnavailableError` (retriable: the registry
is down or restarting), an unknown id is `None`, anything else (401, 409 incompatible,
422 invalid schema) is `RegistryError` with the registry's own message. Basic-auth
credentials travel in a header built here; the password stays a `SecretStr` until then,
and every error text goes through the secret mask (`SfaError.__str__`).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, cast

from pydantic import SecretStr

from service.decode.wire import SchemaKind, WireSchema
from service.errors import RetriableError, SfaError
from service.settings import RegistrySettings

__all__ = ["RegistryClient", "RegistryError", "RegistryUnavailableError", "client_from_settings"]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_KINDS: dict[str, SchemaKind] = {"AVRO": "AVRO", "JSON": "JSON", "PROTOBUF": "PROTOBUF"}
_NOT_FOUND = {40401, 40403}  # subject not found, schema not found


class RegistryError(SfaError):
    """The registry answered with a refusal (bad credentials, incompatible schema...)."""


class RegistryUnavailableError(RetriableError):
    """The registry cannot be reached or fails on its side; trying again later may work."""


class RegistryClient:
    """Blocking calls with a per-call timeout; callers run them off the event loop."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout_s
        self._auth: str | None = None
        if user is not None:
            secret = password.get_secret_value() if password is not None else ""
            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            self._auth = f"Basic {token}"

    def schema(self, schema_id: int) -> WireSchema | None:
        """The schema registered under `schema_id`, or None when the registry has none."""
        body = self._call("GET", f"/schemas/ids/{schema_id}", missing_ok=True)
        if body is None:
            return None
        kind = _KINDS.get(str(body.get("schemaType") or "AVRO").upper())
        if kind is None:
            raise RegistryError(f"schema {schema_id} has unknown type {body.get('schemaType')!r}")
        return WireSchema(schema_id, kind, str(body["schema"]))

    def register(self, subject: str, text: str, kind: SchemaKind = "AVRO") -> int:
        """Register `text` under `subject` (or find it registered); returns its id."""
        payload: dict[str, Any] = {"schema": text}
        if kind != "AVRO":
            payload["schemaType"] = kind
        body = self._call("POST", f"/subjects/{subject}/versions", payload)
        assert body is not None
        return int(body["id"])

    def set_compatibility(self, subject: str, level: str) -> None:
        """The subject's compatibility rule (Apicurio's default is NONE, Confluent's BACKWARD)."""
        self._call("PUT", f"/config/{subject}", {"compatibility": level})

    def ping(self) -> None:
        """Raise unless the registry answers (a cheap authenticated GET)."""
        self._call("GET", "/subjects")

    def _call(
        self, method: str, path: str, payload: Any = None, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", _CONTENT_TYPE)
        if data is not None:
            request.add_header("Content-Type", _CONTENT_TYPE)
        if self._auth is not None:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_body(exc)
            code = detail.get("error_code")
            if exc.code == 404 and missing_ok and (code in _NOT_FOUND or code is None):
                return None
            message = detail.get("message") or exc.reason
            if exc.code >= 500:
                raise RegistryUnavailableError(
                    f"schema registry at {self.url} failed: HTTP {exc.code} {message}"
                ) from None
            raise RegistryError(
                f"schema registry at {self.url} refused {method} {path}: HTTP {exc.code} {message}"
            ) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailableError(
                f"cannot reach the schema registry at {self.url} (SFA_SCHEMA_REGISTRY_URL): "
                f"{reason}"
            ) from None
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise RegistryUnavailableError(
                f"schema registry at {self.url} answered {method} {path} with no JSON"
            ) from None
        return cast(dict[str, Any], body) if isinstance(body, dict) else {"value": body}


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return {}
    return body if isinstance(body, dict) else {}


def client_from_settings(settings: RegistrySettings) -> RegistryClient | None:
    """The client SFA_SCHEMA_REGISTRY_URL (and its credentials) describe; None when unset."""
    if settings.schema_registry_url is None:
        return None
    return RegistryClient(
        settings.schema_registry_url,
        settings.schema_registry_user,
        settings.schema_registry_password,
    )
