"""Collector-side token counting: an app (no otel-llm-quota in it) sends GenAI spans with the
SDK's real OTLP/HTTP span exporter to the real Collector built by ``make collector``, run with the
shipped otelcol-config.yaml plus the otelcol-genai-tokens.yaml overlay (signal_to_metrics ->
delta_to_cumulative -> Prometheus exporter); a real Prometheus scrapes it with the shipped
prometheus.yml, and its sums equal the tokens on the spans sent, over two exports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._peers import poll, prometheus_query, running_prometheus
from .conftest import require_binary, require_module
from .test_collector import Collector, prometheus_config, started_collector

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider

pytestmark = pytest.mark.integration

SERVICE_NAME = "polyglot-app"
METRIC = "llm_quota_collector_tokens_total"
# (provider, model, config id or "" when the span has none, token type) -> tokens
Key = tuple[str, str, str, str]


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    async with started_collector(tmp_path, "otelcol-genai-tokens.yaml") as started:
        yield started


@pytest.fixture
async def prometheus(tmp_path: Path, collector: Collector) -> AsyncIterator[str]:
    binary = require_binary("prometheus")
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    async with running_prometheus(binary, prometheus_config(collector), workdir) as url:
        yield url


@pytest.fixture
def tracer_provider(collector: Collector) -> Iterator[TracerProvider]:
    """The app's TracerProvider: batched spans, the real OTLP/HTTP exporter, nothing else."""
    require_module("opentelemetry.exporter.otlp.proto.http", "install the 'test' extra")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=f"{collector.otlp_http_url}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def send(provider: TracerProvider, spans: list[tuple[str, dict[str, Any]]]) -> None:
    """End ``spans`` (name, attributes) and export them now."""
    tracer = provider.get_tracer("polyglot-app")
    for name, attrs in spans:
        with tracer.start_as_current_span(name, attributes=attrs):
            pass
    assert provider.force_flush(10_000)


def chat(provider: str, model: str, config: str, input_tokens: int, output_tokens: int) -> Any:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }
    if config:
        attrs["llm.quota.config_id"] = config
    return (f"chat {model}", attrs)


# Spans that carry no token numbers: they must add nothing.
NOT_GENAI = [
    ("GET /healthz", {"http.request.method": "GET", "http.response.status_code": 200}),
    ("chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}),
    ("chat text", {"gen_ai.usage.input_tokens": "100", "gen_ai.provider.name": "openai"}),
    ("SELECT", {"db.system.name": "postgresql", "db.response.returned_rows": 500}),
]


async def token_sums(client: httpx.AsyncClient, prometheus: str) -> dict[Key, float]:
    sums: dict[Key, float] = {}
    for series in await prometheus_query(client, prometheus, METRIC):
        labels = series["metric"]
        assert labels["job"] == SERVICE_NAME
        key = (
            labels["gen_ai_provider_name"],
            labels["gen_ai_request_model"],
            labels.get("llm_quota_config_id", ""),
            labels["gen_ai_token_type"],
        )
        assert key not in sums, labels
        sums[key] = float(series["value"][1])
    return sums


async def wait_for_sums(
    client: httpx.AsyncClient, prometheus: str, expected: dict[Key, int]
) -> None:
    async def matches() -> bool | None:
        return True if await token_sums(client, prometheus) == expected else None

    try:
        await poll(matches, deadline_seconds=30, what=f"{METRIC} == {expected}")
    except AssertionError:
        got = await token_sums(client, prometheus)
        raise AssertionError(f"{METRIC}: expected {expected}, Prometheus has {got}") from None


async def test_token_sums_in_prometheus_equal_the_tokens_on_the_spans_sent(
    tracer_provider: TracerProvider, prometheus: str
) -> None:
    import httpx

    gpt, claude, mini = ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4"), ("openai", "mini")
    async with httpx.AsyncClient(timeout=5) as client:
        send(
            tracer_provider,
            [
                chat(*gpt, "openai-prod", 100, 20),
                chat(*gpt, "openai-prod", 50, 5),
                chat(*claude, "anthropic-dev", 300, 40),
                chat(*mini, "", 7, 3),  # no config id: counted without the label
                *NOT_GENAI,
            ],
        )
        first = {
            (*gpt, "openai-prod", "input"): 150,
            (*gpt, "openai-prod", "output"): 25,
            (*claude, "anthropic-dev", "input"): 300,
            (*claude, "anthropic-dev", "output"): 40,
            (*mini, "", "input"): 7,
            (*mini, "", "output"): 3,
        }
        await wait_for_sums(client, prometheus, first)

        # A second export: the sums are running totals, not the last batch's.
        send(
            tracer_provider,
            [
                chat(*gpt, "openai-prod", 1000, 100),
                chat(*claude, "anthropic-dev", 1, 0),  # zero output tokens add nothing
                *NOT_GENAI,
            ],
        )
        second = {
            **first,
            (*gpt, "openai-prod", "input"): 1150,
            (*gpt, "openai-prod", "output"): 125,
            (*claude, "anthropic-dev", "input"): 301,
        }
        await wait_for_sums(client, prometheus, second)
        total = await prometheus_query(client, prometheus, f"sum({METRIC})")
    assert float(total[0]["value"][1]) == sum(second.values()) == 1626
