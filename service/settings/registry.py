"""The input-format part: JSON or the Confluent wire format, and the schema registry the
wire format's schemas come from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SecretStr, field_validator, model_validator

from service import secrets
from service.settings.fields import Part, env

__all__ = ["RegistrySettings"]


class RegistrySettings(Part):
    """What decoding the input needs beyond the bytes: its format and the registry."""

    input_format: Literal["auto", "json", "avro", "protobuf", "jsonschema"] = env(
        "SFA_INPUT_FORMAT",
        "auto",
        "auto: a message starting with byte 0 is the Confluent wire format (schema id, "
        "then Avro, Protobuf or JSON Schema, as the registry says), any other is JSON; "
        "json: JSON only (byte 0 is invalid_json); avro, protobuf, jsonschema: every "
        "message is the wire format with a schema of that kind (anything else is "
        "invalid_avro, invalid_protobuf, invalid_json_schema).",
    )
    schema_registry_url: str | None = env(
        "SFA_SCHEMA_REGISTRY_URL",
        None,
        "Base URL of a Confluent-compatible schema registry (Apicurio: "
        "http://host:port/apis/ccompat/v7); needed for wire-format input; unset with "
        "auto: JSON only.",
        pattern=r"^https?://\S+$",
        allowed="http(s)://host[:port][/path]",
    )
    schema_registry_user: str | None = env(
        "SFA_SCHEMA_REGISTRY_USER",
        None,
        "Basic-auth user for the schema registry; unset: no authentication.",
        allowed="any text",
    )
    schema_registry_password: SecretStr | None = env(
        "SFA_SCHEMA_REGISTRY_PASSWORD",
        None,
        "Basic-auth password for the schema registry (a secret: masked everywhere).",
        allowed="any text",
    )
    schema_registry_connect_seconds: float = env(
        "SFA_SCHEMA_REGISTRY_CONNECT_SECONDS",
        10.0,
        "How long `sfa run` tries to reach the schema registry at start before it exits "
        "with the reason; later outages are retried with backoff for as long as they last.",
        gt=0,
        le=3600,
    )

    @field_validator("schema_registry_url", "schema_registry_user", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("input_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _registry_needed(self) -> RegistrySettings:
        if self.input_format not in ("auto", "json") and self.schema_registry_url is None:
            raise ValueError(
                f"SFA_SCHEMA_REGISTRY_URL: must be set when SFA_INPUT_FORMAT is "
                f"{self.input_format} (the schemas come from the registry)"
            )
        return self

    def redacted(self) -> dict[str, Any]:
        data = self.model_dump()
        if self.schema_registry_password is not None:
            data["schema_registry_password"] = secrets.MASK
        if self.schema_registry_url is not None:
            data["schema_registry_url"] = secrets.mask_composite(self.schema_registry_url)[0]
        return data

    def secret_values(self) -> list[str]:
        found = secrets.mask_composite(self.schema_registry_url or "")[1]
        if self.schema_registry_password is not None:
            found.append(self.schema_registry_password.get_secret_value())
        return found
