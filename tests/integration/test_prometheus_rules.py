"""collector-config/prometheus-rules.yaml, checked and unit-tested by the real ``promtool``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import require_binary

pytestmark = pytest.mark.integration

CONFIG_DIR = Path(__file__).resolve().parents[2] / "collector-config"
RULES = CONFIG_DIR / "prometheus-rules.yaml"
RULES_TEST = CONFIG_DIR / "prometheus-rules.test.yaml"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", "run `make system-deps` (Debian package prometheus)")
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name, cwd=CONFIG_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout + result.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", RULES_TEST.name, cwd=CONFIG_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("original", "mutant", "alert"),
    [
        (
            "llm_quota_utilization_ratio >= 0.8 < 1",
            "llm_quota_utilization_ratio >= 0.9 < 1",
            "LLMQuotaHigh",
        ),
        (
            "llm_quota_utilization_ratio >= 1",
            "llm_quota_utilization_ratio > 1.5",
            "LLMQuotaExhausted",
        ),
        (
            "rate(llm_quota_tokens_total[5m])\n                ) > 0",
            "rate(llm_quota_tokens_total[5m])\n                ) > 100",
            "LLMQuotaWillRunOutBeforeReset",
        ),
        (
            "llm_quota_handler_failures_total > 0 unless",
            "llm_quota_handler_failures_total unless",
            "LLMQuotaAlertHandlerFailing",
        ),
    ],
)
def test_unit_tests_catch_a_broken_rule(
    tmp_path: Path, original: str, mutant: str, alert: str
) -> None:
    """The unit tests are not vacuous: a plausible mistake in each alert makes them fail."""
    text = RULES.read_text()
    assert text.count(original) == 1
    (tmp_path / RULES.name).write_text(text.replace(original, mutant))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stdout + result.stderr


def test_readme_rename_adapts_the_rules_to_the_apps_own_endpoint(tmp_path: Path) -> None:
    """collector-config/README.md: scraping apps directly, the utilization is
    llm_quota_utilization; renaming it in the rules (and their tests) is all it takes."""
    for source in (RULES, RULES_TEST):
        text = source.read_text()
        assert "llm_quota_utilization_ratio" in text
        renamed = text.replace("llm_quota_utilization_ratio", "llm_quota_utilization")
        (tmp_path / source.name).write_text(renamed)
    check = promtool("check", "rules", RULES.name, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
