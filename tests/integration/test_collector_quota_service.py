"""The Collector pipeline of otelcol-quota-service.yaml, with the real Collector built by
``make collector``: a Python app sends GenAI and other spans with the SDK's OTLP/HTTP exporter;
the GenAI ones (and only those) reach the quota service's address, every span reaches the
user's tracing backend, and a service that refuses for a while gets its spans by the exporter's
retries. The two addresses are loopback HTTP servers that record what they receive
(``RecordingServer``), so these tests need no ``otel-llm-quota serve``; test_service_e2e.py runs
the same file with the real service."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from otel_llm_quota import DEFAULT_CONVENTIONS

from ._peers import Recorded, RecordingServer, poll, require_http_peers
from .conftest import require_module
from .test_collector import CONFIG_DIR, started_collector

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

pytestmark = pytest.mark.integration

OVERLAY = "otelcol-quota-service.yaml"


def exported_spans(requests: list[Recorded]) -> list[tuple[str, dict[str, Any]]]:
    """(name, attributes) of every span in the OTLP/HTTP export requests the Collector sent
    (protobuf; aiohttp has already undone the exporter's gzip, see Content-Encoding)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for request in requests:
        assert request.path == "/v1/traces", request.path
        assert request.headers.get("Content-Type") == "application/x-protobuf"
        message = ExportTraceServiceRequest.FromString(request.body)
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attrs = {
                        a.key: next(iter(MessageToDict(a.value).values())) for a in span.attributes
                    }
                    spans.append((span.name, attrs))
    return spans


@dataclass
class Routed:
    otlp_http_url: str
    service: RecordingServer
    backend: RecordingServer


@pytest.fixture
async def service() -> AsyncIterator[RecordingServer]:
    """Stands in for `otel-llm-quota serve`: answers 200 (or the test's scripted statuses)."""
    require_http_peers()
    server = await RecordingServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def backend() -> AsyncIterator[RecordingServer]:
    """Stands in for the user's tracing backend."""
    require_http_peers()
    server = await RecordingServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def collector(
    tmp_path: Path, service: RecordingServer, backend: RecordingServer
) -> AsyncIterator[Routed]:
    env = {"OTELCOL_QUOTA_SERVICE_ENDPOINT": service.url, "OTELCOL_TRACES_ENDPOINT": backend.url}
    async with started_collector(tmp_path, OVERLAY, env=env) as started:
        yield Routed(started.otlp_http_url, service, backend)


@pytest.fixture
def tracer_provider(collector: Routed) -> Iterator[TracerProvider]:
    """The app's TracerProvider as a user sets it up: batched, the real OTLP/HTTP exporter."""
    require_module("opentelemetry.exporter.otlp.proto.http", "install the 'test' extra")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "chat-backend"}))
    exporter = OTLPSpanExporter(endpoint=f"{collector.otlp_http_url}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    yield provider
    provider.shutdown()


# name -> attributes of the spans the app ends, and whether the service must get each.
GENAI_SPANS: dict[str, dict[str, Any]] = {
    # OpenTelemetry GenAI conventions: a chat call with usage.
    "chat gpt-4o": {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
    },
    # A failed call: an operation name, no usage (the service counts the failed request).
    "chat claude-sonnet-4": {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "error.type": "RateLimitError",
    },
    # OpenLLMetry's older keys, no operation name.
    "openai.chat": {"llm.request.type": "chat", "llm.usage.prompt_tokens": 7},
    # OpenInference, a total alone.
    "ChatCompletion": {"openinference.span.kind": "LLM", "llm.token_count.total": 9},
}
OTHER_SPANS: dict[str, dict[str, Any]] = {
    "POST /chat": {"http.request.method": "POST", "http.route": "/chat"},
    "SELECT conversations": {"db.system.name": "postgresql"},
    # A config id alone is no usage: the service would count nothing for it.
    "render reply": {"llm.quota.config_id": "openai-prod"},
}


def end_spans(provider: TracerProvider, spans: dict[str, dict[str, Any]]) -> None:
    tracer = provider.get_tracer("chat-backend")
    for name, attributes in spans.items():
        tracer.start_span(name, attributes=attributes).end()


async def spans_received(server: RecordingServer, count: int, what: str) -> Counter[str]:
    """The span names ``server`` received, once it has ``count`` spans."""

    async def enough() -> Counter[str] | None:
        names = Counter(name for name, _ in exported_spans(server.requests))
        return names if names.total() >= count else None

    return await poll(enough, deadline_seconds=30, what=f"{count} spans at {what}")


def filter_condition_keys() -> set[str]:
    """The span attribute keys filter/genai tests for absence (``... == nil``)."""
    config = yaml.safe_load((CONFIG_DIR / OVERLAY).read_text())
    filt = config["processors"]["filter/genai"]
    assert filt["error_mode"] == "ignore"
    (condition,) = filt["trace_conditions"]
    clauses = [clause.strip() for clause in condition.split(" and ")]
    keys = set()
    for clause in clauses:
        match = re.fullmatch(r'span\.attributes\["([^"]+)"\] == nil', clause)
        assert match, f"unexpected clause {clause!r}"
        keys.add(match.group(1))
    return keys


def test_the_filter_keeps_every_span_the_service_can_count() -> None:
    """filter/genai keeps exactly the spans with an operation name or any token-count key the
    service reads (otel_llm_quota.DEFAULT_CONVENTIONS): a key added there without the filter
    would be dropped by the Collector before the service could count it."""
    expected = set(DEFAULT_CONVENTIONS.usage_keys) | set(DEFAULT_CONVENTIONS.operation)
    assert filter_condition_keys() == expected


async def test_genai_spans_reach_the_service_and_every_span_the_backend(
    collector: Routed, tracer_provider: TracerProvider
) -> None:
    end_spans(tracer_provider, {**GENAI_SPANS, **OTHER_SPANS})
    assert tracer_provider.force_flush(10_000)

    everything = len(GENAI_SPANS) + len(OTHER_SPANS)
    to_backend = await spans_received(collector.backend, everything, "the tracing backend")
    assert to_backend == Counter({**GENAI_SPANS, **OTHER_SPANS}.keys())
    to_service = await spans_received(collector.service, len(GENAI_SPANS), "the quota service")
    assert to_service == Counter(GENAI_SPANS.keys())
    # Compressed as the service must accept it; the attributes arrive as the app set them.
    assert {r.headers.get("Content-Encoding") for r in collector.service.requests} == {"gzip"}
    by_name = dict(exported_spans(collector.service.requests))
    assert by_name["chat gpt-4o"]["gen_ai.usage.input_tokens"] == "120"  # int64 as JSON string
    assert by_name["chat gpt-4o"]["gen_ai.provider.name"] == "openai"


async def test_the_service_gets_its_spans_after_refusing_them_for_a_while(
    collector: Routed, tracer_provider: TracerProvider
) -> None:
    """A restarting service answers 503: retry_on_failure resends the same batch (the sending
    queue holds it meanwhile), and the backend's pipeline is not held up by it."""
    collector.service.statuses.extend([503, 503])
    end_spans(tracer_provider, {"chat gpt-4o": GENAI_SPANS["chat gpt-4o"], **OTHER_SPANS})
    assert tracer_provider.force_flush(10_000)

    to_backend = await spans_received(collector.backend, 1 + len(OTHER_SPANS), "the backend")
    assert to_backend["chat gpt-4o"] == 1

    async def accepted() -> list[Recorded] | None:
        return collector.service.requests if len(collector.service.requests) >= 3 else None

    first, second, third = await poll(accepted, deadline_seconds=30, what="two retries")
    assert first.body == second.body == third.body  # the same batch, resent
    assert Counter(name for name, _ in exported_spans([third])) == Counter(["chat gpt-4o"])
