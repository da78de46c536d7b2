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
    assert "SUCCESS: 12 rules found" in result.stdout + result.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", RULES_TEST.name, cwd=CONFIG_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


FLEET = "by (job, llm_quota_config_id, gen_ai_provider_name)"
PER_INSTANCE = "by (job, instance, llm_quota_config_id, gen_ai_provider_name)"
UTILIZATION = "(llm_quota_utilization_ratio)"
TOKEN_RATE = "(\n            rate(llm_quota_tokens_total[5m])"  # the recording rule's
TOKEN_RATE_INLINE = "(\n                  rate(llm_quota_tokens_total[5m])"  # the alert's
FAILED_REQUESTS = (
    '(\n            rate(llm_quota_requests_total{llm_quota_request_outcome="failure"}'
)


def alert(name: str) -> str:
    """How promtool names a failed alert test."""
    return f"alertname: {name},"


def recorded(expr: str) -> str:
    """How promtool names a failed expression test."""
    return f'expr: "{expr}"'


MUTANTS = {
    # Thresholds and the first-failure arms.
    "high-threshold": (
        f"{UTILIZATION} >= 0.8 < 1",
        f"{UTILIZATION} >= 0.9 < 1",
        alert("LLMQuotaHigh"),
    ),
    "exhausted-threshold": (
        f"{UTILIZATION} >= 1",
        f"{UTILIZATION} > 1.5",
        alert("LLMQuotaExhausted"),
    ),
    "run-out-rate-threshold": (
        "rate(llm_quota_tokens_total[5m])\n                ) > 0",
        "rate(llm_quota_tokens_total[5m])\n                ) > 100",
        alert("LLMQuotaWillRunOutBeforeReset"),
    ),
    "handler-first-failure-arm": (
        "llm_quota_handler_failures_total > 0 unless",
        "llm_quota_handler_failures_total unless",
        alert("LLMQuotaAlertHandlerFailing"),
    ),
    "store-first-failure-arm-dropped": (
        "\n          or\n          (llm_quota_store_errors_total > 0 unless"
        " llm_quota_store_errors_total offset 10m)",
        "",
        alert("LLMQuotaStoreFailing"),
    ),
    # Fleet-wide gauges summed over the replicas, as if each counted separately.
    "exhausted-gauge-summed": (
        f"max {FLEET} {UTILIZATION} >= 1",
        f"sum {FLEET} {UTILIZATION} >= 1",
        alert("LLMQuotaExhausted"),
    ),
    "high-gauge-summed": (
        f"max {FLEET} {UTILIZATION} >= 0.8",
        f"sum {FLEET} {UTILIZATION} >= 0.8",
        alert("LLMQuotaHigh"),
    ),
    "remaining-summed": (
        f"min {FLEET} (llm_quota_remaining)\n          /",
        f"sum {FLEET} (llm_quota_remaining)\n          /",
        recorded('llm_quota:seconds_to_exhaustion:rate5m{llm_quota_config_id=\\"burn\\"}'),
    ),
    # One alert per replica instead of one per config (and `for:` restarting with a replica).
    "exhausted-per-instance": (
        f"max {FLEET} {UTILIZATION} >= 1",
        f"max {PER_INSTANCE} {UTILIZATION} >= 1",
        alert("LLMQuotaExhausted"),
    ),
    "high-per-instance": (
        f"max {FLEET} {UTILIZATION} >= 0.8",
        f"max {PER_INSTANCE} {UTILIZATION} >= 0.8",
        alert("LLMQuotaHigh"),
    ),
    "failed-ratio-per-instance": (
        f"sum {FLEET} {FAILED_REQUESTS}",
        f"sum {PER_INSTANCE} {FAILED_REQUESTS}",
        recorded("llm_quota:requests_failed:ratio_rate5m"),
    ),
    # The stale replica's value instead of the freshest one.
    "high-from-the-stalest-replica": (
        f"max {FLEET} {UTILIZATION} >= 0.8",
        f"min {FLEET} {UTILIZATION} >= 0.8",
        alert("LLMQuotaHigh"),
    ),
    "run-out-from-the-stalest-remaining": (
        f"min {FLEET} (llm_quota_remaining)\n              /",
        f"max {FLEET} (llm_quota_remaining)\n              /",
        alert("LLMQuotaWillRunOutBeforeReset"),
    ),
    # Own-contribution counters not summed: one replica's rate taken for the fleet's.
    "token-rate-max": (
        f"sum {FLEET} {TOKEN_RATE}",
        f"max {FLEET} {TOKEN_RATE}",
        recorded("llm_quota:tokens:rate5m"),
    ),
    "run-out-token-rate-max": (
        f"sum {FLEET} {TOKEN_RATE_INLINE}",
        f"max {FLEET} {TOKEN_RATE_INLINE}",
        alert("LLMQuotaWillRunOutBeforeReset"),
    ),
    # Cost budgets: thresholds, the fleet-wide cost gauges summed or taken per replica, the
    # per-process cost counters not summed, the unpriced alert's first-request arm dropped.
    "cost-high-threshold": (
        "(llm_quota_cost_limit_USD)\n          >= 0.8 < 1",
        "(llm_quota_cost_limit_USD)\n          >= 0.9 < 1",
        alert("LLMQuotaCostHigh"),
    ),
    "cost-exhausted-threshold": (
        "(llm_quota_cost_limit_USD)\n          >= 1\n",
        "(llm_quota_cost_limit_USD)\n          >= 1.5\n",
        alert("LLMQuotaCostExhausted"),
    ),
    "cost-high-usage-summed": (
        f"(llm_quota_cost_usage_USD)\n          /\n          max {FLEET} "
        "(llm_quota_cost_limit_USD)\n          >= 0.8",
        f"(llm_quota_cost_usage_USD)\n          /\n          sum {FLEET} "
        "(llm_quota_cost_limit_USD)\n          >= 0.8",
        alert("LLMQuotaCostHigh"),
    ),
    "cost-high-per-instance": (
        f"max {FLEET} (llm_quota_cost_usage_USD)\n          /\n          max {FLEET} "
        "(llm_quota_cost_limit_USD)\n          >= 0.8",
        f"max {PER_INSTANCE} (llm_quota_cost_usage_USD)\n          /\n          max "
        f"{PER_INSTANCE} (llm_quota_cost_limit_USD)\n          >= 0.8",
        alert("LLMQuotaCostHigh"),
    ),
    "cost-rate-max": (
        f"sum {FLEET} (\n            rate(llm_quota_cost_USD_total[1h])",
        f"max {FLEET} (\n            rate(llm_quota_cost_USD_total[1h])",
        recorded("llm_quota:cost_usd_per_hour:rate1h"),
    ),
    "unpriced-first-request-arm-dropped": (
        "\n          or\n          sum by (job, llm_quota_config_id, gen_ai_provider_name) (\n"
        "            llm_quota_requests_unpriced_total > 0 unless "
        "llm_quota_requests_unpriced_total offset 1h\n          )",
        "",
        alert("LLMQuotaUnpricedRequests"),
    ),
}


@pytest.mark.parametrize(("original", "mutant", "failure"), MUTANTS.values(), ids=MUTANTS.keys())
def test_unit_tests_catch_a_broken_rule(
    tmp_path: Path, original: str, mutant: str, failure: str
) -> None:
    """The unit tests are not vacuous: a plausible mistake in each rule makes them fail, at
    the test of that rule. Among the mistakes: fleet-wide gauges summed or grouped by instance
    (an alert per replica), a stale replica's value preferred, per-process counters not summed.
    """
    text = RULES.read_text()
    assert text.count(original) == 1, original
    (tmp_path / RULES.name).write_text(text.replace(original, mutant))
    check = promtool("check", "rules", RULES.name, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr  # a valid rule, wrong answers
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert failure in result.stdout + result.stderr


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
