"""QuotaSpanProcessor: conventions, config-id resolution, counting once, bad input, lifecycle."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from _forking import fork_while_locked
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer

from otel_llm_quota import (
    DEFAULT_CONVENTIONS,
    ConfigRule,
    LLMProviderManager,
    QuotaInfo,
    QuotaSpanProcessor,
    SpanRef,
    SpanUsage,
    current_quota_config,
    quota_config,
)
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

GENAI = {
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 7,
}


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[metric_reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def sync_manager(clock: FakeClock) -> Iterator[LLMProviderManager]:
    manager = LLMProviderManager(clock=clock)
    yield manager
    manager.close()


class Harness:
    """A tracer provider with one QuotaSpanProcessor, and helpers to end spans."""

    def __init__(
        self, manager: LLMProviderManager, resource: Resource | None = None, **options: Any
    ) -> None:
        self.manager = manager
        self.processor = QuotaSpanProcessor(manager, **options)
        self.provider = TracerProvider(resource=resource or Resource({}))
        self.provider.add_span_processor(self.processor)
        self.tracer: Tracer = self.provider.get_tracer("test")

    def span(
        self,
        attributes: Mapping[str, Any] | None = None,
        *,
        error: bool = False,
        name: str = "llm",
        scope: str | None = None,
    ) -> None:
        """End one span; ``scope`` names another instrumentation (tracer) than the default."""
        tracer = self.tracer if scope is None else self.provider.get_tracer(scope)
        with tracer.start_as_current_span(name, attributes=attributes) as span:
            if error:
                span.set_status(Status(StatusCode.ERROR, "boom"))

    def quota(self, config_id: str) -> QuotaInfo:
        info = self.manager.ledger.get(config_id)
        assert info is not None, f"{config_id} was never recorded"
        return info


def make(manager: LLMProviderManager, **options: Any) -> Harness:
    return Harness(manager, **options)


# -- conventions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "config_id", "expected"),
    [
        pytest.param(GENAI, "openai", (11, 7, 0), id="genai-provider-name"),
        pytest.param(
            {
                "gen_ai.system": "openai",
                "gen_ai.usage.prompt_tokens": 20,
                "gen_ai.usage.completion_tokens": 4,
            },
            "openai",
            (20, 4, 0),
            id="older-prompt-completion-keys",
        ),
        pytest.param(
            {
                "gen_ai.provider.name": "anthropic",
                "gen_ai.usage.input_tokens": 13,
                "gen_ai.usage.output_tokens": 5,
                "gen_ai.usage.total_tokens": 18,
                "gen_ai.usage.cache_read.input_tokens": 3,
            },
            "anthropic",
            (13, 5, 0),
            id="openllmetry-total-equal-and-cache-detail-not-added",
        ),
        pytest.param(
            {"gen_ai.system": "cohere", "llm.usage.total_tokens": 40},
            "cohere",
            (0, 0, 40),
            id="openllmetry-total-only",
        ),
        pytest.param(
            {
                "llm.system": "openai",
                "llm.model_name": "gpt-4o",
                "llm.token_count.prompt": 11,
                "llm.token_count.completion": 7,
                "llm.token_count.total": 18,
                "llm.token_count.prompt_details.cache_read": 3,
            },
            "openai",
            (11, 7, 0),
            id="openinference",
        ),
        pytest.param(
            {"llm.provider": "azure", "llm.token_count.prompt": 2, "llm.token_count.total": 10},
            "azure",
            (2, 0, 8),
            id="total-above-input-plus-output",
        ),
        pytest.param(
            {"gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 1},
            "unknown",
            (3, 1, 0),
            id="no-provider-goes-to-default",
        ),
    ],
)
def test_reads_every_convention(
    sync_manager: LLMProviderManager,
    attributes: dict[str, Any],
    config_id: str,
    expected: tuple[int, int, int],
) -> None:
    harness = make(sync_manager)
    harness.span(attributes)
    quota = harness.quota(config_id)
    assert (quota.input_tokens, quota.output_tokens, quota.other_tokens) == expected
    assert quota.total_tokens == sum(expected)
    assert (quota.successful_requests, quota.failed_requests) == (1, 0)
    assert harness.processor.stats.counted_spans == 1


def test_spans_without_usage_create_nothing(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    harness.span({"http.request.method": "GET", "url.full": "http://127.0.0.1/"})
    harness.span()
    harness.span({"gen_ai.provider.name": "openai"})  # a stream read without usage
    assert sync_manager.ledger.config_ids() == []
    assert harness.processor.stats.counted_spans == 0


def test_failures_count_as_failed_requests(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    harness.span({"gen_ai.provider.name": "openai", "error.type": "RateLimitError"})
    harness.span({"llm.system": "openai"}, error=True)  # OpenInference: status only
    harness.span({**GENAI}, error=True)  # a failure that still reports usage
    harness.span(
        {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "execute_tool"}, error=True
    )
    quota = harness.quota("openai")
    assert (quota.successful_requests, quota.failed_requests) == (0, 3)
    assert (quota.input_tokens, quota.output_tokens) == (11, 7)


def test_custom_conventions_extend_the_defaults(sync_manager: LLMProviderManager) -> None:
    conventions = DEFAULT_CONVENTIONS.extend(
        input_tokens=("myco.tokens_in",), provider=("myco.vendor",)
    )
    harness = make(sync_manager, conventions=conventions)
    harness.span({"myco.vendor": "mistral", "myco.tokens_in": 9})
    assert harness.quota("mistral").input_tokens == 9
    assert conventions.input_tokens[0] == "gen_ai.usage.input_tokens"
    with pytest.raises(TypeError, match="unknown conventions field"):
        DEFAULT_CONVENTIONS.extend(nope=("x",))


# -- which configuration -------------------------------------------------------------------------


def test_resolution_order(sync_manager: LLMProviderManager) -> None:
    calls: list[SpanUsage] = []

    def resolver(usage: SpanUsage) -> str | None:
        calls.append(usage)
        return "from-resolver" if usage.model == "resolve-me" else None

    harness = make(
        sync_manager,
        rules=[ConfigRule("from-rule", provider="openai", model="gpt-4o*")],
        config_resolver=resolver,
    )
    # 1. the span attribute wins over everything
    with quota_config("from-context"):
        harness.span({**GENAI, "gen_ai.request.model": "gpt-4o", "llm.quota.config_id": "attr"})
    # 2. the quota_config block wins over rules
    with quota_config("from-context"):
        harness.span({**GENAI, "gen_ai.request.model": "gpt-4o"})
    # 3. a rule wins over the resolver
    harness.span({**GENAI, "gen_ai.request.model": "gpt-4o-mini"})
    # 4. the resolver, for what no rule matched
    harness.span({**GENAI, "gen_ai.request.model": "resolve-me"})
    # 5. the provider name
    harness.span({**GENAI, "gen_ai.request.model": "o1"})
    for config_id in ("attr", "from-context", "from-rule", "from-resolver", "openai"):
        assert harness.quota(config_id).input_tokens == 11, config_id
    assert [u.model for u in calls] == ["resolve-me", "o1"]
    assert calls[0].input_tokens == 11
    assert calls[0].attributes["gen_ai.request.model"] == "resolve-me"


def test_rules_match_resource_attributes_and_lists(sync_manager: LLMProviderManager) -> None:
    rules = [
        ConfigRule.from_dict(
            {"config_id": "checkout-llm", "match": {"service.name": ["checkout", "cart-*"]}}
        ),
        ConfigRule("anthropic-any", provider="anthropic"),
    ]
    for service, expected in (("cart-api", "checkout-llm"), ("search", "openai")):
        harness = make(sync_manager, rules=rules, resource=Resource({"service.name": service}))
        harness.span(GENAI)
        harness.span(GENAI)  # second span: from the rule cache
        assert harness.quota(expected).successful_requests == 2
    with pytest.raises(ValueError, match="at least one key"):
        ConfigRule("x")
    with pytest.raises(ValueError, match="unknown rule keys"):
        ConfigRule.from_dict({"config_id": "x", "match": {"provider": "a"}, "extra": 1})


def test_quota_config_is_stamped_on_the_span_and_nests(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    exporter = InMemorySpanExporter()
    harness.provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert current_quota_config() is None
    with quota_config("outer"):
        assert current_quota_config() == "outer"
        with quota_config("inner"):
            harness.span(GENAI, name="a")
        harness.span(GENAI, name="b")
    harness.span(GENAI, name="c")
    assert current_quota_config() is None
    stamped = {
        s.name: (s.attributes or {}).get("llm.quota.config_id")
        for s in exporter.get_finished_spans()
    }
    assert stamped == {"a": "inner", "b": "outer", "c": None}
    assert [harness.quota(c).input_tokens for c in ("inner", "outer", "openai")] == [11, 11, 11]
    with pytest.raises(ValueError, match="non-empty"), quota_config(" "):
        pass


async def test_quota_config_follows_asyncio_tasks(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)

    async def call(model: str) -> None:
        await asyncio.sleep(0)  # let the other task run in between
        harness.span({**GENAI, "gen_ai.request.model": model})

    with quota_config("team-a"):
        task_a = asyncio.create_task(call("a"))
    with quota_config("team-b"):
        task_b = asyncio.create_task(call("b"))
    await asyncio.gather(task_a, task_b)
    assert harness.quota("team-a").successful_requests == 1
    assert harness.quota("team-b").successful_requests == 1
    assert "openai" not in sync_manager.ledger


def test_resolver_errors_fall_back_to_the_provider(sync_manager: LLMProviderManager) -> None:
    def resolver(usage: SpanUsage) -> str | None:
        raise RuntimeError("user bug")

    def bad_type(usage: SpanUsage) -> str | None:
        return 42  # type: ignore[return-value]  # a wrong return type, on purpose

    for fn in (resolver, bad_type):
        harness = make(sync_manager, config_resolver=fn)
        harness.span(GENAI)
    assert harness.quota("openai").successful_requests == 2


# -- counting once -------------------------------------------------------------------------------


def test_same_response_id_counts_once_first_wins(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    sdk_span = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.id": "msg_1",
        "gen_ai.usage.input_tokens": 13,
        "gen_ai.usage.output_tokens": 5,
    }
    openllmetry_span = {
        **sdk_span,
        "gen_ai.usage.output_tokens": 6,
        "gen_ai.usage.total_tokens": 19,
    }
    harness.span(sdk_span, scope="anthropic")  # two root spans: separate traces
    harness.span(openllmetry_span, scope="opentelemetry.instrumentation.anthropic")
    harness.span({**sdk_span, "gen_ai.response.id": "msg_2"}, scope="anthropic")
    quota = harness.quota("anthropic")
    assert (quota.input_tokens, quota.output_tokens, quota.total_tokens) == (26, 10, 36)
    assert quota.successful_requests == 2
    stats = harness.processor.stats
    assert (stats.counted_spans, stats.duplicate_spans) == (2, 1)


def test_another_tracer_object_of_one_instrumentation_is_the_same_instrumentation(
    sync_manager: LLMProviderManager,
) -> None:
    # An instrumentation may call get_tracer more than once: equal scopes, distinct objects.
    harness = make(sync_manager)
    for _ in range(3):
        tracer = harness.provider.get_tracer("openai_v2", "2.4b0")
        with tracer.start_as_current_span("llm", attributes={**GENAI, "gen_ai.response.id": "r"}):
            pass
    harness.span({**GENAI, "gen_ai.response.id": "r"}, scope="openllmetry")
    quota = harness.quota("openai")
    assert (quota.input_tokens, quota.successful_requests) == (33, 3)
    assert harness.processor.stats.duplicate_spans == 1


def test_an_ancestor_stays_skipped_when_its_response_id_comes_from_an_equal_scope(
    sync_manager: LLMProviderManager,
) -> None:
    # An ancestor of a counted span is skipped (innermost wins) even when its response id was
    # seen before from another tracer object of the same instrumentation (equal scopes,
    # distinct objects: opentelemetry-sdk 1.39 makes one per get_tracer call; made by hand here,
    # as newer SDKs cache tracers). The id check said "same instrumentation, a new response"
    # and used to overwrite the ancestor verdict, counting the outer span too.
    harness = make(sync_manager)
    first = harness.provider.get_tracer("openai_v2", "2.4b0")
    second = copy.copy(first)
    second._instrumentation_scope = copy.copy(first._instrumentation_scope)  # type: ignore[attr-defined]
    assert second._instrumentation_scope == first._instrumentation_scope  # type: ignore[attr-defined]
    assert second._instrumentation_scope is not first._instrumentation_scope  # type: ignore[attr-defined]
    with first.start_as_current_span("llm", attributes={**GENAI, "gen_ai.response.id": "r"}):
        pass
    outer = {**GENAI, "gen_ai.response.id": "r"}
    inner = {**GENAI, "gen_ai.response.id": "c"}
    with (
        second.start_as_current_span("outer", attributes=outer),
        second.start_as_current_span("inner", attributes=inner),
    ):
        pass
    quota = harness.quota("openai")
    assert (quota.input_tokens, quota.successful_requests) == (22, 2)
    assert harness.processor.stats.duplicate_spans == 1


def test_remembered_response_ids_are_bounded(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager, max_tracked_responses=2)
    for response_id in ("r1", "r2", "r3", "r1"):  # r1 was forgotten when r3 came
        harness.span({**GENAI, "gen_ai.response.id": response_id})
    assert harness.quota("openai").successful_requests == 4
    assert len(harness.processor._seen_new) + len(harness.processor._seen_old) <= 2


def test_innermost_span_with_usage_wins_in_a_trace(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    tracer = harness.tracer
    # A framework span (chain) repeating the sum of its two LLM calls, a plain span between.
    with tracer.start_as_current_span("chain") as chain:
        with tracer.start_as_current_span("step"):
            harness.span({**GENAI, "gen_ai.response.id": "a"}, name="call-a")
        with tracer.start_as_current_span("llm-wrapper", attributes={**GENAI}):
            harness.span({**GENAI, "gen_ai.response.id": "b"}, name="call-b")
        chain.set_attributes(
            {**GENAI, "gen_ai.usage.input_tokens": 22, "gen_ai.usage.output_tokens": 14}
        )
    quota = harness.quota("openai")
    assert (quota.input_tokens, quota.output_tokens, quota.successful_requests) == (22, 14, 2)
    assert harness.processor.stats.duplicate_spans == 2  # llm-wrapper and chain
    assert not harness.processor._marks_new  # the marks went up and out with the root
    assert not harness.processor._marks_old


def test_nesting_marks_are_bounded(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager, max_tracked_responses=3)
    tracer = harness.tracer
    parents = [tracer.start_span(f"parent-{i}") for i in range(5)]
    for parent in parents:
        with trace.use_span(parent):
            harness.span(GENAI)
    assert len(harness.processor._marks_new) + len(harness.processor._marks_old) <= 3
    for parent in parents:  # never ended with usage: nothing more counted
        parent.end()
    assert harness.quota("openai").successful_requests == 5


def test_concurrent_duplicates_count_once(sync_manager: LLMProviderManager) -> None:
    # Eight instrumentations report the same 200 responses, concurrently.
    harness = make(sync_manager)
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(200):
            harness.span({**GENAI, "gen_ai.response.id": f"resp-{i}"}, scope=f"instr-{n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    quota = harness.quota("openai")
    assert quota.successful_requests == 200
    assert quota.input_tokens == 200 * 11
    assert harness.processor.stats.duplicate_spans == 7 * 200


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["11", 11.0, True, -1, 10**13, (1, 2)],
    ids=["str", "float", "bool", "negative", "huge", "sequence"],
)
def test_bad_token_values_are_skipped_and_counted(
    sync_manager: LLMProviderManager,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
    bad: object,
) -> None:
    harness = make(sync_manager, meter_provider=meter_provider)
    harness.span({**GENAI, "gen_ai.usage.input_tokens": bad})
    quota = harness.quota("openai")
    assert (quota.input_tokens, quota.output_tokens, quota.total_tokens) == (0, 7, 7)
    assert harness.processor.stats.skipped_values == 1
    points = _points(metric_reader, "llm.quota.processor.skipped_values")
    assert points == [({"llm.quota.attribute": "gen_ai.usage.input_tokens"}, 1)]


def test_a_bad_value_falls_back_to_the_next_key(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    harness.span({**GENAI, "gen_ai.usage.input_tokens": "x", "gen_ai.usage.prompt_tokens": 4})
    assert harness.quota("openai").input_tokens == 4


def test_bad_config_id_attribute_falls_back(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    harness.span({**GENAI, "llm.quota.config_id": 5})
    harness.span({**GENAI, "llm.quota.config_id": "x" * 300})
    harness.span({**GENAI, "llm.quota.config_id": "   "})  # blank: falls back too
    assert harness.quota("openai").successful_requests == 3
    stats = harness.processor.stats
    assert (stats.skipped_values, stats.errors) == (3, 0)


def test_duplicates_metric(
    sync_manager: LLMProviderManager,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    harness = make(sync_manager, meter_provider=meter_provider)
    for n in range(3):
        harness.span({**GENAI, "gen_ai.response.id": "same"}, scope=f"instr-{n}")
    assert _points(metric_reader, "llm.quota.processor.duplicate_spans") == [({}, 2)]


def test_one_instrumentation_reusing_a_response_id_counts_every_response(
    sync_manager: LLMProviderManager,
) -> None:
    # OpenAI-compatible servers need not make ids unique (Ollama: "chatcmpl-" + 0..998). One
    # instrumentation makes one span per response, so its spans with a known id are new responses;
    # another instrumentation's span with that id is still the same response.
    harness = make(sync_manager)
    for _ in range(5):
        harness.span({**GENAI, "gen_ai.response.id": "chatcmpl-7"}, scope="openai_v2")
        harness.span({**GENAI, "gen_ai.response.id": "chatcmpl-7"}, scope="openllmetry")
    quota = harness.quota("openai")
    assert (quota.successful_requests, quota.input_tokens) == (5, 55)
    assert harness.processor.stats.duplicate_spans == 5


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], int]]:
    data = reader.get_metrics_data()
    out: list[tuple[dict[str, Any], int]] = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    out.extend((dict(p.attributes or {}), p.value) for p in metric.data.data_points)  # type: ignore[union-attr]
    return out


# -- lifecycle and alerts ------------------------------------------------------------------------


def test_lifecycle(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    assert harness.processor.force_flush() is True
    harness.provider.shutdown()
    harness.processor.shutdown()  # idempotent
    harness.span(GENAI)  # after shutdown: not counted
    assert "openai" not in sync_manager.ledger
    with pytest.raises(TypeError, match="LLMProviderManager or QuotaLedger"):
        QuotaSpanProcessor(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tracked_responses"):
        QuotaSpanProcessor(sync_manager, max_tracked_responses=0)


def test_processor_accepts_a_bare_ledger(sync_manager: LLMProviderManager) -> None:
    harness = make(sync_manager)
    harness.processor = QuotaSpanProcessor(sync_manager.ledger)
    provider = TracerProvider()
    provider.add_span_processor(harness.processor)
    with provider.get_tracer("t").start_as_current_span("s", attributes=GENAI):
        pass
    assert harness.quota("openai").input_tokens == 11


async def test_alert_links_to_the_span_that_crossed(
    manager: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    harness = make(manager)
    await manager.set_quota_limit("openai", 50, thresholds=(50,))
    harness.span(GENAI)  # 18 tokens: below 25
    with harness.tracer.start_as_current_span("llm", attributes=GENAI) as span:
        pass  # 36 tokens: this span crosses
    harness.span(GENAI)
    ctx = span.get_span_context()
    alerts = await manager.check_quotas()
    assert [a.threshold_percent for a in alerts] == [50.0]
    assert alerts[0].span == SpanRef(ctx.trace_id, ctx.span_id, int(ctx.trace_flags))
    assert recorder.firing[0].span == alerts[0].span


def test_ancestor_skipped_by_nesting_still_claims_its_response_id(
    sync_manager: LLMProviderManager,
) -> None:
    # Three instrumentations of one call: an inner span without response id (OpenInference),
    # its parent with the id (openai-v2), and a span in another trace with the same id.
    harness = make(sync_manager)
    v2 = harness.provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    with v2.start_as_current_span("v2") as outer:
        harness.span(
            {"llm.system": "openai", "llm.token_count.prompt": 11}, name="inner", scope="oi"
        )
        outer.set_attributes({**GENAI, "gen_ai.response.id": "r1"})
    harness.span({**GENAI, "gen_ai.response.id": "r1"}, name="other-trace", scope="openllmetry")
    quota = harness.quota("openai")
    assert (quota.input_tokens, quota.successful_requests) == (11, 1)
    assert harness.processor.stats.duplicate_spans == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_counts_even_if_the_processor_lock_was_held(
    sync_manager: LLMProviderManager,
) -> None:
    harness = make(sync_manager)
    harness.span({**GENAI, "gen_ai.response.id": "dup"}, scope="one")

    def child() -> int:
        # Another instrumentation's span of that response: the duplicate path locks.
        harness.span({**GENAI, "gen_ai.response.id": "dup"}, scope="two")
        return 0 if harness.processor.stats.duplicate_spans == 1 else 2

    assert fork_while_locked(harness.processor._lock, child)[1] == 0


def test_quota_config_follows_a_copied_context_into_a_thread(
    sync_manager: LLMProviderManager,
) -> None:
    harness = make(sync_manager)
    with quota_config("batch-jobs"):
        context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(harness.span, GENAI))
    worker.start()
    worker.join()
    assert harness.quota("batch-jobs").input_tokens == 11


def test_resolver_sees_failures_and_details(sync_manager: LLMProviderManager) -> None:
    seen: list[SpanUsage] = []

    def resolver(usage: SpanUsage) -> str | None:
        seen.append(usage)
        return None

    harness = make(sync_manager, config_resolver=resolver)
    harness.span({**GENAI, "error.type": "Timeout", "gen_ai.usage.cache_read.input_tokens": 3})
    assert seen[0].success is False
    assert seen[0].details == {"gen_ai.usage.cache_read.input_tokens": 3}
    assert harness.quota("openai").failed_requests == 1
