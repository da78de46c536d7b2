"""``otel-llm-quota doctor`` and the zero-code entry point's start-up lines: what does not
depend on the instrumentation packages installed (config, quotas, handlers, store, redaction).

With the test extra's instrumentations: tests/integration/test_doctor_env.py; a broken install
(the incompatible opentelemetry-util-genai) in a venv of its own:
tests/integration/test_zero_code_readme.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider

from otel_llm_quota import _registration
from otel_llm_quota._autoinstrument import post_instrument
from otel_llm_quota.cli import cli

NONE_EXPORTERS = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


@pytest.fixture(autouse=True)
def clean_env(no_quota_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        "ANTHROPIC_OPEN_TELEMETRY",
    ):
        monkeypatch.delenv(name, raising=False)


def doctor(*args: str, **env: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["doctor", "--json", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def find(report: dict[str, Any], section: str, fragment: str = "") -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["section"] == section and fragment in c["name"]]


def test_nothing_configured_is_warnings_not_a_failure() -> None:
    code, report = doctor(**NONE_EXPORTERS)
    assert code == 0
    statuses = {c["section"]: c["status"] for c in report["checks"]}
    assert statuses["Quotas"] == "warning"
    assert statuses["Handlers"] == "warning"
    assert statuses["Store"] == "info"


def test_a_broken_config_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "quotas.json"
    path.write_text(json.dumps({"quotas": [{"config_id": "openai", "limit": 0}]}))
    code, report = doctor("--config", str(path), **NONE_EXPORTERS)
    assert code == 1
    (error,) = [c for c in report["checks"] if c["status"] == "failure"]
    assert "quota_limit must be > 0" in error["detail"]
    path.write_text("{not json")
    code, _ = doctor(**NONE_EXPORTERS, OTEL_LLM_QUOTA_CONFIG_FILE=str(path))
    assert code == 1


def test_an_unreachable_store_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'quota.db'}"
    code, report = doctor("--store", url, **NONE_EXPORTERS)
    assert code == 1
    (store,) = find(report, "Store")
    assert store["status"] == "failure"


def test_secrets_are_redacted() -> None:
    secret_url = "https://hooks.slack.com/services/T000/B000/s3cr3t-t0ken"
    password = "hunter2-smtp-password"
    result = CliRunner().invoke(
        cli,
        ["doctor"],
        env={
            **NONE_EXPORTERS,
            "OTEL_LLM_QUOTA_ALERT_HANDLERS": "slack,email",
            "OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL": secret_url,
            "OTEL_LLM_QUOTA_SMTP_PASSWORD": password,
            "OTEL_LLM_QUOTA_SMTP_USERNAME": "alerts",
            "OTEL_LLM_QUOTA_EMAIL_FROM": "quota@example.com",
            "OTEL_LLM_QUOTA_EMAIL_TO": "ops@example.com",
            "OTEL_LLM_QUOTA_STORE": "redis://user:redis-pass@127.0.0.1:1/0",
            "COLUMNS": "300",
        },
    )
    assert "SlackAlertHandler" in result.output
    assert "EmailAlertHandler" in result.output
    assert "redis://user:***@127.0.0.1:1/0" in result.output
    for secret in ("s3cr3t-t0ken", password, "redis-pass"):
        assert secret not in result.output
    assert result.exit_code == 1  # the store is unreachable


@pytest.fixture
def sdk_provider(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A local SDK provider that post_instrument takes for the global one (never set here)."""
    provider = TracerProvider()
    monkeypatch.setattr(
        "otel_llm_quota._autoinstrument.trace.get_tracer_provider", lambda: provider
    )
    yield provider
    provider.shutdown()
    _registration._reset_for_tests()


def test_post_instrument_logs_what_it_attached_and_warns_without_instrumentation(
    sdk_provider: TracerProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "openai=1000")
    monkeypatch.setenv("OTEL_LLM_QUOTA_ALERT_HANDLERS", "logging")
    monkeypatch.setenv("OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS", "60")
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")  # no SDK spans either
    with caplog.at_level(logging.INFO, logger="otel_llm_quota._autoinstrument"):
        post_instrument()
    records = [r for r in caplog.records if r.name == "otel_llm_quota._autoinstrument"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert records[0].getMessage() == (
        "otel-llm-quota: counting LLM spans; quotas: openai=1000; store: none (this process "
        "only); handlers: LoggingAlertHandler(name='logging', logger='otel_llm_quota.alerts'); "
        "LLM instrumentations: none"
    )
    assert "no LLM instrumentation is active" in records[1].getMessage()
