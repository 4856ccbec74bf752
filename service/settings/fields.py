"""What every part of the settings shares: where the environment comes from, the field
helper whose alias and description the configuration reference renders, and the value
types parsed by libraries (durations, sizes) rather than by hand.

Each part is a pydantic-settings `BaseSettings` read from one environment: `os.environ`,
or the mapping `load_settings` was given (tests pass dicts), set for the duration of one
load by `reading`. The environment source strips values and treats an empty or blank
variable as unset, except on fields marked `not_empty`: an empty group id or topic is a
templating mistake, and falling back to the default could join someone else's group.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Annotated, Any

import pytimeparse2
from pydantic import BeforeValidator, ByteSize, Field, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.errors import ConfigError

__all__ = [
    "Duration",
    "MaskedSecret",
    "Part",
    "check_memory_limit",
    "env",
    "environ",
    "reading",
]

_MIN_MEMORY = 100 * 10**6  # a Dask worker takes about this much before any work
_BYTES = TypeAdapter(ByteSize)
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("sfa_environ", default=None)


@contextlib.contextmanager
def reading(environ: Mapping[str, str]) -> Iterator[None]:
    """Parts built inside read `environ` instead of `os.environ`."""
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def environ() -> Mapping[str, str]:
    """The environment parts are read from now."""
    found = _ENVIRON.get()
    return os.environ if found is None else found


def env(
    alias: str,
    default: Any,
    description: str,
    *,
    allowed: str | None = None,
    not_empty: bool = False,
    **kwargs: Any,
) -> Any:
    """A field read from `alias`; `description` (and `allowed`, when constraints do not say
    it) are the configuration reference's text. `not_empty`: set but empty is an error."""
    extra: dict[str, Any] = {}
    if allowed:
        extra["allowed"] = allowed
    if not_empty:
        extra["not_empty"] = True
    return Field(
        default, alias=alias, description=description, json_schema_extra=extra or None, **kwargs
    )


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


class _Environment(EnvSettingsSource):
    """The variables of one part, stripped; blank ones unset (or refused, when not_empty).
    pydantic-settings' own source reads `os.environ` as it is, where a templated manifest
    leaves `SFA_YEARS=` or `KAFKA_GROUP_ID=` blank; and tests hand in a mapping."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        self._environ = environ()
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found: dict[str, str | None] = {}
        for info in self.settings_cls.model_fields.values():
            alias = info.alias
            raw = self._environ.get(alias) if alias else None
            if alias is None or raw is None:
                continue
            if raw.strip():
                found[alias] = raw.strip()
            elif _extra(info).get("not_empty"):
                raise ConfigError(f"{alias}: must not be empty (unset it to use the default)")
        return found


class Part(BaseSettings):
    """One concern's settings: frozen, read once, every field named by its variable."""

    model_config = SettingsConfigDict(
        frozen=True,
        populate_by_name=True,
        extra="forbid",
        allow_inf_nan=False,
        case_sensitive=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Code (CLI overrides) first, then the environment; no .env file, no secrets dir:
        # the deployment's environment is the one source SPEC 9 names.
        return init_settings, _Environment(settings_cls), *cls.extra_sources(settings_cls)

    @classmethod
    def extra_sources(
        cls, settings_cls: type[BaseSettings]
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Sources beyond the fields' own variables (the Kafka part's passthrough)."""
        return ()

    def redacted(self) -> dict[str, Any]:
        """For logs: every field, secrets as ***."""
        return self.model_dump()

    def secret_values(self) -> list[str]:
        """Every secret in clear: the values `service.secrets.mask` must hide."""
        return []


def _seconds(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    with contextlib.suppress(ValueError):
        return float(value)  # seconds; range and finiteness are the field's to check
    parsed = pytimeparse2.parse(value.strip())
    if parsed is None or isinstance(parsed, bool):
        raise ValueError("expected a duration such as 60, 60s, 500ms or 2m")
    try:
        return float(parsed)
    except OverflowError:
        raise ValueError("expected a duration such as 60, 60s, 500ms or 2m") from None


# Seconds: a number, or a duration with its unit (60, 60s, 500ms, 2m, 1h30m).
Duration = Annotated[float, BeforeValidator(_seconds)]


class MaskedSecret(SecretStr):
    """A composite value (`clientId=x clientSecret=y`) that renders with only its secret
    parts masked, so logs still show the harmless parts an operator needs to debug."""

    def __init__(self, secret_value: str, shown: str) -> None:
        super().__init__(secret_value)
        self._shown = shown

    def _display(self) -> str:
        return self._shown


def _size_bytes(text: str) -> float:
    """Bytes of a size Dask takes: a plain number (2e9) or ByteSize's units (2GB, 512MiB);
    Kubernetes' 2Gi is 2GiB (Dask reads it so); bits are no memory size."""
    try:
        return float(text)
    except ValueError:
        pass
    if text.lower().endswith("bit"):
        raise ValueError("expected auto or a size such as 2GB, 512MiB or 2e9 (bytes)")
    if text[-1:].lower() == "i":
        text += "B"
    try:
        return float(_BYTES.validate_python(text))
    except ValidationError:
        raise ValueError("expected auto or a size such as 2GB, 512MiB or 2e9 (bytes)") from None


def check_memory_limit(value: str) -> str:
    """`auto`, or a size of at least 100MB, kept as written (Dask parses it again)."""
    text = value.strip()
    if text.lower() == "auto":
        return "auto"
    if text.startswith("-"):
        raise ValueError("must be positive: auto or a size such as 2GB")
    size = _size_bytes(text)
    if not math.isfinite(size):
        raise ValueError("expected auto or a size such as 2GB, 512MiB or 2e9 (bytes)")
    if size < _MIN_MEMORY:
        raise ValueError("must be at least 100MB: a Dask worker needs that much to start")
    return text
