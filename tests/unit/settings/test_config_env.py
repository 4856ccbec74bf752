"""Configuration fails at start in one line naming the variable, or means what the user
meant: Kubernetes service links, librdkafka's verdict on KAFKA_*, Dask values, huge
numbers, empty names, lower-case levels, secrets inside composite values."""

from __future__ import annotations

import io
import logging

import pytest

from service.compute.config import local_cluster_kwargs
from service.errors import ConfigError, SfaError
from service.kafka.config import check_client_configs, consumer_config, producer_config
from service.logs import JsonFormatter, PlainFormatter
from service.settings import is_service_link, load_settings

SERVICE_LINKS = {
    "KAFKA_SERVICE_HOST": "10.96.0.12",
    "KAFKA_SERVICE_PORT": "9092",
    "KAFKA_SERVICE_PORT_CLIENT": "9092",
    "KAFKA_PORT": "tcp://10.96.0.12:9092",
    "KAFKA_PORT_9092_TCP": "tcp://10.96.0.12:9092",
    "KAFKA_PORT_9092_TCP_PROTO": "tcp",
    "KAFKA_PORT_9092_TCP_PORT": "9092",
    "KAFKA_PORT_9092_TCP_ADDR": "10.96.0.12",
    "KAFKA_PORT_9093_UDP_ADDR": "10.96.0.12",
    "KAFKA_BROKER_SERVICE_HOST": "10.96.0.13",  # a Service named kafka-broker
    "KAFKA_BROKER_PORT_29092_TCP": "tcp://10.96.0.13:29092",
}


def test_kubernetes_service_links_are_ignored_not_passed_to_librdkafka() -> None:
    settings = load_settings(SERVICE_LINKS)
    assert settings.kafka.kafka_extra == {}
    assert set(settings.kafka.kafka_ignored) == set(SERVICE_LINKS)
    check_client_configs(settings.kafka)  # librdkafka would refuse "service.host", "port", ...
    assert "service.host" not in consumer_config(settings.kafka)


@pytest.mark.parametrize(
    "name", ["KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_KERBEROS_SERVICE_NAME", "KAFKA_PORTS"]
)
def test_real_properties_are_not_mistaken_for_service_links(name: str) -> None:
    assert not is_service_link(name)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KAFKA_NO_SUCH_THING": "1"}, "KAFKA_NO_SUCH_THING"),
        ({"KAFKA_SECURITY_PROTOCOL": "bogus"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_LINGER_MS": "99999999999"}, "KAFKA_LINGER_MS"),  # librdkafka names an alias
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "nope"},
            "KAFKA_SASL_MECHANISM",
        ),
    ],
)
def test_a_property_librdkafka_rejects_is_one_line_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_client_configs(load_settings(env).kafka)
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


def test_the_rejection_never_shows_a_secret() -> None:
    secret = "pw-that-must-not-show"
    env = {"KAFKA_SASL_PASSWORD": secret, "KAFKA_NO_SUCH_THING": secret}
    with pytest.raises(ConfigError) as caught:
        check_client_configs(load_settings(env).kafka)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DASK_MEMORY_LIMIT", "banana"),
        ("DASK_MEMORY_LIMIT", "-5GB"),
        ("DASK_MEMORY_LIMIT", "5"),
        ("DASK_SCHEDULER_ADDRESS", "garbage"),
        ("DASK_SCHEDULER_ADDRESS", "tcp://host:99999"),
        ("SFA_DASK_DASHBOARD_ADDRESS", "everywhere"),
        ("SFA_BATCH_MAX_WAIT_MS", "9" * 30),
        ("SFA_MAX_MESSAGE_BYTES", "9" * 30),
        ("SFA_MIN_BARS_PER_YEAR", "9" * 30),
        ("SFA_STALL_SECONDS", "1e400"),
        ("DASK_CONNECT_TIMEOUT", "9" * 30),
        ("SFA_LOG_LEVEL", "chatty"),
        ("KAFKA_GROUP_ID", ""),
        ("KAFKA_GROUP_ID", "   "),
        ("SFA_INPUT_TOPIC", ""),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ") and "\n" not in message


def test_a_huge_value_is_quoted_back_shortened() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SFA_BATCH_MAX_WAIT_MS": "9" * 5000})
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("DASK_MEMORY_SPILL_FRACTION", {"DASK_MEMORY_SPILL_FRACTION": "0.5"}),
        ("DASK_MEMORY_PAUSE_FRACTION", {"DASK_MEMORY_PAUSE_FRACTION": "0.65"}),
        ("DASK_MEMORY_TERMINATE_FRACTION", {"DASK_MEMORY_TERMINATE_FRACTION": "0.75"}),
    ],
)
def test_memory_fractions_must_be_ordered(variable: str, bad: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}: .*target <= spill <= pause <= terminate"):
        load_settings(bad)
    same = {k: "0.7" for k in ("TARGET", "SPILL", "PAUSE", "TERMINATE")}
    load_settings({f"DASK_MEMORY_{k}_FRACTION": v for k, v in same.items()})  # equal is fine


@pytest.mark.parametrize("value", ["2GB", "512MiB", "2e9", "1.5 GB", "auto", "AUTO", "4gib"])
def test_memory_limits_dask_understands_are_accepted(value: str) -> None:
    assert (
        load_settings({"DASK_MEMORY_LIMIT": value}).dask.dask_memory_limit.lower() == value.lower()
    )


