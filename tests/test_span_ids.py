"""Config ids from spans: unusable ones fall back along the resolution order, odd ones are kept."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from test_processor import GENAI, Harness

from otel_llm_quota import Alert, ConfigRule, LLMProviderManager, quota_config
from otel_llm_quota.handlers import LoggingAlertHandler
from otel_llm_quota.handlers._email import build_message
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

LONG = "p" * 257
TOKENS = {"gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 7}


@pytest.fixture
def sync_manager(clock: FakeClock) -> Iterator[LLMProviderManager]:
    manager = LLMProviderManager(clock=clock)
    yield manager
    manager.close()


def enter_quota_config(config_id: str) -> None:
    with quota_config(config_id):
        pass


def counted(harness: Harness) -> dict[str, int]:
    return {q.config_id: q.total_tokens for q in harness.manager.ledger.get_all()}


@pytest.mark.parametrize("provider", [LONG, "   ", "\t\n"], ids=["long", "blank", "whitespace"])
def test_an_unusable_provider_falls_back_to_the_default_config(
    sync_manager: LLMProviderManager, provider: str
) -> None:
    harness = Harness(sync_manager, default_config_id="fallback")
    harness.span({"gen_ai.provider.name": provider, **TOKENS})
    assert counted(harness) == {"fallback": 18}
    assert harness.quota("fallback").provider == provider
    assert harness.processor.stats.errors == 0


@pytest.mark.parametrize("blank", [" ", "   ", "\t"])
def test_a_blank_config_id_attribute_falls_back_to_the_provider(
    sync_manager: LLMProviderManager, blank: str
) -> None:
    harness = Harness(sync_manager)
    harness.span({**GENAI, "llm.quota.config_id": blank})
    assert counted(harness) == {"openai": 18}
    stats = harness.processor.stats
    assert (stats.errors, stats.skipped_values, stats.counted_spans) == (0, 1, 1)


def test_a_blank_config_id_attribute_falls_back_to_a_matching_rule(
    sync_manager: LLMProviderManager,
) -> None:
    harness = Harness(sync_manager, rules=[ConfigRule("by-rule", provider="openai")])
    harness.span({**GENAI, "llm.quota.config_id": "  "})
    assert counted(harness) == {"by-rule": 18}


def test_a_blank_attribute_and_an_unusable_provider_go_to_the_default(
    sync_manager: LLMProviderManager,
) -> None:
    harness = Harness(sync_manager)
    harness.span({"gen_ai.provider.name": LONG, "llm.quota.config_id": " ", **TOKENS})
    assert counted(harness) == {"unknown": 18}
    assert harness.processor.stats.errors == 0


def test_a_blank_resolver_answer_falls_through_to_the_provider(
    sync_manager: LLMProviderManager,
) -> None:
    harness = Harness(sync_manager, config_resolver=lambda usage: "   ")
    harness.span(GENAI)
    assert counted(harness) == {"openai": 18}
    assert harness.processor.stats.errors == 0


@pytest.mark.parametrize("config_id", ["a\nb", "a\rb", "a\x00b", "tenant\u2028x"])
def test_span_ids_with_control_characters_are_counted_as_they_are(
    sync_manager: LLMProviderManager, config_id: str
) -> None:
    harness = Harness(sync_manager)
    harness.span({**GENAI, "llm.quota.config_id": config_id})
    assert counted(harness) == {config_id: 18}
    assert sync_manager.ledger.get(config_id) is not None
    sync_manager.record_usage(config_id, input_tokens=2)  # a known id: the API adds to it
    assert counted(harness) == {config_id: 20}


@pytest.mark.parametrize("config_id", ["a\nb", "a\rb", "a\x00b", "x\u2029y", "\x1b[31mred"])
def test_the_api_refuses_ids_with_control_characters(
    sync_manager: LLMProviderManager, config_id: str
) -> None:
    calls: list[Any] = [
        lambda: sync_manager.set_quota_limit_sync(config_id, 100),
        lambda: sync_manager.record_usage(config_id, input_tokens=1),
        lambda: ConfigRule(config_id, provider="openai"),
        lambda: enter_quota_config(config_id),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="must not contain control characters"):
            call()
    assert sync_manager.ledger.get_all() == []


# -- ids from spans are escaped where they are written -------------------------------------------

FORGED = "tenant\nERROR forged line\r\nBcc: evil@example.com\x00"


async def alert_for(manager: LLMProviderManager, recorder: RecordingAlertHandler) -> Alert:
    """A real firing alert, then given an id with control characters (as a span could carry)."""
    await manager.set_quota_limit("tenant", 100, thresholds=(50,))
    manager.record_usage("tenant", input_tokens=60)
    await manager.check_quotas()
    (alert,) = recorder.alerts
    return dataclasses.replace(
        alert, config_id=FORGED, quota=dataclasses.replace(alert.quota, config_id=FORGED)
    )


async def test_the_logging_handler_writes_one_line_for_an_id_with_newlines(
    manager: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    alert = await alert_for(manager, recorder)
    stream = io.StringIO()
    logger = logging.getLogger("test.quota.forged")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        LoggingAlertHandler(logger).handle_alert(alert)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == (
        "LLM quota tenant\\nERROR forged line\\r\\nBcc: evil@example.com\\x00 crossed 50% "
        "(60.0% used)\n"
    )


async def test_the_mail_subject_escapes_an_id_with_newlines(
    manager: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    alert = await alert_for(manager, recorder)
    msg = build_message(alert, sender="q@example.com", recipients=["ops@example.com"])
    assert msg["Subject"] == (
        "[LLM quota] FIRING: LLM quota tenant\\nERROR forged line\\r\\nBcc: "
        "evil@example.com\\x00 crossed 50% (60.0% used)"
    )
    sent = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert sorted(sent.keys()) == sorted(msg.keys())  # no header forged into the wire form
    assert "Bcc" not in sent
    assert sent["Subject"] == msg["Subject"]


@pytest.mark.parametrize("bad", ["  ", "x" * 257, 5])
def test_an_unusable_attribute_set_at_start_falls_back_to_the_quota_config_block(
    sync_manager: LLMProviderManager, bad: Any
) -> None:
    harness = Harness(sync_manager)
    with quota_config("from-block"):
        harness.span({**GENAI, "llm.quota.config_id": bad})
    assert counted(harness) == {"from-block": 18}


def test_a_usable_attribute_still_wins_over_the_quota_config_block(
    sync_manager: LLMProviderManager,
) -> None:
    harness = Harness(sync_manager)
    with quota_config("from-block"):
        harness.span({**GENAI, "llm.quota.config_id": "from-attribute"})
    assert counted(harness) == {"from-attribute": 18}
