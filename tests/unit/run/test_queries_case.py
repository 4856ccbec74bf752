"""`GET /symbols/{symbol}` with the wrong case: a 404 that says which spelling is held."""

from __future__ import annotations

import json

from service.run.queries import SymbolQueries

RESULT = b'{"symbol":"600519.SH"}'


def _queries(held: dict[str, bytes]) -> SymbolQueries:
    return SymbolQueries(held.get, lambda: 1, held=lambda: {0})


def test_a_symbol_held_in_another_case_is_named() -> None:
    status, body = _queries({"600519.SH": RESULT}).answer("600519.sh")
    assert status == 404
    reason = json.loads(body)["reason"]
    assert reason.endswith("; symbols are case-sensitive: /symbols/600519.SH has a result")


def test_no_hint_when_no_other_case_is_held() -> None:
    status, body = _queries({"600519.SH": RESULT}).answer("600000.sh")
    assert status == 404 and "case-sensitive" not in json.loads(body)["reason"]
    assert _queries({"600519.SH": RESULT}).answer("600519.SH") == (200, RESULT)
