"""``otel-llm-quota doctor`` and the entry point with the test extra's instrumentations
(tests/constraints.txt: openai-v2, OpenLLMetry, OpenInference, the anthropic SDK's spans), all
installed and importing in this venv.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from test_doctor import NONE_EXPORTERS, clean_env, doctor, find, sdk_provider

from otel_llm_quota._autoinstrument import post_instrument

from .conftest import require_module

pytestmark = pytest.mark.integration
__all__ = ["clean_env", "sdk_provider"]  # fixtures used by name


@pytest.fixture(autouse=True)
def instrumentations() -> None:
    for module in (
        "opentelemetry.instrumentation.auto_instrumentation",
        "opentelemetry.distro",
        "opentelemetry.instrumentation.openai_v2",
        "openai",
    ):
        require_module(module)


def test_a_good_setup_passes_and_lists_what_it_found(tmp_path: Path) -> None:
    code, report = doctor(
        **NONE_EXPORTERS,
        OTEL_LLM_QUOTA_LIMITS="openai=1000",
        OTEL_LLM_QUOTA_ALERT_HANDLERS="logging",
        OTEL_LLM_QUOTA_STORE=f"sqlite:///{tmp_path / 'quota.db'}",
    )
    assert code == 0, json.dumps(report, indent=1)
    assert report["failures"] == 0
    assert report["warnings"] == 0
    clients = {c["name"]: c["detail"] for c in find(report, "LLM clients")}
    assert clients["openai"] == "3.57.0"  # tests/constraints.txt
    (openai_v2,) = find(report, "Instrumentations", "opentelemetry-instrumentation-openai-v2")
    assert openai_v2["status"] == "ok"
    assert openai_v2["name"] == "opentelemetry-instrumentation-openai-v2 2.4b0 (openai)"
    (quota,) = find(report, "Quotas")
    assert (quota["name"], quota["detail"]) == ("openai", "1000 tokens per month, alerts at 80%")
    (store,) = find(report, "Store")
    assert store["status"] == "ok"
    assert store["detail"].startswith("reachable")


def test_a_missing_exporter_stops_counting_and_the_fix_is_named() -> None:
    # opentelemetry-distro's default: OTLP over gRPC, whose exporter is not installed here.
    code, report = doctor(OTEL_LLM_QUOTA_LIMITS="openai=1000")
    assert code == 1
    traces = find(report, "Exporters", "traces")[0]
    assert traces["status"] == "failure"
    assert "'otlp_proto_grpc' not found" in traces["detail"]
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in traces["fix"]
    code, report = doctor(OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert code == 0, json.dumps(report, indent=1)
    assert find(report, "Exporters", "traces")[0]["detail"].startswith("otlp_proto_http")


def test_a_disabled_llm_instrumentation_is_a_warning() -> None:
    code, report = doctor(
        **NONE_EXPORTERS,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai,anthropic",
        ANTHROPIC_OPEN_TELEMETRY="false",
    )
    assert code == 0
    disabled = find(report, "Instrumentations", "(openai)")
    assert disabled
    assert {c["status"] for c in disabled} == {"warning"}
    (none,) = find(report, "Instrumentations", "LLM instrumentation")
    assert "nothing is counted" in none["detail"]


def test_post_instrument_names_the_active_instrumentation(
    sdk_provider: TracerProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=sdk_provider)
    try:
        with caplog.at_level(logging.INFO, logger="otel_llm_quota._autoinstrument"):
            post_instrument()
    finally:
        instrumentor.uninstrument()
    records = [r for r in caplog.records if r.name == "otel_llm_quota._autoinstrument"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert (
        records[0]
        .getMessage()
        .endswith("LLM instrumentations: opentelemetry-instrumentation-openai-v2")
    )
