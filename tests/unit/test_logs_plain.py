"""`sfa run` at a terminal logs text: the message, then its fields, long ones cut."""

from __future__ import annotations

import logging

from service.logs import PlainFormatter


def _line(**extra: object) -> str:
    record = logging.makeLogRecord({"msg": "state restored", "levelname": "INFO", "name": "x"})
    record.__dict__.update(extra)
    return PlainFormatter().format(record)


def test_fields_follow_the_message() -> None:
    assert _line(records=3, symbols=2) == "INFO x: state restored (records=3, symbols=2)"
    assert _line() == "INFO x: state restored"


def test_a_long_field_is_cut() -> None:
    line = _line(settings="a" * 200)
    assert line == "INFO x: state restored (settings=" + "a" * 77 + "...)"
