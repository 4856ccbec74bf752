"""Kafka failures as service errors: retry code asks `retriable`, not a list of vendor types.

The classes subclass `service.errors`, so callers that only know the root
error still do the right thing. `classify` reads librdkafka's own verdict
(`fatal()`, `txn_requires_abort()`, `retriable()`) by duck typing, so this
module does not import `confluent_kafka` either.
"""

from __future__ import annotations

from service.errors import FatalError, RetriableError, SfaError

__all__ = [
    "AbortableError",
    "AuthorizationError",
    "DeliveryError",
    "FencedError",
    "KafkaFatalError",
    "KafkaRetriableError",
    "MemberFencedError",
    "MissingTopicError",
    "classify",
]


class AbortableError(RetriableError):
    """The current transaction must be aborted; rewind and retry the batch."""


class KafkaRetriableError(RetriableError):
    """A transient broker or network problem; the same call may succeed later."""


class DeliveryError(RetriableError):
    """At-least-once output was not acknowledged; offsets must not be committed."""


class KafkaFatalError(FatalError):
    """Fenced, fatal or unexpected Kafka state: stop and let the supervisor restart us."""


class FencedError(KafkaFatalError):
    """Another producer with our transactional id (or another member with our instance id)
    took over: almost always two instances sharing one SFA_INSTANCE_ID."""


class MemberFencedError(FencedError):
    """The consumer's group membership was fenced (FENCED_INSTANCE_ID): another member
    joined with our group.instance.id, or, after a coordinator stall, our own abandoned
    rejoin did (KAFKA-20985). `sfa run` joins again once before it calls it fatal."""


# librdkafka's _FENCED, PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, FENCED_INSTANCE_ID; by
# number, because this module does not import confluent_kafka.
_FENCED_CODES = {-144, 90, 47, 82}
_FENCED_INSTANCE_ID = 82
# librdkafka's _FATAL: the event a consumer gets for a fatal error (a static member fenced
# by another with its group.instance.id arrives so), with the cause only in its text.
_FATAL_EVENT = -150


class AuthorizationError(KafkaFatalError):
    """The broker refused the principal a permission. Retrying cannot grant it, so this
    is fatal even where librdkafka calls the transaction merely abortable."""


# TOPIC_, GROUP_, CLUSTER_ and TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
_AUTHORIZATION_CODES = {29, 30, 31, 53}
# Broker errors that go away on their own (leader elections, a coordinator loading, a
# request timing out, the local _TIMED_OUT and _TRANSPORT) but which librdkafka does not
# mark retriable outside the calls it retries itself, e.g. a watermark query just after
# a topic was created.
_TRANSIENT_CODES = {5, 6, 7, 13, 14, 15, 16, 74, 75, -185, -195}


class MissingTopicError(SfaError):
    """A topic that must exist does not (the input, a topic to tail or produce to): exit 1
    in every command, as for anything else that leaves nothing to do, not 2: the
    configuration may be right and the cluster not yet set up."""


def classify(exc: BaseException, doing: str) -> SfaError:
    """Map a `KafkaException` (or anything else) raised while `doing` to a service error.

    Order matters: librdkafka marks fencing as fatal, and an error can be both
    retriable and abortable; the stronger verdict wins. A refused permission is
    stronger than all but fencing: librdkafka calls a transaction the broker refused
    for lack of WRITE abortable, and retrying it would loop forever.
    """
    err = exc.args[0] if exc.args else None
    message = f"{doing}: {err if err is not None else exc}"
    if err is None or not callable(getattr(err, "fatal", None)):
        return KafkaFatalError(message)
    code = err.code() if callable(getattr(err, "code", None)) else None
    fatal_fence = code == _FATAL_EVENT and "fenced" in message.lower()
    if code == _FENCED_INSTANCE_ID or (fatal_fence and "group.instance.id" in message):
        return MemberFencedError(message)
    if code in _FENCED_CODES or fatal_fence:
        return FencedError(message)
    if code in _AUTHORIZATION_CODES:
        return AuthorizationError(message)
    if err.fatal():
        return KafkaFatalError(message)
    if callable(getattr(err, "txn_requires_abort", None)) and err.txn_requires_abort():
        return AbortableError(message)
    if err.retriable() or code in _TRANSIENT_CODES:
        return KafkaRetriableError(message)
    return KafkaFatalError(message)
