"""An instrumented app, run in its own process by ``test_llm_spans.py``: one instrumentation combo.

    LLM_STUB_PORT=8123 python tests/integration/llm_app.py openai_v2

It sets the global tracer provider (the ``anthropic`` SDK's own spans use it), attaches a
``QuotaSpanProcessor``, instruments the real client with the real instrumentation package, runs
each scenario against the loopback stub inside ``quota_config(<scenario>)`` and prints one JSON
object: per config, the recorded quota; per scenario, the spans it produced; the processor stats.

A process per combo because the global provider can be set once, the semconv opt-in of
openai-v2 is read once per process, and OpenLLMetry's OpenAI ``uninstrument()`` leaves its
wrappers in place.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_llm_quota import LLMProviderManager, QuotaSpanProcessor, quota_config

MESSAGES = [{"role": "user", "content": "Say hello"}]
CLAUDE = "claude-3-5-haiku-latest"
Scenario = Callable[[], None]


def instrument(combo: str, provider: TracerProvider) -> None:
    instrumentor: Any
    if combo.startswith("openai_v2"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2

        instrumentor = V2()
    elif combo == "openllmetry_openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry

        instrumentor = OpenLLMetry()
    elif combo == "openinference_openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInference

        instrumentor = OpenInference()
    elif combo.startswith("openllmetry_anthropic"):
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        instrumentor = AnthropicInstrumentor()
    elif combo == "langchain_openai_v2":
        # LangChain's ChatOpenAI traced twice: by OpenLLMetry's LangChain instrumentation (a
        # framework span) and by openai-v2 underneath (the provider span), in separate traces.
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2

        V2().instrument(tracer_provider=provider)
        instrumentor = LangchainInstrumentor()
    elif combo == "anthropic_sdk":
        return  # the SDK's own spans only
    else:
        raise SystemExit(f"unknown combo {combo!r}")
    instrumentor.instrument(tracer_provider=provider)


def twice(call: Scenario) -> Scenario:
    def run() -> None:
        call()
        call()

    return run


def framework_span(call: Scenario, usage: dict[str, Any]) -> Scenario:
    """A framework-like outer span that repeats the inner call's usage (LangChain style)."""

    def run() -> None:
        tracer = trace.get_tracer("framework")
        with tracer.start_as_current_span("chain") as span:
            call()
            span.set_attributes(usage)

    return run


def openai_cost_scenarios(port: int) -> dict[str, Scenario]:
    """``LLM_APP_SCENARIOS=cost``: usage x1000 with cache and reasoning tokens, streamed and
    not, and a model no price table knows."""
    import openai

    def client() -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0
        )

    def nonstream(model: str = "gpt-4o-mini-cache-big") -> None:
        with client() as c:
            c.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]

    def stream() -> None:
        with client() as c:
            chunks = c.chat.completions.create(
                model="gpt-4o-mini-cache-big",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            for _ in chunks:
                pass

    return {
        "nonstream": nonstream,
        "stream": stream,
        "unpriced": lambda: nonstream("my-custom-model-big"),
    }


def anthropic_cost_scenarios(port: int) -> dict[str, Scenario]:
    """As ``openai_cost_scenarios``, with cache reads and cache writes."""
    import anthropic

    def client() -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-test", max_retries=0
        )

    def nonstream(model: str = CLAUDE + "-cache-big") -> None:
        with client() as c:
            c.messages.create(model=model, max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]

    def stream() -> None:
        with client() as c:
            events = c.messages.create(
                model=CLAUDE + "-cache-big",
                max_tokens=64,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
            for _ in events:
                pass

    return {
        "nonstream": nonstream,
        "stream": stream,
        "unpriced": lambda: nonstream("my-custom-model-big"),
    }


def openai_scenarios(port: int) -> dict[str, Scenario]:
    import openai

    base_url = f"http://127.0.0.1:{port}/v1"

    def client() -> openai.OpenAI:
        return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

    def nonstream(model: str = "gpt-4o-mini") -> None:
        with client() as c:
            c.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]

    def stream() -> None:
        with client() as c:
            chunks = c.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            for _ in chunks:
                pass

    async def async_calls() -> None:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as c:
            await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            chunks = await c.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in chunks:
                pass

    def error() -> None:
        try:
            nonstream("gpt-err500")
        except openai.InternalServerError:
            return
        raise AssertionError("the stub should have answered 500")

    return {
        "nonstream": twice(nonstream),
        "stream": stream,
        "async": lambda: asyncio.run(async_calls()),
        "cache": lambda: nonstream("gpt-4o-mini-cache"),
        "error": error,
        "framework": framework_span(
            nonstream,
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 7,
            },
        ),
    }


