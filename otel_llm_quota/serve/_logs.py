"""Where ``otel-llm-quota serve`` sends the records of its OTel log-event alert handler.

The ``otel_log`` handler (``OTelLogEventHandler``) emits to the global ``LoggerProvider``. An app
run with ``opentelemetry-instrument`` gets one from the SDK's zero-code set-up; the service sets
one up itself, from the same standard variables, so alert events reach a Collector's logs
pipeline with the trace id of the span that crossed:

* ``OTEL_LOGS_EXPORTER``: ``otlp`` (OTLP/HTTP protobuf, the SDK's ``OTLPLogExporter``, which reads
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` and their headers,
  timeout and compression) or ``none``. Unset: ``none`` (unlike the zero-code default ``otlp``:
  the service listens on the OTLP/HTTP port itself, and its own logs have no place there).
* ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``: only ``http/protobuf``.
* The resource: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` (``Resource.create()``).
* Batching: ``OTEL_BLRP_*`` (``BatchLogRecordProcessor``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider

__all__ = ["LogSetupError", "logger_provider_from_env"]

LOGS_EXPORTER: Final = "OTEL_LOGS_EXPORTER"
_PROTOCOLS: Final = ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_HTTP_PROTOBUF: Final = "http/protobuf"


class LogSetupError(ValueError):
    """The logs variables ask for something the service cannot do (a message for the user)."""


def logger_provider_from_env() -> LoggerProvider | None:
    """An SDK ``LoggerProvider`` exporting over OTLP when ``OTEL_LOGS_EXPORTER`` is ``otlp``, or
    None when it names no exporter. The caller sets it as the global one (where the handler
    emits) and shuts it down at exit, so the last alert events are exported. Raises
    ``LogSetupError`` for another exporter or protocol, or without the OTLP exporter package."""
    names = [n.strip().lower() for n in os.environ.get(LOGS_EXPORTER, "").split(",")]
    names = [n for n in names if n and n != "none"]
    if not names:
        return None
    unknown = sorted(set(names) - {"otlp"})
    if unknown:
        raise LogSetupError(f"{LOGS_EXPORTER}: unknown exporter(s) {', '.join(unknown)}")
    protocol = next((os.environ[v] for v in _PROTOCOLS if os.environ.get(v)), _HTTP_PROTOBUF)
    if protocol.strip() != _HTTP_PROTOBUF:
        raise LogSetupError(f"OTLP logs protocol {protocol!r}: only {_HTTP_PROTOBUF} is supported")
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    except ImportError:
        raise LogSetupError(
            f"{LOGS_EXPORTER}=otlp needs pip install opentelemetry-exporter-otlp-proto-http"
        ) from None
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create())
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    return provider