@pytest.mark.parametrize(
    ("value", "level"), [("info", "INFO"), ("Debug", "DEBUG"), ("warn", "WARNING")]
)
def test_log_levels_in_any_case(value: str, level: str) -> None:
    assert load_settings({"SFA_LOG_LEVEL": value}).monitor.log_level == level


def test_empty_optional_values_mean_unset() -> None:
    settings = load_settings({"SFA_YEARS": "", "DASK_SCHEDULER_ADDRESS": " ", "SFA_LOG_LEVEL": ""})
    assert settings.engine.years is None and settings.dask.dask_scheduler_address is None
    assert settings.monitor.log_level == "INFO"


OAUTH = "principalClaimName=sub clientId=sfa clientSecret=oauth-s3cret-value scope=bars"


def test_a_secret_inside_a_composite_value_is_masked_in_every_rendering() -> None:
    settings = load_settings(
        {"KAFKA_SASL_OAUTHBEARER_CONFIG": OAUTH, "SFA_INSTANCE_ID": "oauth-test"}
    )
    for rendering in (repr(settings), str(settings.model_dump()), str(settings.redacted())):
        assert "oauth-s3cret-value" not in rendering
    shown = settings.redacted()["kafka_extra"]["sasl.oauthbearer.config"]
    assert shown == "principalClaimName=sub clientId=sfa clientSecret=*** scope=bars"
    # in clear for librdkafka
    assert consumer_config(settings.kafka)["sasl.oauthbearer.config"] == OAUTH
    assert producer_config(settings.kafka)["sasl.oauthbearer.config"] == OAUTH


def test_secrets_are_masked_in_log_lines_and_errors_whoever_wrote_the_text() -> None:
    load_settings({"KAFKA_SASL_OAUTHBEARER_CONFIG": OAUTH, "KAFKA_SASL_PASSWORD": 'pw"quoted'})
    record = logging.makeLogRecord(
        {"msg": "librdkafka said %s", "args": ("clientSecret=oauth-s3cret-value",), "levelno": 20}
    )
    record.extra_field = 'pw"quoted'
    for formatter in (JsonFormatter(), PlainFormatter()):
        line = formatter.format(record)
        assert "oauth-s3cret-value" not in line and "***" in line
    assert "pw" not in JsonFormatter().format(record).split("extra_field")[1]
    assert "oauth-s3cret-value" not in str(SfaError("broker echoed oauth-s3cret-value"))


def test_a_secret_in_a_url_is_masked() -> None:
    settings = load_settings(
        {"KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://u:urlpass99@idp"}
    )
    assert "urlpass99" not in repr(settings)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PlainFormatter())
    logger = logging.getLogger("tests.config_env")
    logger.addHandler(handler)
    try:
        logger.warning("fetching https://u:urlpass99@idp failed")
    finally:
        logger.removeHandler(handler)
    assert "urlpass99" not in stream.getvalue()


def test_no_dashboard_unless_asked_and_then_where_asked() -> None:
    kwargs = local_cluster_kwargs(load_settings({}).dask)
    assert kwargs["dashboard_address"].startswith("127.0.0.1:")
    assert kwargs["worker_dashboard_address"].startswith("127.0.0.1:")
    assert kwargs["scheduler_kwargs"]["dashboard"] is False
    asked = local_cluster_kwargs(load_settings({"SFA_DASK_DASHBOARD_ADDRESS": "0.0.0.0:8787"}).dask)
    assert asked["dashboard_address"] == "0.0.0.0:8787"
    assert asked["scheduler_kwargs"]["dashboard"] is True


def test_a_property_goes_only_to_the_clients_that_use_it() -> None:
    """A consumer property given to the producer and the admin client, or a producer one
    given to the consumers, made each of those log a CONFWARN line at start."""
    import logging

    from confluent_kafka import Consumer, Producer

    from service.kafka.config import admin_config, restore_config

    env = {
        "KAFKA_FETCH_MIN_BYTES": "5",  # consumers only
        "KAFKA_LINGER_MS": "20",  # producers only (librdkafka warns under an alias)
        "KAFKA_SOCKET_TIMEOUT_MS": "45000",  # both
    }
    kafka = load_settings(env).kafka
    consumer, producer = consumer_config(kafka), producer_config(kafka)
    restore, admin = restore_config(kafka), admin_config(kafka)
    for conf in (consumer, restore):
        assert conf["fetch.min.bytes"] == "5" and "linger.ms" not in conf
    for conf in (producer, admin):
        assert conf["linger.ms"] == "20" and "fetch.min.bytes" not in conf
    assert {c["socket.timeout.ms"] for c in (consumer, producer, restore, admin)} == {"45000"}

    heard: list[str] = []

    class Hear(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            heard.append(record.getMessage())

    log = logging.getLogger("test.confwarn")
    log.propagate, hear = False, Hear()
    log.addHandler(hear)
    try:
        for make, conf in ((Consumer, consumer), (Consumer, restore), (Producer, producer)):
            client = make({**conf, "logger": log, "bootstrap.servers": "127.0.0.1:1"})
            client.poll(0)
            if make is Consumer:
                client.close()
    finally:
        log.removeHandler(hear)
    assert not [m for m in heard if "will be ignored" in m], heard
