"""The batching part: how many messages make a batch, how long it waits, how many batches
may be in flight before fetching pauses, the largest message, and who decodes."""

from __future__ import annotations

from service.settings.fields import Part, env

__all__ = ["BatchSettings"]


class BatchSettings(Part):
    """Batch size, flow control (backpressure) and decoding."""

    batch_max_messages: int = env(
        "SFA_BATCH_MAX_MESSAGES", 20_000, "Messages per batch at most.", ge=1, le=1_000_000
    )
    batch_max_wait_ms: int = env(
        "SFA_BATCH_MAX_WAIT_MS",
        500,
        "How long a batch waits for its first message, in ms.",
        ge=1,
        le=600_000,
    )
    max_inflight_batches: int = env(
        "SFA_MAX_INFLIGHT_BATCHES",
        4,
        "Batches consumed but not yet committed at most; then polling waits for a commit.",
        ge=1,
        le=1000,
    )
    max_message_bytes: int = env(
        "SFA_MAX_MESSAGE_BYTES",
        1_048_576,
        "Larger messages are dead letters (reason too_large).",
        ge=64,
        le=1_000_000_000,
    )
    decode_processes: int | None = env(
        "SFA_DECODE_PROCESSES",
        None,
        "Helper processes that decode batches; unset: one when the machine has a spare core.",
        ge=0,
        le=32,
    )
