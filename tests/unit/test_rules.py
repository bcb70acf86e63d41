"""Prometheus rules and config: ``promtool check`` and the ``promtool test rules`` unit tests.

The rule tests (dashboards/rules/tests/eochain_test.yml) cover the six
alerts: campaign stalled, cost projected over plan by more than 10%, spend
over plan by more than 10%, driver gone, deadline at risk, interruption
storm, each with campaigns that must fire and
neighbours that must not. Mutating a threshold must make them fail, which
shows they test the rules and not only their syntax.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
RULES = DASHBOARDS / "rules" / "eochain.yml"
RULE_TESTS = DASHBOARDS / "rules" / "tests" / "eochain_test.yml"


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed: run tests/services/prometheus.sh install "
                    "(make test does)")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_rules_pass_promtool_check() -> None:
    out = _promtool("check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 11 rules found" in out.stdout


def test_config_template_passes_promtool_check() -> None:
    out = _promtool("check", "config", DASHBOARDS / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout


def test_rule_unit_tests_pass() -> None:
    out = _promtool("test", "rules", RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr
    text = RULE_TESTS.read_text()
    for alert in ("EochainCampaignStalled", "EochainCostOverPlan", "EochainDeadlineAtRisk",
                  "EochainInterruptionStorm", "EochainSpendOverPlan", "EochainDriverGone"):
        assert f"alertname: {alert}" in text


@pytest.mark.parametrize(("old", "new"), [
    ("ratio > 1.1", "ratio > 1.3"),                      # over plan by > 10%, not > 30%
    ("increase10m >= 3", "increase10m >= 5"),            # storm threshold
    ("\n          and eochain_tiles_remaining offset 10m", ""),  # a fresh campaign is not stalled
    ("> on (campaign) 1.1 *", "> on (campaign) 1.3 *"),   # spent over plan by > 10%
    ('up{job="eochain", campaign!=""} == 0', "up == 0"),  # a Ray node is no driver
    ("-campaign:eochain_deadline_slack_seconds:estimate > 0",
     "-campaign:eochain_deadline_slack_seconds:estimate > 7200"),
])
def test_rule_unit_tests_catch_a_changed_rule(tmp_path: Path, old: str, new: str) -> None:
    text = RULES.read_text()
    assert old in text
    (tmp_path / "tests").mkdir()
    (tmp_path / "eochain.yml").write_text(text.replace(old, new))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    out = _promtool("test", "rules", tmp_path / "tests" / RULE_TESTS.name)
    assert out.returncode != 0, f"rule tests still pass with {old!r} -> {new!r}"
