"""Where ``otel-llm-quota serve`` sends its alert log events: ``OTEL_LOGS_EXPORTER`` and the OTLP
protocol variables, read as the zero-code set-up reads them (the OTLP path end to end, to a real
Collector: tests/integration/test_service_e2e.py)."""

from __future__ import annotations

import pytest

from otel_llm_quota.serve._logs import LogSetupError, logger_provider_from_env

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_LOGS_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value", [None, "", "none", " none "])
def test_no_exporter_named_means_no_provider(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """Unset is none, not the zero-code default otlp: serve listens on the OTLP port itself."""
    if value is not None:
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", value)
    assert logger_provider_from_env() is None


@pytest.mark.parametrize("value", ["otlp", " OTLP ", "none,otlp"])
def test_named_exporters_give_a_provider_with_the_resource_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", value)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "quota-service")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    provider = logger_provider_from_env()
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "quota-service"
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"OTEL_LOGS_EXPORTER": "otlp,console"}, "unknown exporter(s) console"),
        ({"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "'grpc'"),
        (
            {
                "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json",
            },
            "'http/json'",
        ),
    ],
)
def test_what_the_service_cannot_do_is_an_error_at_start(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(LogSetupError) as info:
        logger_provider_from_env()
    assert message in str(info.value)
