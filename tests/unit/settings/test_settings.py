"""Settings and the librdkafka configs built from them: secrets, one set of defaults."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.kafka.config import (
    admin_config,
    consumer_config,
    producer_config,
    restore_config,
)
from service.settings import KafkaSettings, load_settings

SECRET = "hunter2-do-not-print"
ENV = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "sfa",
    "KAFKA_SASL_PASSWORD": SECRET,
    "KAFKA_SSL_KEY_PASSWORD": SECRET,
}
CONFIGS = (consumer_config, producer_config, restore_config, admin_config)


def test_secrets_never_show_in_a_rendering_of_the_settings() -> None:
    settings = load_settings(ENV)
    for rendering in (repr(settings), str(settings), str(settings.model_dump())):
        assert SECRET not in rendering
    assert SECRET not in str(settings.redacted())
    assert settings.redacted()["kafka_extra"]["sasl.password"] == "***"
    assert settings.redacted()["kafka_extra"]["sasl.username"] == "sfa"


def test_secrets_given_in_code_are_wrapped_too() -> None:
    settings = KafkaSettings(kafka_extra={"sasl.password": SECRET})  # type: ignore[call-arg]
    assert SECRET not in repr(settings)
    assert consumer_config(settings)["sasl.password"] == SECRET


@pytest.mark.parametrize("build", CONFIGS)
def test_every_client_gets_the_secret_in_clear_and_the_shared_defaults(build: object) -> None:
    assert callable(build)
    conf = build(load_settings({**ENV, "SFA_INSTANCE_ID": "i1"}).kafka)
    assert conf["sasl.password"] == SECRET and conf["ssl.key.password"] == SECRET
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert conf["metadata.recovery.strategy"] == "none"  # the restore consumer lacked it
    assert conf["client.id"].startswith("sfa") and conf["client.id"].endswith("-i1")
    assert conf["logger"].name == "service.kafka.librdkafka"


@pytest.mark.parametrize("build", CONFIGS)
def test_the_user_may_override_a_default(build: object) -> None:
    assert callable(build)
    conf = build(load_settings({"KAFKA_METADATA_RECOVERY_STRATEGY": "rebootstrap"}).kafka)
    assert conf["metadata.recovery.strategy"] == "rebootstrap"


def test_what_correctness_needs_cannot_be_overridden() -> None:
    env = {"KAFKA_ENABLE_AUTO_COMMIT": "true", "KAFKA_ENABLE_IDEMPOTENCE": "false"}
    settings = load_settings(env)
    assert consumer_config(settings.kafka)["enable.auto.commit"] is False
    assert producer_config(settings.kafka)["enable.idempotence"] is True
    assert producer_config(settings.kafka)["acks"] == "all"
    assert restore_config(settings.kafka)["enable.auto.commit"] is False


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(ConfigError, match=r"^SFA_BATCH_MAX_MESSAGES: .*got '0'"):
        load_settings({"SFA_BATCH_MAX_MESSAGES": "0"})
    with pytest.raises(ConfigError, match=r"SFA_YEARS: .*1901\.\.2099"):
        load_settings({"SFA_YEARS": "2100"})
