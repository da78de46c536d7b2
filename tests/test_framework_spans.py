"""Counting once when a framework's span repeats a provider span's usage without its response id
(OpenLLMetry's LangChain span beside openai-v2's span of a streamed call, in separate traces).

The real packages are exercised in tests/integration/test_llm_spans.py (``langchain_openai_v2``);
these tests pin the rule itself, both orders of ending and its documented limits.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from otel_llm_quota import Conventions, LLMProviderManager, QuotaSpanProcessor
from otel_llm_quota.testing import FakeClock

LANGCHAIN = "opentelemetry.instrumentation.langchain"
OPENAI_V2 = "opentelemetry.instrumentation.openai_v2"
OPENLLMETRY_OPENAI = "opentelemetry.instrumentation.openai"
SECOND = 10**9


def provider_span(response_id: str, input_tokens: int = 11) -> dict[str, Any]:
    return {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": response_id,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": 7,
    }


def framework_span(input_tokens: int = 11) -> dict[str, Any]:
    return {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",  # a stream: LangChain saw no response model
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.total_tokens": input_tokens + 7,
    }


class App:
    def __init__(self, clock: FakeClock) -> None:
        self.manager = LLMProviderManager(clock=clock)
        self.processor = QuotaSpanProcessor(self.manager)
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)

    def start(self, scope: str, attributes: dict[str, Any]) -> Span:
        """Start one span of ``scope`` in a trace of its own (a root span)."""
        tracer = self.provider.get_tracer(scope)
        return tracer.start_span("chat", context=Context(), attributes=attributes)

    def end(self, scope: str, attributes: dict[str, Any], at_seconds: float = 0.0) -> None:
        finish(self.start(scope, attributes), at_seconds)

    def counted(self) -> tuple[int, int, int]:
        info = self.manager.ledger.get("openai")
        assert info is not None
        return info.input_tokens, info.output_tokens, info.successful_requests


def finish(span: Span, at_seconds: float = 0.0) -> None:
    span.end(end_time=int((1_800_000_000 + at_seconds) * SECOND))


@pytest.fixture
def app(clock: FakeClock) -> Iterator[App]:
    a = App(clock)
    yield a
    a.provider.shutdown()
    a.manager.close()


def test_provider_span_first_then_framework_span(app: App) -> None:
    # The order of a streamed LangChain call: LangChain's span starts, openai-v2's span starts
    # and ends when the stream is read to its end, then LangChain's span ends.
    outer = app.start(LANGCHAIN, {})
    app.end(OPENAI_V2, provider_span("chatcmpl-1"))
    outer.set_attributes(framework_span())
    finish(outer, at_seconds=0.01)
    assert app.counted() == (11, 7, 1)
    assert app.processor.stats.duplicate_spans == 1


def test_framework_span_first_then_provider_span(app: App) -> None:
    app.end(LANGCHAIN, framework_span())
    app.end(OPENAI_V2, provider_span("chatcmpl-1"), at_seconds=0.5)
    assert app.counted() == (11, 7, 1)
    assert app.processor.stats.duplicate_spans == 1


def test_each_provider_span_pairs_with_one_framework_span(app: App) -> None:
    # Two identical calls at once: two pairs, two requests.
    outers = [app.start(LANGCHAIN, framework_span()) for _ in range(2)]
    app.end(OPENAI_V2, provider_span("chatcmpl-1"))
    app.end(OPENAI_V2, provider_span("chatcmpl-2"))
    for outer in outers:
        finish(outer)
    app.end(LANGCHAIN, framework_span())  # a third with no twin: a call of its own, counted
    assert app.counted() == (33, 21, 3)


def test_different_token_counts_are_different_calls(app: App) -> None:
    outer = app.start(LANGCHAIN, framework_span(input_tokens=12))
    app.end(OPENAI_V2, provider_span("chatcmpl-1", input_tokens=11))
    finish(outer)
    assert app.counted() == (23, 14, 2)


def test_a_second_provider_instrumentation_does_not_leave_a_twin_behind(app: App) -> None:
    # openai-v2 and OpenLLMetry's openai both report the response (same id), LangChain without it.
    outer = app.start(LANGCHAIN, framework_span())
    app.end(OPENAI_V2, provider_span("chatcmpl-1"))
    app.end(OPENLLMETRY_OPENAI, provider_span("chatcmpl-1"))
    finish(outer)
    assert app.counted() == (11, 7, 1)
    # A later LangChain-only call with the same numbers finds no stale twin and counts.
    app.end(LANGCHAIN, framework_span(), at_seconds=1)
    assert app.counted() == (22, 14, 2)


def test_a_framework_span_deduped_by_its_id_takes_its_twin_along(app: App) -> None:
    outer = app.start(LANGCHAIN, {**framework_span(), "gen_ai.response.id": "chatcmpl-1"})
    app.end(OPENAI_V2, provider_span("chatcmpl-1"))
    finish(outer)  # a non-streamed call: the same id on both spans
    app.end(LANGCHAIN, framework_span(), at_seconds=1)  # another call, LangChain-only
    assert app.counted() == (22, 14, 2)


def test_limit_spans_further_apart_than_the_window_both_count(app: App) -> None:
    outer = app.start(LANGCHAIN, framework_span())
    app.end(OPENAI_V2, provider_span("chatcmpl-1"))
    finish(outer, at_seconds=61)
    assert app.counted() == (22, 14, 2)


def test_limit_a_provider_span_ended_before_any_framework_span_started_is_not_remembered(
    app: App,
) -> None:
    # Pairing starts with the first framework span's start; a framework always starts its span
    # before the call it wraps, so this order only arises from spans made by hand.
    app.end(OPENAI_V2, provider_span("chatcmpl-1"))
    app.end(LANGCHAIN, framework_span())
    assert app.counted() == (22, 14, 2)


def test_no_framework_scopes_no_pairing(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock)
    conventions = Conventions(framework_scopes=())
    processor = QuotaSpanProcessor(manager, conventions=conventions)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for scope, attributes in (
        (OPENAI_V2, provider_span("chatcmpl-1")),
        (LANGCHAIN, framework_span()),
    ):
        provider.get_tracer(scope).start_span(
            "chat", context=Context(), attributes=attributes
        ).end()
    info = manager.ledger.get("openai")
    assert info is not None
    assert info.successful_requests == 2
    provider.shutdown()
    manager.close()


def test_long_models_pair_and_are_not_kept_whole(app: App) -> None:
    long_model = "m" * 20_000
    outer = app.start(LANGCHAIN, {**framework_span(), "gen_ai.request.model": long_model})
    app.end(OPENAI_V2, {**provider_span("chatcmpl-0"), "gen_ai.request.model": long_model})
    finish(outer)
    assert app.counted() == (11, 7, 1)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):  # provider spans waiting for a twin, each with its own 20 KB model
            model = f"{i:08d}" + "m" * 20_000
            app.end(
                OPENAI_V2, {**provider_span(f"chatcmpl-{i + 1}"), "gen_ai.request.model": model}
            )
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, kept  # the 200 models whole would be 4 MB
