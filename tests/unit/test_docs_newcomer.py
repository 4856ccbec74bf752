"""What a newcomer reads: docs/cli.md covers every command, README says how to get `sfa`
on PATH, and every "SPEC n" the docs mention has its page in this repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.__main__ import _COMMANDS

ROOT = Path(__file__).resolve().parents[2]
CLI = (ROOT / "docs" / "cli.md").read_text()
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_cli_md_has_a_section_for_every_command(command: str) -> None:
    assert re.search(rf"^## `sfa {command}\b", CLI, re.MULTILINE), command
    assert f"| `{command}" in CLI  # and a row in the table at the top


def test_readme_says_how_to_put_sfa_on_path() -> None:
    assert "source .venv/bin/activate" in README
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in README


def test_every_spec_part_the_docs_name_has_a_page_here() -> None:
    mapped: set[int] = set()
    for row in re.findall(r"^\| SPEC ([0-9, ]+) \|[^|]+\|([^|]+)\|$", README, re.MULTILINE):
        numbers, page = row
        assert "docs/" in page or "service/" in page, row
        mapped |= {int(n) for n in numbers.split(",")}
    texts = [README, *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]
    named = {int(n) for text in texts for n in re.findall(r"SPEC (\d+)", text)}
    assert named <= mapped, sorted(named - mapped)


def test_recommend_names_commands_and_says_when_nothing_fits() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "recommend", "--stocks", "1000000000000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    first = done.stdout.splitlines()[0]
    assert first.endswith("bars: too big to hold in this machine's memory: stream it (see below)")
    assert "`sfa replay FILE... --emit final`" in done.stdout


def test_migrating_md_gives_a_signature_for_every_callable_it_lists() -> None:
    import inspect

    import service

    text = (ROOT / "docs" / "migrating.md").read_text()
    section = text.split("## The API, with its signatures", 1)[1]
    block = section.split("```python", 1)[1].split("```", 1)[0]
    for name in (
        "ParallelProcessingConfig",
        "ParallelSpringFestivalEngine",
        "SpringFestivalAlignmentEngine",
        "DaskResourceManager",
        "create_dask_dataframe_from_stock_data",
        "optimize_dask_config_for_spring_festival_analysis",
        "get_processing_recommendations",
    ):
        line = next((ln for ln in block.splitlines() if f"{name}(" in ln), None)
        assert line is not None, name
        first = next(iter(inspect.signature(getattr(service, name)).parameters), None)
        assert first is None or first in line, (name, first)
