"""The values the settings parse with libraries (durations by pytimeparse2, sizes by
pydantic's ByteSize) mean what the documented forms said before, checked against a
re-computation written here; and the environment source keeps its rules (blank is
unset, not-empty names refuse blank, KAFKA_* passthrough without service links)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from service.errors import ConfigError
from service.settings import KafkaSettings, MonitorSettings, is_service_link, load_settings
from service.settings.fields import check_memory_limit, reading

_SECONDS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
_SIZES = {
    "": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "ki": 2**10, "mi": 2**20, "gi": 2**30,
}  # fmt: skip


@given(
    number=st.integers(1, 86_400_000).map(lambda n: n / 1000),
    unit=st.sampled_from(sorted(_SECONDS)),
    space=st.sampled_from(["", " "]),
)
def test_a_duration_is_its_number_times_its_unit(number: float, unit: str, space: str) -> None:
    expected = number * _SECONDS[unit]
    text = f" {number}{space}{unit} "
    with reading({"SFA_STALL_SECONDS": text}):
        if not 0 < expected <= 86_400:
            with pytest.raises(ValidationError, match="SFA_STALL_SECONDS"):
                MonitorSettings()
            return
        got = MonitorSettings().stall_seconds
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("value", ["soon", "1e400", "inf", "nan", "-5s", "0", "5 parsecs", "2m3"])
def test_a_duration_that_is_none_is_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^DASK_CONNECT_TIMEOUT: "):
        load_settings({"DASK_CONNECT_TIMEOUT": value})


def test_a_duration_in_code_is_seconds() -> None:
    assert MonitorSettings(stall_seconds=2).stall_seconds == 2.0


@given(
    number=st.integers(1, 5000),
    unit=st.sampled_from(sorted(_SIZES)),
    case=st.sampled_from([str.lower, str.upper, str.title]),
    space=st.sampled_from(["", " "]),
)
def test_a_memory_limit_is_accepted_exactly_from_100mb(
    number: int, unit: str, case: object, space: str
) -> None:
    assert callable(case)
    text = f"{number}{space if unit else ''}{case(unit)}"
    if number * _SIZES[unit] >= 100 * 10**6:
        assert check_memory_limit(text) == text
    else:
        with pytest.raises(ValueError, match="at least 100MB"):
            check_memory_limit(text)


@pytest.mark.parametrize("value", ["2gbit", "banana", "-5GB", "1e400", "inf", "2 gallons"])
def test_what_is_no_memory_size_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="auto or a size"):
        check_memory_limit(value)


@given(
    name=st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
    value=st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=12),
)
def test_every_other_kafka_variable_is_a_property_unless_a_service_link(
    name: str, value: str
) -> None:
    variable = f"KAFKA_{name}"
    if variable in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_GROUP_ID"):
        return
    with reading({variable: value}):
        kafka = KafkaSettings()
    prop = name.lower().replace("_", ".")
    if is_service_link(variable):
        assert kafka.kafka_ignored == (variable,) and kafka.kafka_extra == {}
    elif value == "":
        assert kafka.kafka_extra == {}
    else:
        assert set(kafka.kafka_extra) == {prop}
        held = kafka.kafka_extra[prop]
        shown = held if isinstance(held, str) else held.get_secret_value()
        assert shown == value


def test_blank_means_unset_and_not_empty_names_refuse_it() -> None:
    with reading({"SFA_OUTPUT_TOPIC": " out ", "SFA_REPARTITION_TOPIC": "  "}):
        kafka = KafkaSettings()
    assert (kafka.output_topic, kafka.repartition_topic) == ("out", None)
    with reading({"SFA_DLQ_TOPIC": "\t"}), pytest.raises(ConfigError, match=r"^SFA_DLQ_TOPIC: "):
        KafkaSettings()


def test_a_part_reads_only_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFA_INPUT_TOPIC", "from-os")
    assert load_settings({}).kafka.input_topic == "stock-bars"
    assert load_settings().kafka.input_topic == "from-os"


def test_an_override_finds_its_part_and_an_unknown_one_is_refused() -> None:
    settings = load_settings({}, dask_chunk_size=7, input_topic="bars")
    assert (settings.dask.dask_chunk_size, settings.kafka.input_topic) == (7, "bars")
    with pytest.raises(ConfigError, match=r"^no_such_knob: "):
        load_settings({}, no_such_knob=1)
