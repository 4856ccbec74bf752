"""The pure parts of reading a newcomer's files: the CSV delimiter a header implies, and
the words a rejected record's reason gets when a whole file gave no valid bar."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from service.files.csvrows import _header
from service.files.tally import describe

_FIELDS = ["symbol", "date", "close", "open", "high", "low", "volume", "trade_date"]


@given(
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    names=st.lists(st.sampled_from(_FIELDS), min_size=2, max_size=5, unique=True),
)
def test_the_header_says_the_delimiter(delimiter: str, names: list[str]) -> None:
    line = delimiter.join(names)
    cells = line.split(",")  # what a comma reader makes of the header line
    assert _header(cells, None) == (names, delimiter)


def test_a_header_naming_no_bar_field_keeps_the_comma() -> None:
    assert _header(["code;day;price"], None) == (["code;day;price"], ",")
    assert _header(None, None) == ([], ",")


def test_a_given_delimiter_is_kept() -> None:
    assert _header(["symbol", "date"], "\t") == (["symbol", "date"], "\t")


def test_date_reasons_quote_the_value_and_the_expected_form() -> None:
    raw = orjson.dumps({"symbol": "A", "date": "20180101", "close": 1})
    assert describe("invalid_field:date", raw) == (
        'invalid_field:date ("20180101"; expected YYYY-MM-DD)'
    )
    alias = orjson.dumps({"stock_code": "A", "trade_date": 20180101, "close_price": 1})
    assert describe("invalid_field:date", alias) == (
        "invalid_field:date (20180101; expected YYYY-MM-DD)"
    )


def test_a_missing_field_lists_the_fields_there_are() -> None:
    raw = orjson.dumps({"code": "A", "day": "2018-01-01", "price": 1})
    said = describe("missing_field:symbol", raw)
    assert said == "missing_field:symbol (fields: code, day, price)"
    assert describe("invalid_json", b"{oops") == "invalid_json"
