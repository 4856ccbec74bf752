"""`GET /symbols/{symbol}`: one symbol's latest result, asked of the instance that holds it.

A desk that wants one signal should not have to read the output topic. The instance
answers from its own latest-result map (the SPEC 6 JSON it committed last for each
symbol it holds); for any other symbol it says which input partition owns it (SPEC 7:
`owner(s) = P(s) mod N`), so the caller can find the instance holding that partition.

`SymbolQueries` is the decision, with the map behind a `lookup` function, so it is
tested without a broker or an HTTP server. It runs in the service process, behind a
loopback HTTP server: the probe helper (`service.run.probes`) owns the public port but
cannot hold every result, so it forwards the request and serves whatever this answers,
or 503 when no answer comes in time.

    200  the result's JSON, byte for byte as committed
    400  not a SPEC 1 symbol (1-32 chars of A-Za-z0-9._-)
    404  {"symbol", "owner_partition", "partitions", "held_here", "reason"}
    503  the input's partition count is not known yet (still starting)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from typing import Any

from service.ownership import Partitioner, owner
from service.run.health import valid_symbol

__all__ = ["Answer", "SymbolQueries"]

#: (HTTP status, JSON body)
Answer = tuple[int, bytes]

_log = logging.getLogger(__name__)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class SymbolQueries:
    """Answers one symbol query from `lookup` (symbol -> committed result bytes or None).

    `partitions` gives the input's partition count (None while unknown); `held` the
    input partitions assigned here, so a 404 can tell "not mine" from "mine, no result
    yet". Both are callables because they change with rebalances.
    """

    def __init__(
        self,
        lookup: Callable[[str], bytes | None],
        partitions: Callable[[], int | None],
        partitioner: Partitioner = "murmur2",
        held: Callable[[], Collection[int]] = frozenset,
    ) -> None:
        self._lookup = lookup
        self._partitions = partitions
        self._partitioner: Partitioner = partitioner
        self._held = held

    def answer(self, symbol: str) -> Answer:
        if not valid_symbol(symbol):
            reason = "not a symbol: 1-32 characters of A-Za-z0-9._- (SPEC 1)"
            return 400, _json({"symbol": symbol[:64], "reason": reason})
        try:
            found = self._lookup(symbol)
            if found is not None:
                return 200, found
            n = self._partitions()
            if not n:
                return 503, _json({"symbol": symbol, "reason": "starting: partitions unknown"})
            where = owner(symbol, n, self._partitioner)
            held_here = where in self._held()
            # Symbols are case-sensitive (SPEC 1): `600519.sh` is not `600519.SH`, the
            # usual spelling, which is looked up only for a symbol with lower case in it.
            other = symbol.upper()
            other_found = other != symbol and self._lookup(other) is not None
        except Exception:
            _log.warning("symbol query for %s failed", symbol, exc_info=True)
            return 500, _json({"symbol": symbol, "reason": "internal error"})
        if held_here:
            reason = f"owned by input partition {where}, held here, but no result yet"
        else:
            reason = f"owned by input partition {where}, not held by this instance"
        if other_found:
            reason += f"; symbols are case-sensitive: /symbols/{other} has a result"
        body = {
            "symbol": symbol,
            "owner_partition": where,
            "partitions": n,
            "held_here": held_here,
            "reason": reason,
        }
        return 404, _json(body)
