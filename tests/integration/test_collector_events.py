"""Alert events through the Collector: an app's OTel log-event alert handler exports its records
over OTLP/HTTP (the SDK's real exporter) to the real Collector built by ``make collector``, run
with the shipped otelcol-config.yaml plus the otelcol-events-file.yaml overlay; the test reads
the file exporter's OTLP/JSON back and finds the alert, linked to the span whose usage crossed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from otel_llm_quota import LLMProviderManager, QuotaSpanProcessor
from otel_llm_quota.handlers import OTelLogEventHandler
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

from ._peers import poll
from .conftest import require_module
from .test_collector import started_collector

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.trace import TracerProvider

pytestmark = pytest.mark.integration


@dataclass
class Collector:
    otlp_http_url: str
    events_file: Path


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    events_file = tmp_path / "events" / "llm-quota-events.jsonl"  # the overlay creates the dir
    env = {"OTELCOL_EVENTS_FILE": str(events_file)}
    async with started_collector(tmp_path, "otelcol-events-file.yaml", env=env) as started:
        yield Collector(started.otlp_http_url, events_file)


@pytest.fixture
def logger_provider(collector: Collector) -> Iterator[LoggerProvider]:
    """The app's LoggerProvider as a user sets it up: batched, the real OTLP/HTTP exporter."""
    require_module("opentelemetry.exporter.otlp.proto.http", "install the 'test' extra")
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=f"{collector.otlp_http_url}/v1/logs")
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
async def manager(
    clock: FakeClock, recorder: RecordingAlertHandler, logger_provider: LoggerProvider
) -> AsyncIterator[LLMProviderManager]:
    async with LLMProviderManager(clock=clock) as mgr:
        mgr.add_alert_handler(recorder)
        mgr.add_alert_handler(OTelLogEventHandler(logger_provider))
        yield mgr


@pytest.fixture
def tracer_provider(manager: LLMProviderManager) -> Iterator[TracerProvider]:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(QuotaSpanProcessor(manager))
    yield provider
    provider.shutdown()


def chat_span(tracer_provider: TracerProvider, response_id: str, input_tokens: int) -> int:
    """End one GenAI chat span with usage for config openai-prod; returns its trace id."""
    tracer = tracer_provider.get_tracer("test-app")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.id": response_id,
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": 10,
                "llm.quota.config_id": "openai-prod",
            }
        )
        trace_id: int = span.get_span_context().trace_id
    return trace_id


def log_records(path: Path) -> list[dict[str, Any]]:
    """Every log record in the file exporter's output (one OTLP/JSON export request a line)."""
    if not path.exists():
        return []
    return [
        record
        for line in path.read_text().splitlines()
        if line.strip()
        for resource in json.loads(line)["resourceLogs"]
        for scope in resource["scopeLogs"]
        for record in scope["logRecords"]
    ]


def attributes(record: dict[str, Any]) -> dict[str, Any]:
    """An OTLP/JSON attribute list as a dict of the plain values."""
    return {a["key"]: next(iter(a["value"].values())) for a in record.get("attributes", [])}


async def test_alert_event_reaches_the_collectors_logs_pipeline_linked_to_the_crossing_span(
    manager: LLMProviderManager,
    recorder: RecordingAlertHandler,
    tracer_provider: TracerProvider,
    logger_provider: LoggerProvider,
    collector: Collector,
) -> None:
    await manager.set_quota_limit("openai-prod", 1000, thresholds=(80,), provider="openai")
    below = chat_span(tracer_provider, "resp-1", 500)  # 510 of 1000: no alert
    assert await manager.check_quotas() == []
    crossing = chat_span(tracer_provider, "resp-2", 330)  # 850: crosses 80 %
    (alert,) = await manager.check_quotas()
    assert alert.is_firing
    assert below != crossing
    assert logger_provider.force_flush(10_000)

    async def written() -> list[dict[str, Any]] | None:
        return log_records(collector.events_file) or None

    (record,) = await poll(written, deadline_seconds=30, what="the alert in the file exporter")
    assert record["eventName"] == "llm.quota.threshold"
    assert record["severityText"] == "WARN"
    assert record["severityNumber"] == 13  # SeverityNumber.WARN
    assert record["traceId"] == format(crossing, "032x")
    attrs = attributes(record)
    assert attrs["llm.quota.config_id"] == "openai-prod"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["llm.quota.alert.state"] == "firing"
    assert int(attrs["llm.quota.usage"]) == 850  # OTLP/JSON writes 64-bit ints as strings
    assert len(recorder.alerts) == 1
