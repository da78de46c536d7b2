"""The HTTP side of ``otel-llm-quota serve``: an aiohttp application speaking OTLP/HTTP.

Routes:

* ``POST /v1/traces``: an ``ExportTraceServiceRequest``, ``application/x-protobuf`` or
  ``application/json`` (OTLP/JSON: hex ids, enums as ints, 64-bit ints as strings; at most
  ``MAX_JSON_BYTES``, 8 MiB, decompressed), optionally
  ``Content-Encoding: gzip``. Answers, per the OTLP/HTTP specification: 200 with an
  ``ExportTraceServiceResponse`` in the request's content type (with ``partial_success`` when
  spans were rejected; an empty export is a success too); 400 for a body that does not decode;
  401 without the bearer token (when one is configured); 413 beyond the size limits; 415 for
  another content type or encoding; 503 with ``Retry-After`` when ``max_concurrent_requests``
  are being handled already or the service is stopping. Error bodies are a ``google.rpc.Status``.
* ``GET /healthz``: 200 and a JSON object (spans counted and refused, configs, alerts firing,
  the store's last successful sync); 503 once stopping. Never needs the token: it holds counts
  only, no config id, token figure or store URL.
* ``GET /metrics``: the ``llm.quota.*`` metrics for Prometheus (needs the token, when set); they
  can also be pushed over OTLP (``otlp_metrics``).

Decoding and counting run on one worker thread (``otel-llm-quota-serve``), so the event loop keeps
answering (``/healthz``, 503s) while a large request is counted; the processor's own rules make
the order of requests irrelevant except for what ``_decode`` documents.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_llm_quota._config import QuotaSetup
from otel_llm_quota._metrics import QuotaMetrics, quota_metric_views
from otel_llm_quota._models import AlertState
from otel_llm_quota._processor import QuotaSpanProcessor
from otel_llm_quota.serve._decode import OtlpIngest
from otel_llm_quota.serve._limits import RETRY_AFTER_SECONDS, BodyError, Limits, decompress

__all__ = ["QuotaService", "run_service"]

_logger = logging.getLogger(__name__)

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_GRPC_CODES: Final = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}
_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_MAX_JSON_DEPTH: Final = 64
MAX_JSON_BYTES: Final = 8 * 1024 * 1024
"""The largest OTLP/JSON body (decompressed): parsed JSON takes about ten times its size in
Python objects, protobuf about its own size; send large batches as protobuf."""
SHUTDOWN_GRACE_SECONDS: Final = 10.0
"""How long in-flight requests may take to finish once stopping."""


class QuotaService:
    """The quota service: counts OTLP spans into ``setup.manager`` like ``QuotaSpanProcessor``.

    Args:
        setup: what ``load_config`` built (the manager, with its store, quotas and handlers, and
            the processor options).
        limits: request limits.
        token: the bearer token every request but ``/healthz`` must carry; None: none needed.
        metrics: serve ``GET /metrics`` (needs the ``prometheus`` extra).
        otlp_metrics: also push the metrics with the OTLP/HTTP metric exporter, configured by
            the standard ``OTEL_EXPORTER_OTLP_*`` variables (every ``OTEL_METRIC_EXPORT_INTERVAL``
            milliseconds, default 60000; a last export at ``close()``).
    """

    def __init__(
        self,
        setup: QuotaSetup,
        *,
        limits: Limits | None = None,
        token: str | None = None,
        metrics: bool = True,
        otlp_metrics: bool = False,
    ) -> None:
        self.setup = setup
        self.manager = setup.manager
        self.limits = limits if limits is not None else Limits()
        self._token = token.encode("utf-8") if token else None
        self._registry: Any = None
        self._release_prometheus: Callable[[], None] = lambda: None
        self._meter_provider: Any = None
        self._quota_metrics: QuotaMetrics | None = None
        meter_provider: Any = None
        readers: list[Any] = []
        if metrics:
            from otel_llm_quota.prometheus import _private_reader

            reader, self._registry, self._release_prometheus = _private_reader()
            readers.append(reader)
        if otlp_metrics:
            # Configured by the standard variables: OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT,
            # _HEADERS, _COMPRESSION..., and OTEL_METRIC_EXPORT_INTERVAL.
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        if readers:
            from opentelemetry.sdk.metrics import MeterProvider

            meter_provider = MeterProvider(
                metric_readers=readers, views=quota_metric_views(self.manager.ledger.max_configs)
            )
            self._meter_provider = meter_provider
            self._quota_metrics = QuotaMetrics(self.manager, meter_provider)
        else:
            from opentelemetry.metrics import NoOpMeterProvider

            meter_provider = NoOpMeterProvider()
        self.processor = QuotaSpanProcessor(
            self.manager, meter_provider=meter_provider, **setup.processor_options
        )
        self.ingest = OtlpIngest(self.processor)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="otel-llm-quota-serve")
        self._in_flight = 0
        self.stopping = False
        self._closed = False
        self._counts_lock = threading.Lock()
        self.requests = 0
        self.spans = 0
        self.rejected_spans = 0
        self.redelivered_spans = 0
        self.refused_requests = 0

    # -- the application ---------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (its body-size limit is ``limits.max_body_bytes``; bodies are
        read as sent, still compressed)."""
        # auto_decompress off: aiohttp would inflate gzip itself, up to client_max_size of output
        # held in memory; ``decompress`` caps it at max_decompressed_bytes, incrementally.
        app = web.Application(
            client_max_size=self.limits.max_body_bytes,
            handler_args={"auto_decompress": False},
        )
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_get("/healthz", self._healthz)
        if self._registry is not None:
            app.router.add_get("/metrics", self._metrics)
        return app

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token)

    def _refuse(self, status: int, message: str, json_body: bool) -> web.Response:
        with self._counts_lock:
            self.refused_requests += 1
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="otel-llm-quota"'
        rpc = status_pb2.Status(code=_GRPC_CODES.get(status, code_pb2.UNKNOWN), message=message)
        if json_body:
            return web.Response(
                status=status,
                body=json_format.MessageToJson(rpc, indent=None).encode(),
                content_type=JSON,
                headers=headers,
            )
        return web.Response(
            status=status, body=rpc.SerializeToString(), content_type=PROTOBUF, headers=headers
        )

    async def _traces(self, request: web.Request) -> web.StreamResponse:
        content_type = request.content_type
        json_body = content_type == JSON
        if not self._authorized(request):
            return self._refuse(401, "missing or wrong bearer token", json_body)
        if self.stopping:
            return self._refuse(503, "the service is stopping", json_body)
        if self._in_flight >= self.limits.max_concurrent_requests:
            return self._refuse(503, "too many concurrent requests; retry later", json_body)
        if content_type not in (PROTOBUF, JSON):
            return self._refuse(
                415, f"unsupported Content-Type (use {PROTOBUF} or {JSON})", json_body
            )
        length = request.content_length
        if length is not None and length > self.limits.max_body_bytes:
            return self._refuse(
                413, f"body larger than {self.limits.max_body_bytes} bytes", json_body
            )
        self._in_flight += 1
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return self._refuse(
                    413, f"body larger than {self.limits.max_body_bytes} bytes", json_body
                )
            encoding = request.headers.get("Content-Encoding", "")
            loop = asyncio.get_running_loop()
            status, payload = await loop.run_in_executor(
                self._executor, self._export, body, encoding, json_body
            )
        finally:
            self._in_flight -= 1
        if status != 200:
            return self._refuse(status, payload.decode(), json_body)
        return web.Response(body=payload, content_type=JSON if json_body else PROTOBUF)

    def _export(self, body: bytes, encoding: str, json_body: bool) -> tuple[int, bytes]:
        """(200, response body) or (error status, message). Runs on the worker thread."""
        try:
            limit = self.limits.max_decompressed_bytes
            data = decompress(body, encoding, min(limit, MAX_JSON_BYTES) if json_body else limit)
            del body
            message = _parse_json(data) if json_body else _parse_protobuf(data)
            del data
            result = self.ingest.ingest(message)
            del message
        except BodyError as exc:
            return exc.status, str(exc).encode()
        except Exception:  # never crash on any input; a bug here is a 500, logged
            _logger.exception("otel-llm-quota serve: could not count a request")
            return 500, b"internal error"
        with self._counts_lock:
            self.requests += 1
            self.spans += result.spans
            self.rejected_spans += result.rejected
            self.redelivered_spans += result.redelivered
        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.message
        if json_body:
            return 200, json_format.MessageToJson(response, indent=None).encode()
        return 200, response.SerializeToString()

    async def _healthz(self, request: web.Request) -> web.Response:
        sync = self.manager.store_sync
        store: dict[str, Any] | None = None
        if sync is not None:
            last = sync.last_success
            store = {
                "last_success_age_seconds": (
                    None if last is None else round(self.manager.ledger.clock() - last, 3)
                ),
                "flushes": sync.flushes,
            }
        quotas = self.manager.ledger.get_all()
        with self._counts_lock:
            body = {
                "status": "stopping" if self.stopping else "ok",
                "store": store,
                "configs": len(quotas),
                "firing_alerts": sum(1 for q in quotas if q.alert_state is AlertState.FIRING),
                "requests": self.requests,
                "spans": self.spans,
                "rejected_spans": self.rejected_spans,
                "redelivered_spans": self.redelivered_spans,
                "refused_requests": self.refused_requests,
                "counted_spans": self.processor.stats.counted_spans,
                "duplicate_spans": self.processor.stats.duplicate_spans,
            }
        return web.json_response(body, status=503 if self.stopping else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refuse(401, "missing or wrong bearer token", False)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        loop = asyncio.get_running_loop()
        payload = await loop.run_in_executor(None, generate_latest, self._registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- lifecycle -----------------------------------------------------------------------------

    def start_monitoring(self) -> None:
        """Start the manager's monitor thread, unless the config says ``monitor.enabled: false``."""
        if self.setup.monitor and not self.manager.monitoring:
            self.manager.start_monitoring_thread(self.setup.monitor_interval_seconds)

    def close(self) -> None:
        """Stop counting, the monitor and the metrics; flush the store a last time. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stopping = True
        self._executor.shutdown(wait=True)
        self.processor.shutdown()
        if self._meter_provider is not None:
            try:  # the last OTLP export, while the metrics still report the manager
                self._meter_provider.force_flush(5_000)
            except Exception:  # closing: a failing exporter must not stop the store's flush
                _logger.debug("otel-llm-quota serve: last metrics export failed", exc_info=True)
        try:
            self.manager.close()  # the monitor's final pass and the handlers
        finally:
            self.manager._stop_store()  # the final flush (idempotent)
            if self._quota_metrics is not None:
                self._quota_metrics.shutdown()
            self._release_prometheus()
            if self._meter_provider is not None:
                self._meter_provider.shutdown()


def _parse_protobuf(data: bytes) -> ExportTraceServiceRequest:
    try:
        request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(data)
        return request
    except (DecodeError, RecursionError, ValueError):
        raise BodyError(400, "body is not a valid ExportTraceServiceRequest (protobuf)") from None


def _parse_json(data: bytes) -> ExportTraceServiceRequest:
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        _check_depth(obj)
        _hex_ids_to_base64(obj)
        message = ExportTraceServiceRequest()
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
        return message
    except (ValueError, TypeError, RecursionError, json_format.ParseError, DecodeError):
        raise BodyError(400, "body is not a valid ExportTraceServiceRequest (OTLP/JSON)") from None


def _check_depth(obj: Any) -> None:
    """Refuse JSON nested deeper than the OTLP schema needs (ParseDict recurses)."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            raise ValueError("nested too deeply")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _hex(value: Any) -> Any:
    """An OTLP/JSON id (hex) as the base64 that ``json_format`` expects for bytes fields; an
    invalid one becomes empty (the span is then rejected for its id)."""
    if not isinstance(value, str):
        return value
    try:
        return base64.b64encode(binascii.unhexlify(value)).decode("ascii")
    except (binascii.Error, ValueError):
        return ""


def _fix_ids(item: Any) -> None:
    if isinstance(item, dict):
        for key in _ID_KEYS:
            if key in item:
                item[key] = _hex(item[key])


def _children(item: Any, *keys: str) -> list[Any]:
    if not isinstance(item, dict):
        return []
    for key in keys:
        value = item.get(key)
        if isinstance(value, list):
            return value
    return []


def _hex_ids_to_base64(obj: dict[str, Any]) -> None:
    for resource_spans in _children(obj, "resourceSpans", "resource_spans"):
        for scope_spans in _children(resource_spans, "scopeSpans", "scope_spans"):
            for span in _children(scope_spans, "spans"):
                _fix_ids(span)
                for link in _children(span, "links"):
                    _fix_ids(link)


async def run_service(
    service: QuotaService,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then stop gracefully and flush.

    ``ready`` is called with the base URL once listening (with ``port=0``, the port chosen).
    """
    runner = web.AppRunner(
        service.app(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    await runner.setup()
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
                handled.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        service.start_monitoring()
        address = runner.addresses[0]
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        scheme = "https" if ssl_context is not None else "http"
        if ready is not None:
            ready(f"{scheme}://{shown}:{address[1]}")
        await stop.wait()
    finally:
        service.stopping = True
        for signum in handled:
            loop.remove_signal_handler(signum)
        started = time.monotonic()
        await runner.cleanup()  # waits for in-flight requests, up to the grace period
        await asyncio.to_thread(service.close)
        _logger.debug("otel-llm-quota serve: stopped in %.3f s", time.monotonic() - started)
