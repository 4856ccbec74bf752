"""`GET /symbols/{symbol}`: the decision (`SymbolQueries` with a fake lookup) and the probe
helper process answering by forwarding to the service side's loopback server."""

from __future__ import annotations

import json
import socket
import string
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.decode.rules import symbol_ok
from service.ownership import owner
from service.run.health import Health, valid_symbol
from service.run.probes import ProbeProcess
from service.run.queries import SymbolQueries

RESULT = b'{"symbol":"600519.SH","as_of":"2024-04-30","status":"ok"}'


class _Exposition:
    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        return b"sfa_up 1\n", "text/plain; version=0.0.4; charset=utf-8"


class _Results:
    """The service's latest-result map, with a record of what was asked."""

    def __init__(self, held: dict[str, bytes]) -> None:
        self.held = held
        self.asked: list[str] = []

    def __call__(self, symbol: str) -> bytes | None:
        self.asked.append(symbol)
        return self.held.get(symbol)


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --- the decision ----------------------------------------------------------------------


def test_a_held_symbol_gets_its_result_byte_for_byte() -> None:
    queries = SymbolQueries(_Results({"600519.SH": RESULT}), lambda: 6)
    assert queries.answer("600519.SH") == (200, RESULT)


@pytest.mark.parametrize("partitioner", ["murmur2", "crc32"])
def test_any_other_symbol_is_404_naming_its_owner_partition(partitioner: Any) -> None:
    held = {owner("AAA", 6, partitioner)}
    queries = SymbolQueries(_Results({}), lambda: 6, partitioner, held=lambda: held)
    for symbol in ("AAA", "BBB.SZ", "000001"):
        status, body = queries.answer(symbol)
        got = json.loads(body)
        where = owner(symbol, 6, partitioner)
        assert status == 404
        assert (got["symbol"], got["owner_partition"], got["partitions"]) == (symbol, where, 6)
        assert got["held_here"] is (where in held)
        assert f"partition {where}" in got["reason"]


@pytest.mark.parametrize("bad", ["", "a" * 33, "a b", "a/b", "ä", "../x", "x%2F"])
def test_a_symbol_spec_1_refuses_is_400_and_never_looked_up(bad: str) -> None:
    results = _Results({})
    status, body = SymbolQueries(results, lambda: 6).answer(bad)
    assert status == 400 and "SPEC 1" in json.loads(body)["reason"]
    assert results.asked == []


def test_before_the_partition_count_is_known_an_unheld_symbol_is_503() -> None:
    status, body = SymbolQueries(_Results({}), lambda: None).answer("AAA")
    assert status == 503 and "starting" in json.loads(body)["reason"]


def test_a_failing_lookup_is_500_not_an_exception() -> None:
    def broken(symbol: str) -> bytes | None:
        raise KeyError(symbol)

    status, body = SymbolQueries(broken, lambda: 6).answer("AAA")
    assert status == 500 and json.loads(body)["reason"] == "internal error"


@given(st.text(alphabet=string.printable + "äé\u00a0", max_size=40))
def test_the_endpoint_rule_is_the_decoders_rule(text: str) -> None:
    assert valid_symbol(text) == symbol_ok(text)


# --- the probe helper process, forwarding to the service side ---------------------------


class _Gate:
    """A symbol source that answers only once released: a service too busy to answer."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def answer(self, symbol: str) -> tuple[int, bytes]:
        self.entered.set()
        self.release.wait(30)
        return 200, RESULT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def helper() -> Iterator[ProbeProcess]:
    """The real helper process (python -m service.run.probes) on a free port."""
    server = ProbeProcess(_Exposition(), Health(), port=_free_port(), host="127.0.0.1")
    server.start()
    yield server
    server.stop()


def test_the_helper_forwards_queries_to_the_service_side(helper: ProbeProcess) -> None:
    results = _Results({"600519.SH": RESULT})
    assert _get(helper.port, "/symbols/600519.SH")[0] == 503  # nothing set yet: not served
    helper.set_queries(SymbolQueries(results, lambda: 6, held=lambda: {0, 1}))
    assert _get(helper.port, "/symbols/600519.SH") == (200, json.loads(RESULT))
    status, body = _get(helper.port, "/symbols/ZZZ.SZ")
    assert status == 404 and body["owner_partition"] == owner("ZZZ.SZ", 6)
    assert _get(helper.port, "/symbols/" + "x" * 33)[0] == 400
    assert _get(helper.port, "/symbols/a%20b")[0] == 400
    assert results.asked == ["600519.SH", "ZZZ.SZ"]  # a bad symbol never crosses over
    assert _get(helper.port, "/healthz")[0] == 200


def test_a_service_that_does_not_answer_in_time_is_503_and_probes_still_answer(
    helper: ProbeProcess,
) -> None:
    gate = _Gate()
    helper.set_queries(gate)
    try:
        status, body = _get(helper.port, "/symbols/AAA")
        # the source had not answered (it cannot before `release`), so this was the timeout
        assert gate.entered.is_set() and not gate.release.is_set()
        assert status == 503 and "did not answer within 200 ms" in body["reason"]
        assert _get(helper.port, "/readyz")[0] in (200, 503)  # answered, whatever it says
        assert _get(helper.port, "/healthz")[0] == 200
    finally:
        gate.release.set()
    # the late reply is dropped; the next query gets its own answer
    helper.set_queries(SymbolQueries(_Results({"BBB": RESULT}), lambda: 6))
    assert _get(helper.port, "/symbols/BBB") == (200, json.loads(RESULT))


def test_a_helper_without_its_service_side_says_503_at_once(helper: ProbeProcess) -> None:
    helper.set_queries(SymbolQueries(_Results({"AAA": RESULT}), lambda: 6))
    assert _get(helper.port, "/symbols/AAA")[0] == 200
    service_side = helper._symbols
    assert service_side is not None
    service_side.shutdown()  # the service side goes away: its port no longer answers
    service_side.server_close()
    status, body = _get(helper.port, "/symbols/AAA")
    assert status == 503 and "does not answer" in body["reason"]
