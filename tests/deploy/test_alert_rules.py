"""The alert rules under promtool: valid, and each rule both fires and stays silent.

promtool comes from Debian's `prometheus` package (`make deploy-test` installs it); this
test installs nothing and skips with one line when promtool is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing (apt-get install prometheus)"
)


def _promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@needs_promtool
def test_rules_and_config_are_valid() -> None:
    rules = _promtool("check", "rules", "alerts.yaml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_firing_and_a_silent_case() -> None:
    """promtool only runs the cases that exist; this makes a missing case a failure."""
    cases = yaml.safe_load((PROM / "alerts_test.yaml").read_text())["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names - fires == set(), "rules without a case where they fire"
    assert names - silent == set(), "rules without a case where they stay silent"


def test_every_alert_links_its_runbook_section() -> None:
    runbook = (ROOT / "docs" / "monitoring.md").read_text()
    for rule in _rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in runbook, f"docs/monitoring.md lacks {rule['alert']}"


@needs_promtool
def test_the_old_stall_rule_is_caught(tmp_path: Path) -> None:
    """The unit tests tell the fixed `and on (instance)` from the plain `and` of the old
    rule, which matched on every label and so could never fire."""
    fixed = (PROM / "alerts.yaml").read_text()
    rate = 'rate(sfa_batches_total{outcome="ok"}[5m])'
    broken = fixed.replace(
        f"and on (instance)\n          sum by (instance) ({rate})", f"and\n          {rate}"
    )
    assert broken != fixed
    (tmp_path / "alerts.yaml").write_text(broken)
    shutil.copy(PROM / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    result = _promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SfaStalled" in result.stdout + result.stderr