def langchain_scenarios(port: int) -> dict[str, Scenario]:
    from langchain_openai import ChatOpenAI

    def llm() -> ChatOpenAI:
        return ChatOpenAI(
            model="gpt-4o-mini",
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="sk-test",  # type: ignore[arg-type]
            max_retries=0,
            stream_usage=True,  # the streamed usage chunk (stream_options.include_usage)
        )

    def nonstream() -> None:
        llm().invoke("Say hello")

    def stream() -> None:
        for _ in llm().stream("Say hello"):
            pass

    async def astream() -> None:
        async for _ in llm().astream("Say hello"):
            pass

    return {
        "nonstream": twice(nonstream),
        "stream": twice(stream),
        "async": lambda: asyncio.run(astream()),
    }


def anthropic_scenarios(port: int) -> dict[str, Scenario]:
    import anthropic

    base_url = f"http://127.0.0.1:{port}"

    def client() -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0)

    def nonstream(model: str = CLAUDE) -> None:
        with client() as c:
            c.messages.create(model=model, max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]

    def stream() -> None:
        with client() as c:
            events = c.messages.create(
                model=CLAUDE,
                max_tokens=64,
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
            for _ in events:
                pass
            with c.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as s:  # type: ignore[arg-type]
                for _ in s.text_stream:
                    pass

    async def async_call() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=base_url, api_key="sk-ant-test", max_retries=0
        ) as c:
            await c.messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]

    def error() -> None:
        try:
            nonstream("claude-err500")
        except anthropic.InternalServerError:
            return
        raise AssertionError("the stub should have answered 500")

    return {
        "nonstream": twice(nonstream),
        "stream": stream,
        "async": lambda: asyncio.run(async_call()),
        "cache": lambda: nonstream(CLAUDE + "-cache"),
        "error": error,
        "framework": framework_span(
            nonstream,
            {
                "gen_ai.provider.name": "anthropic",
                "gen_ai.usage.input_tokens": 13,
                "gen_ai.usage.output_tokens": 5,
            },
        ),
    }


def main() -> None:
    combo = sys.argv[1]
    port = int(os.environ["LLM_STUB_PORT"])
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    manager = LLMProviderManager()
    processor = QuotaSpanProcessor(manager)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument(combo, provider)
    if os.environ.get("LLM_APP_SCENARIOS") == "cost":
        cost = anthropic_cost_scenarios if "anthropic" in combo else openai_cost_scenarios
        scenarios = cost(port)
    elif combo.startswith("langchain"):
        scenarios = langchain_scenarios(port)
    else:
        scenarios = (anthropic_scenarios if "anthropic" in combo else openai_scenarios)(port)
    spans: dict[str, list[str]] = {}
    usage_keys: dict[str, list[str]] = {}
    for name, scenario in scenarios.items():
        exporter.clear()
        with quota_config(name):
            scenario()
        finished = exporter.get_finished_spans()
        spans[name] = sorted(f"{s.name} [{s.instrumentation_scope.name}]" for s in finished)  # type: ignore[union-attr]
        usage_keys[name] = sorted(
            {
                f"{key}={value}"
                for s in finished
                for key, value in (s.attributes or {}).items()
                if key.startswith(("gen_ai.usage.", "llm.token_count.", "llm.usage."))
            }
        )
    quotas = {
        q.config_id: {
            "input": q.input_tokens,
            "output": q.output_tokens,
            "other": q.other_tokens,
            "ok": q.successful_requests,
            "failed": q.failed_requests,
            "cost_microusd": q.cost_microusd,
            "unpriced": q.unpriced_requests,
        }
        for q in manager.ledger.get_all()
    }
    stats = processor.stats
    print(
        json.dumps(
            {
                "quotas": quotas,
                "spans": spans,
                "usage_keys": usage_keys,
                "stats": {
                    "counted": stats.counted_spans,
                    "duplicates": stats.duplicate_spans,
                    "skipped": stats.skipped_values,
                    "errors": stats.errors,
                },
            }
        )
    )
    provider.shutdown()
    manager.close()


if __name__ == "__main__":
    main()
