"""The pure parts around the schema registry: backoff, health reporting, settings and
their secrets, the bar encoder's refusals, and an unreachable client's error kind."""

from __future__ import annotations

import socket

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.decode.wire import WireSchema, decode_wire_batch
from service.errors import ConfigError
from service.registry import RegistryClient, RegistryUnavailableError, backoff_seconds
from service.registry.schemas import wait_reachable
from service.run.health import Health
from service.settings import load_settings
from service.wireformat import BAR_SCHEMA_TEXT, AvroBarEncoder, avro_bar


@given(st.integers(min_value=0, max_value=10_000))
def test_backoff_doubles_from_a_quarter_second_and_stays_capped(attempt: int) -> None:
    delay = backoff_seconds(attempt)
    assert 0.25 <= delay <= 5.0
    assert backoff_seconds(attempt + 1) == min(5.0, 2 * delay)


def test_health_says_what_the_registry_does() -> None:
    health = Health()
    assert "schema_registry" not in health.liveness().body
    health.set_schema_registry("connection refused")
    assert health.liveness().ok  # a restart cannot bring the registry back
    assert health.liveness().body["schema_registry"] == "unreachable: connection refused"
    ready = health.readiness()
    assert not ready.ok and "schema registry unreachable" in ready.body["reason"]
    health.set_schema_registry(None)
    assert health.liveness().body["schema_registry"] == "reachable"
    assert "schema registry" not in health.readiness().body["reason"]


def test_avro_input_needs_a_registry_and_its_password_is_masked() -> None:
    with pytest.raises(ConfigError, match="SFA_SCHEMA_REGISTRY_URL: must be set"):
        load_settings({"SFA_INPUT_FORMAT": "avro"})
    with pytest.raises(ConfigError, match="SFA_INPUT_FORMAT"):
        load_settings({"SFA_INPUT_FORMAT": "xml"})
    s = load_settings(
        {
            "SFA_INPUT_FORMAT": "Avro",
            "SFA_SCHEMA_REGISTRY_URL": "http://reg:8081/apis/ccompat/v7",
            "SFA_SCHEMA_REGISTRY_USER": "sfa",
            "SFA_SCHEMA_REGISTRY_PASSWORD": "hunter2-secret",
        }
    )
    assert s.registry.input_format == "avro"
    shown = orjson.dumps(s.redacted(), default=str).decode()
    assert "hunter2-secret" not in shown and "hunter2-secret" not in repr(s)
    assert "hunter2-secret" in s.secret_values()


def test_the_encoder_refuses_what_avro_cannot_carry_and_round_trips_the_rest() -> None:
    assert avro_bar(b"{nope") == "not JSON"
    assert "one bar per message" in str(avro_bar(b"[]"))
    assert avro_bar(b'{"symbol": "A", "date": "2020-01-02"}') == "close missing or not a number"
    assert avro_bar(b'{"symbol": "A", "date": "2020-01-02", "close": "1"}') == (
        "close missing or not a number"
    )
    assert avro_bar(b'{"symbol": 5, "date": "2020-01-02", "close": 1}') == (
        "symbol missing or not a string"
    )
    # Aliases move to the canonical names; null is absent; unknown fields are dropped.
    line = (
        b'{"stock_code": "A.SH", "trade_date": "2020-01-02", "close_price": 3, '
        b'"high": null, "x": 1}'
    )
    encoded = AvroBarEncoder(42).encode(line)
    assert isinstance(encoded, bytes) and encoded[:5] == b"\x00\x00\x00\x00\x2a"
    got = decode_wire_batch([encoded], {42: WireSchema(42, "AVRO", BAR_SCHEMA_TEXT)})
    assert got.symbols == ["A.SH"] and got.closes.tolist() == [3.0] and not got.rejects


def test_a_closed_port_is_unavailable_not_a_refusal() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RegistryClient(f"http://127.0.0.1:{port}", timeout_s=1)
    with pytest.raises(RegistryUnavailableError, match="SFA_SCHEMA_REGISTRY_URL") as caught:
        client.schema(1)
    assert caught.value.retriable
    with pytest.raises(RegistryUnavailableError):
        wait_reachable(client, 0.3)
    wait_reachable(client, 60, stopped=lambda: True)  # a stop ends the wait at once
