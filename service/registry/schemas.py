"""Schemas by id for the decode stage: fetched once, kept, retried while unreachable.

An unreachable registry is not bad input: a batch that needs a schema not yet cached
waits, retrying with capped exponential backoff (`backoff_seconds`), and is decoded once
the registry answers; nothing valid is dead-lettered meanwhile. Each failed attempt and
the recovery are reported through `on_state` (the service turns them into /healthz and
a metric). Batches whose ids are all cached never wait: a registry outage only holds up
a schema the service has not seen yet.

An id the registry does not know is answered `None` (the decoder's `unknown_schema`)
and not cached: a schema registered later under that id is found then. A refusal
(`RegistryError`: wrong credentials) is not retried: it stops the service with one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from service.decode.wire import WireSchema
from service.registry.client import RegistryClient, RegistryUnavailableError

__all__ = ["Schemas", "backoff_seconds", "wait_reachable"]

#: `on_state(problem)`: a failed attempt (its one-line reason), or None once it answers.
StateCallback = Callable[[str | None], None]


def backoff_seconds(attempt: int, first: float = 0.25, cap: float = 5.0) -> float:
    """Delay before retry `attempt` (0-based): doubling from `first`, at most `cap`."""
    return min(cap, first * 2.0 ** min(attempt, 30))


class Schemas:
    """`await schemas.resolve(ids)` -> {id: schema or None}; every found schema cached."""

    def __init__(self, client: RegistryClient, on_state: StateCallback | None = None) -> None:
        self._client = client
        self._known: dict[int, WireSchema] = {}
        self._on_state = on_state
        self._down = False

    @property
    def cached(self) -> int:
        return len(self._known)

    async def resolve(self, ids: Iterable[int]) -> dict[int, WireSchema | None]:
        out: dict[int, WireSchema | None] = {}
        for sid in sorted(set(ids)):
            known = self._known.get(sid)
            out[sid] = known if known is not None else await self._fetch(sid)
        return out

    async def _fetch(self, sid: int) -> WireSchema | None:
        attempt = 0
        while True:
            try:
                schema = await asyncio.to_thread(self._client.schema, sid)
            except RegistryUnavailableError as exc:
                self._report(str(exc))
                await asyncio.sleep(backoff_seconds(attempt))
                attempt += 1
                continue
            if self._down:
                self._report(None)
            if schema is not None:
                self._known[sid] = schema
            return schema

    def _report(self, problem: str | None) -> None:
        self._down = problem is not None
        if self._on_state is not None:
            self._on_state(problem)


def wait_reachable(
    client: RegistryClient,
    timeout_s: float,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Return once the registry answers; after `timeout_s` raise the last
    `RegistryUnavailableError` (one line naming the URL and why). A refusal
    (`RegistryError`) is raised at once: retrying cannot fix credentials."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        try:
            client.ping()
            return
        except RegistryUnavailableError:
            if stopped():
                return  # the caller is shutting down; it does not need a verdict
            if time.monotonic() >= deadline:
                raise
        time.sleep(min(backoff_seconds(attempt), max(0.0, deadline - time.monotonic())))
        attempt += 1
