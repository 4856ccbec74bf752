"""docs/configuration.md and `sfa run --help` are generated from Settings and stay so."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from service.__main__ import main
from service.configdoc import markdown, rows
from service.settings import PARTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_committed_reference_is_what_the_settings_generate() -> None:
    assert DOC.read_text() == markdown(), (
        "docs/configuration.md drifted from service/settings/; run "
        "`.venv/bin/python -m service.configdoc > docs/configuration.md`"
    )


def test_every_variable_has_a_row_with_a_meaning() -> None:
    variables = {
        f.alias
        for part in PARTS.values()
        for f in part.model_fields.values()
        if f.alias and not f.alias.startswith("_")
    }
    table = {var: meaning for var, _, _, meaning in rows()}
    assert set(table) == variables
    assert all(len(meaning) > 10 for meaning in table.values())


def test_run_help_lists_every_variable_with_its_default() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["run", "--help"])
    text = out.getvalue()
    for var, default, _, _ in rows():
        line = next((ln for ln in text.splitlines() if ln.split()[:1] == [var]), None)
        assert line is not None, var
        assert line.split(None, 1)[1].strip() == default, var
