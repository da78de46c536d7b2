"""Built-in handlers that need no network peer: OTel log events, Python logging, payloads,
and the secret handling every handler shares."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

from otel_llm_quota import AlertState, LLMProviderManager, SpanRef
from otel_llm_quota.handlers import (
    AlertmanagerAlertHandler,
    EmailAlertHandler,
    LoggingAlertHandler,
    OTelLogEventHandler,
    SlackAlertHandler,
    WebhookAlertHandler,
    build_message,
    sign,
    slack_message,
    webhook_payload,
)
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler


@pytest.fixture
def log_exporter() -> InMemoryLogRecordExporter:
    return InMemoryLogRecordExporter()


@pytest.fixture
def logger_provider(log_exporter: InMemoryLogRecordExporter) -> Iterator[LoggerProvider]:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def tracer_provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


async def test_otel_log_event_carries_the_crossing_spans_trace_context(
    manager: LLMProviderManager,
    recorder: RecordingAlertHandler,
    logger_provider: LoggerProvider,
    log_exporter: InMemoryLogRecordExporter,
    tracer_provider: TracerProvider,
) -> None:
    manager.add_alert_handler(OTelLogEventHandler(logger_provider))
    await manager.set_quota_limit("a", 1000, thresholds=(80,), period="day", provider="openai")
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        ctx = span.get_span_context()
        ref = SpanRef(ctx.trace_id, ctx.span_id, int(ctx.trace_flags))
        manager.record_usage("a", input_tokens=850, span=ref)

    await manager.check_quotas()

    (record,) = [r.log_record for r in log_exporter.get_finished_logs()]
    assert record.event_name == "llm.quota.threshold"
    assert record.severity_number is SeverityNumber.WARN
    assert record.severity_text == "WARN"
    assert record.trace_id == ctx.trace_id
    assert record.span_id == ctx.span_id
    assert dict(record.attributes or {}) == {
        "llm.quota.config_id": "a",
        "gen_ai.provider.name": "openai",
        "llm.quota.usage": 850,
        "llm.quota.limit": 1000,
        "llm.quota.utilization": 0.85,
        "llm.quota.threshold": 80.0,
        "llm.quota.alert.state": "firing",
        "llm.quota.alert.reason": "threshold_crossed",
        "llm.quota.period.end": "2026-03-15T00:00:00.000Z",
        "llm.quota.alert.fingerprint": recorder.alerts[0].fingerprint,
    }
    assert isinstance(record.body, str)
    assert "crossed 80%" in record.body


async def test_otel_log_event_severity_error_at_100_and_info_when_resolved(
    manager: LLMProviderManager,
    clock: FakeClock,
    logger_provider: LoggerProvider,
    log_exporter: InMemoryLogRecordExporter,
) -> None:
    manager.add_alert_handler(OTelLogEventHandler(logger_provider, event_name="quota.alert"))
    await manager.set_quota_limit("a", 100, thresholds=(80, 100), period="day")
    manager.record_usage("a", input_tokens=100)
    await manager.check_quotas()
    clock.advance(timedelta(days=1))
    await manager.check_quotas()

    firing, resolved = [r.log_record for r in log_exporter.get_finished_logs()]
    assert firing.event_name == resolved.event_name == "quota.alert"
    assert (firing.severity_number, firing.severity_text) == (SeverityNumber.ERROR, "ERROR")
    assert (resolved.severity_number, resolved.severity_text) == (SeverityNumber.INFO, "INFO")
    assert resolved.attributes is not None
    assert resolved.attributes["llm.quota.alert.state"] == "resolved"
    assert resolved.attributes["llm.quota.alert.reason"] == "period_reset"
    # No span crossed anything for these: no trace context, not the caller's either.
    assert firing.trace_id == 0
    assert resolved.trace_id == 0


async def test_logging_handler_levels_message_and_extra(
    manager: LLMProviderManager, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager.add_alert_handler(LoggingAlertHandler("test.quota.alerts"))
    await manager.set_quota_limit("a", 100, thresholds=(50, 100), period="day", provider="openai")
    caplog.set_level(logging.INFO, logger="test.quota.alerts")
    manager.record_usage("a", input_tokens=60)
    await manager.check_quotas()
    manager.record_usage("a", input_tokens=40)
    await manager.check_quotas()
    clock.advance(timedelta(days=1))
    await manager.check_quotas()

    records = [r for r in caplog.records if r.name == "test.quota.alerts"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.ERROR, logging.INFO]
    assert records[0].getMessage() == "LLM quota a crossed 50% (60.0% used)"
    first = records[0].__dict__
    assert first["llm_quota_config_id"] == "a"
    assert first["llm_quota_provider"] == "openai"
    assert first["llm_quota_state"] == "firing"
    assert first["llm_quota_threshold_percent"] == 50
    assert first["llm_quota_usage_tokens"] == 60
    assert first["llm_quota_limit_tokens"] == 100
    assert first["llm_quota_utilization"] == 0.6
    assert first["llm_quota_period_end"] == "2026-03-15T00:00:00.000Z"
    assert records[2].__dict__["llm_quota_state"] == "resolved"
    assert records[2].__dict__["llm_quota_thresholds"] == [50, 100]


async def test_webhook_payload_fingerprints_are_stable_from_firing_to_resolved(
    manager: LLMProviderManager, clock: FakeClock, recorder: RecordingAlertHandler
) -> None:
    await manager.set_quota_limit("a", 100, thresholds=(50, 90), period="day", provider="openai")
    manager.record_usage("a", input_tokens=60)
    await manager.check_quotas()
    manager.record_usage("a", input_tokens=35)
    await manager.check_quotas()
    clock.advance(timedelta(days=1))
    await manager.check_quotas()
    first, second, resolved = recorder.alerts

    bodies = [webhook_payload(a, receiver="r") for a in (first, second, resolved)]

    assert [b["status"] for b in bodies] == ["firing", "firing", "resolved"]
    by_threshold = [{e["labels"]["threshold"]: e for e in b["alerts"]} for b in bodies]
    assert set(by_threshold[0]) == {"50"}
    assert set(by_threshold[1]) == set(by_threshold[2]) == {"50", "90"}
    for level in ("50", "90"):
        assert by_threshold[1][level]["fingerprint"] == by_threshold[2][level]["fingerprint"]
    assert by_threshold[0]["50"]["fingerprint"] == by_threshold[2]["50"]["fingerprint"]
    assert by_threshold[1]["50"]["fingerprint"] != by_threshold[1]["90"]["fingerprint"]
    assert by_threshold[2]["90"]["status"] == "resolved"
    assert by_threshold[2]["90"]["endsAt"] == "2026-03-15T15:09:26.000Z"
    assert by_threshold[1]["90"]["endsAt"] == "0001-01-01T00:00:00Z"
    assert bodies[1]["commonLabels"] == {
        "alertname": "LLMQuotaThreshold",
        "config_id": "a",
        "provider": "openai",
        "severity": "warning",
    }
    json.dumps(bodies)  # JSON-ready


async def test_alertmanager_firing_alerts_last_until_the_next_repost_resolved_at_resolution(
    manager: LLMProviderManager, clock: FakeClock, recorder: RecordingAlertHandler
) -> None:
    handler = AlertmanagerAlertHandler("http://127.0.0.1:9/", labels={"team": "ml"})
    await manager.set_quota_limit("a", 100, thresholds=(100,), period="day")
    manager.record_usage("a", input_tokens=100)
    await manager.check_quotas()
    await manager.reset_quota_cache("a")
    await manager.check_quotas()
    firing, resolved = recorder.alerts

    (posted,) = handler.alerts_for(firing)
    (ended,) = handler.alerts_for(resolved)

    assert (
        posted["labels"]
        == ended["labels"]
        == {
            "alertname": "LLMQuotaThreshold",
            "config_id": "a",
            "threshold": "100",
            "severity": "critical",
            "team": "ml",
        }
    )
    assert posted["startsAt"] == "2026-03-14T15:09:26.000Z"
    # The monitor re-posts after the cooldown (1 h): the alert lasts until then, plus 5 minutes.
    assert firing.repeat_at == datetime(2026, 3, 14, 16, 9, 26, tzinfo=timezone.utc)
    assert posted["endsAt"] == "2026-03-14T16:14:26.000Z"
    assert ended["endsAt"] == "2026-03-14T15:09:26.000Z"
    assert resolved.state is AlertState.RESOLVED
    assert resolved.repeat_at is None

    # Near the period's end the alert resolves then, rather than being re-posted.
    clock.set(datetime(2026, 3, 14, 23, 30, tzinfo=timezone.utc))
    manager.record_usage("a", input_tokens=100)
    [late] = await manager.check_quotas()
    assert late.repeat_at == datetime(2026, 3, 15, tzinfo=timezone.utc)
    assert handler.alerts_for(late)[0]["endsAt"] == "2026-03-15T00:05:00.000Z"


async def test_slack_message_uses_block_kit(
    manager: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    await manager.set_quota_limit("a<b>", 1000, thresholds=(90,), provider="openai")
    manager.record_usage("a<b>", input_tokens=950)
    await manager.check_quotas()

    message = slack_message(recorder.alerts[0])

    assert message["text"] == "LLM quota a&lt;b&gt; crossed 90% (95.0% used)"
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    assert message["blocks"][0]["text"]["type"] == "plain_text"
    fields = [f["text"] for f in message["blocks"][2]["fields"]]
    assert "*Config*\na&lt;b&gt;" in fields
    assert "*Usage*\n950 of 1,000 tokens (95.0%)" in fields


async def test_email_message_has_plain_and_html_parts(
    manager: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    await manager.set_quota_limit("<x>", 1000, thresholds=(90,), provider="openai")
    manager.record_usage("<x>", input_tokens=950)
    await manager.check_quotas()

    msg = build_message(recorder.alerts[0], sender="q@example.com", recipients=["a@example.com"])

    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "[LLM quota] FIRING: LLM quota <x> crossed 90% (95.0% used)"
    plain = msg.get_body(preferencelist=("plain",))
    rich = msg.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    assert "Usage (tokens)      950" in plain.get_content()  # type: ignore[attr-defined]
    assert "&lt;x&gt;" in rich.get_content()  # type: ignore[attr-defined]


def test_sign_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231 test case 2.
    assert sign("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


SECRET_URL = "https://hooks.example.com/services/T000/B000/s3cr3tT0k3n"


def test_secrets_never_show_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL", SECRET_URL)
    monkeypatch.setenv("OTEL_LLM_QUOTA_WEBHOOK_SECRET", "hmac-key-123")
    monkeypatch.setenv("OTEL_LLM_QUOTA_SMTP_PASSWORD", "smtp-pw-456")
    handlers = [
        SlackAlertHandler(),
        WebhookAlertHandler(SECRET_URL, headers={"Authorization": "Bearer tok-789"}),
        AlertmanagerAlertHandler("http://user:am-pw-000@am.example:9093"),
        EmailAlertHandler(sender="q@example.com", recipients="a@example.com, b@example.com"),
    ]
    shown = " ".join(repr(h) + str(vars(h)) for h in handlers)

    for secret in ("s3cr3tT0k3n", "hmac-key-123", "smtp-pw-456", "tok-789", "am-pw-000"):
        assert secret not in shown
    assert "https://hooks.example.com/…" in repr(handlers[0])
    assert handlers[1].signed
    assert handlers[3].recipients == ["a@example.com", "b@example.com"]


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_SMTP_HOST", "env-host")
    monkeypatch.setenv("OTEL_LLM_QUOTA_SMTP_SECURITY", "tls")
    monkeypatch.setenv("OTEL_LLM_QUOTA_EMAIL_FROM", "env@example.com")
    monkeypatch.setenv("OTEL_LLM_QUOTA_EMAIL_TO", "to@example.com")

    from_env = EmailAlertHandler()
    from_args = EmailAlertHandler(hostname="arg-host", security="none", port=2525)

    assert (from_env.hostname, from_env.security, from_env.port) == ("env-host", "tls", 465)
    assert (from_args.hostname, from_args.security, from_args.port) == ("arg-host", "none", 2525)
    assert from_env.sender == "env@example.com"


@pytest.mark.parametrize(
    ("factory", "variable"),
    [
        (lambda: WebhookAlertHandler(), "OTEL_LLM_QUOTA_WEBHOOK_URL"),
        (lambda: SlackAlertHandler(), "OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL"),
        (lambda: AlertmanagerAlertHandler(), "OTEL_LLM_QUOTA_ALERTMANAGER_URL"),
        (lambda: EmailAlertHandler(recipients="a@b.c"), "OTEL_LLM_QUOTA_EMAIL_FROM"),
    ],
)
def test_a_missing_destination_names_its_environment_variable(
    factory: object, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ValueError, match=variable):
        factory()  # type: ignore[operator]


def test_bad_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        WebhookAlertHandler("http://127.0.0.1:9/", max_attempts=0)
    with pytest.raises(ValueError, match="timeout_seconds"):
        SlackAlertHandler("http://127.0.0.1:9/", timeout_seconds=0)


def test_bad_environment_values_warn_and_fall_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_SMTP_SECURITY", "ssl3")
    monkeypatch.setenv("OTEL_LLM_QUOTA_SMTP_PORT", "seventy")

    handler = EmailAlertHandler(sender="q@example.com", recipients="a@example.com")

    assert (handler.security, handler.port) == ("starttls", 587)
    assert "OTEL_LLM_QUOTA_SMTP_SECURITY='ssl3'" in caplog.text
    assert "OTEL_LLM_QUOTA_SMTP_PORT='seventy'" in caplog.text


def test_a_bad_security_argument_is_refused() -> None:
    with pytest.raises(ValueError, match="security"):
        EmailAlertHandler(
            security="ssl3",  # type: ignore[arg-type]
            sender="q@example.com",
            recipients="a@example.com",
        )


def test_httpx_request_lines_are_redacted_in_their_normalised_form(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("httpx")
    WebhookAlertHandler("http://127.0.0.1:9?token=a b")  # httpx logs it as ...:9?token=a%20b
    caplog.set_level(logging.INFO, logger="httpx")

    logging.getLogger("httpx").info(
        'HTTP Request: %s %s "%s %d %s"',
        "POST",
        "http://127.0.0.1:9?token=a%20b",
        "HTTP/1.1",
        200,
        "OK",
    )

    assert "token" not in caplog.text
    assert "POST http://127.0.0.1:9/… " in caplog.text


@pytest.mark.parametrize(
    ("factory", "error"),
    [
        (
            lambda: EmailAlertHandler(sender="q@x.org", recipients="a@x.org", timeout_seconds="5"),
            TypeError,
        ),
        (
            lambda: EmailAlertHandler(sender="q@x.org", recipients="a@x.org", timeout_seconds=0),
            ValueError,
        ),
        (lambda: WebhookAlertHandler("http://127.0.0.1:9/", timeout_seconds="5"), TypeError),
        (lambda: WebhookAlertHandler("http://127.0.0.1:9/", backoff_seconds="1"), TypeError),
    ],
)
def test_bad_timeouts_are_refused_by_name(factory: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="_seconds"):
        factory()


def test_default_retries_fit_in_the_default_handler_timeout() -> None:
    handler = WebhookAlertHandler("http://127.0.0.1:9/")
    poster = handler._poster
    waits = sum(poster.backoff_seconds * 2**i for i in range(poster.max_attempts - 1))
    assert (
        poster.timeout_seconds * poster.max_attempts + waits
        < LLMProviderManager().handler_timeout_seconds
    )
