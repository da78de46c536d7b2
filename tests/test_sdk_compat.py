"""Surviving SDK upgrades: when the SDK internals the processor's fast path reads are renamed,
the processor notices at construction, warns once, and counts through the public span API."""

from __future__ import annotations

import inspect
import logging

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Status, StatusCode

from otel_llm_quota import LLMProviderManager, QuotaSpanProcessor
from otel_llm_quota.testing import FakeClock


@pytest.fixture
def status_code_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SDK release that renamed ``Status._status_code`` to ``_code``; public API unchanged."""
    original = Status.__init__

    def init(
        self: Status, status_code: StatusCode = StatusCode.UNSET, description: str | None = None
    ) -> None:
        original(self, status_code, description)
        self._code = self.__dict__.pop("_status_code")  # type: ignore[attr-defined]

    monkeypatch.setattr(Status, "__init__", init)
    monkeypatch.setattr(Status, "status_code", property(lambda self: self._code))
    monkeypatch.setattr(Status, "is_unset", property(lambda self: self._code is StatusCode.UNSET))
    monkeypatch.setattr(
        Status, "is_ok", property(lambda self: self.is_unset or self._code is StatusCode.OK)
    )
    # The default status of ReadableSpan.__init__ was built at import time, under the old name.
    default = inspect.signature(ReadableSpan.__init__).parameters["status"].default
    monkeypatch.setattr(default, "_code", default.__dict__["_status_code"], raising=False)
    monkeypatch.delattr(default, "_status_code")


def _run_spans(processor: QuotaSpanProcessor) -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("sdk-compat")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("chat") as span:
        span.set_attributes(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 7,
                "gen_ai.response.id": "chatcmpl-1",
            }
        )
    with tracer.start_as_current_span("chat") as span:
        span.set_attributes({"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat"})
        span.set_status(Status(StatusCode.ERROR))
    # The same response reported by a second instrumentation: counted once.
    other = provider.get_tracer("other-instrumentation")
    with other.start_as_current_span("chat") as span:
        span.set_attributes(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 7,
                "gen_ai.response.id": "chatcmpl-1",
            }
        )
    provider.shutdown()


@pytest.mark.usefixtures("status_code_renamed")
def test_renamed_internals_fall_back_to_the_public_api(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LLMProviderManager(clock=clock)
    with caplog.at_level(logging.WARNING, logger="otel_llm_quota"):
        processor = QuotaSpanProcessor(manager)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "public API" in warnings[0].getMessage()
    _run_spans(processor)
    info = manager.ledger.get("openai")
    assert info is not None
    assert (info.input_tokens, info.output_tokens) == (11, 7)
    assert (info.successful_requests, info.failed_requests) == (1, 1)
    stats = processor.stats
    assert (stats.counted_spans, stats.duplicate_spans, stats.errors) == (2, 1, 0)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    manager.close()


def test_the_pinned_sdk_takes_the_fast_path_with_the_same_results(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LLMProviderManager(clock=clock)
    with caplog.at_level(logging.WARNING, logger="otel_llm_quota"):
        processor = QuotaSpanProcessor(manager)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "on_end" not in vars(processor)  # the class's fast on_end, not the portable one
    _run_spans(processor)
    info = manager.ledger.get("openai")
    assert info is not None
    assert (info.input_tokens, info.output_tokens) == (11, 7)
    assert (info.successful_requests, info.failed_requests) == (1, 1)
    stats = processor.stats
    assert (stats.counted_spans, stats.duplicate_spans, stats.errors) == (2, 1, 0)
    manager.close()
