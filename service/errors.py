"""One root error; `retriable` tells retry code what to do without a list of types.

Every message passes through the secret mask (`service.secrets`) when rendered, because
error text is printed to the user and logged, and may quote a value from elsewhere.
"""

from __future__ import annotations

from service.secrets import mask

__all__ = ["ConfigError", "FatalError", "InputError", "RetriableError", "SfaError"]


class SfaError(Exception):
    """Root of every error the service raises on purpose."""

    retriable: bool = False

    def __str__(self) -> str:
        return mask(super().__str__())


class ConfigError(SfaError):
    """A setting is missing or malformed; the message is one line naming the variable."""


class InputError(SfaError):
    """A file or source cannot be read at all (not a bad record: those travel as data)."""


class RetriableError(SfaError):
    """Transient trouble (a broker hiccup, a lost worker): the batch may be tried again."""

    retriable = True


class FatalError(SfaError):
    """The instance must stop (fenced producer, fatal Kafka error); its supervisor restarts it."""
