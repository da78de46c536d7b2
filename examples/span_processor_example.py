"""From spans to quotas without touching the app's LLM calls. Finishes in about a second.

Your LLM client is already traced by an instrumentation (openai-v2, OpenLLMetry, OpenInference,
the anthropic SDK's own spans). Here we play that instrumentation with a few hand-made spans that
carry the OTel GenAI attributes, so the example needs no network and no API key.

Run it with ``make venv && .venv/bin/python examples/span_processor_example.py``.
"""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import otel_llm_quota
from otel_llm_quota import Alert, ConfigRule, LLMProviderManager


class PrintAlerts:
    """An alert handler: prints each notification."""

    def handle_alert(self, alert: Alert) -> None:
        quota = alert.quota
        trace = f"{alert.span.trace_id:032x}" if alert.span else "-"  # the span that crossed
        print(
            f"ALERT {alert.state.value}: {alert.config_id} crossed {alert.threshold_percent:g}% "
            f"({quota.total_tokens}/{quota.quota_limit} tokens, trace {trace})"
        )


def llm_call(tracer: object, provider: str, model: str, tokens_in: int, tokens_out: int) -> None:
    """What an instrumentation records for one chat completion."""
    with tracer.start_as_current_span(f"chat {model}") as span:  # type: ignore[attr-defined]
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": tokens_in,
                "gen_ai.usage.output_tokens": tokens_out,
            }
        )


async def main() -> None:
    async with LLMProviderManager() as manager:
        manager.add_alert_handler(PrintAlerts())
        await manager.set_quota_limit("openai-checkout", 10_000, thresholds=(50, 90))
        await manager.start_monitoring(interval=60)

        provider = TracerProvider(resource=Resource({"service.name": "checkout"}))
        # One line: spans of the "checkout" service's OpenAI calls count toward openai-checkout;
        # other providers count toward their provider's name.
        otel_llm_quota.instrument(
            provider,
            manager=manager,
            rules=[
                ConfigRule("openai-checkout", provider="openai", **{"service.name": "checkout"})
            ],
        )
        tracer = provider.get_tracer("example")

        for _ in range(3):
            llm_call(tracer, "openai", "gpt-4o-mini", 1_500, 300)  # 5,400 tokens: crosses 50%
        llm_call(tracer, "anthropic", "claude-sonnet", 800, 200)
        # A block of code can pick the quota itself, for every span started inside it.
        with otel_llm_quota.quota_config("batch-jobs"):
            llm_call(tracer, "openai", "gpt-4o-mini", 2_000, 500)

        # The crossing woke the monitor at once; stopping it runs a final pass that delivers
        # anything still pending.
        await manager.stop_monitoring()
        for status in await manager.get_all_quota_statuses():
            limit = status["quota_limit"] or "no limit"
            print(
                f"{status['config_id']:>16}: {status['total_tokens']:>5} tokens "
                f"({status['input_tokens']} in, {status['output_tokens']} out) of {limit}"
            )
        provider.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
