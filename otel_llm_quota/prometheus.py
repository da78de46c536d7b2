"""One call to expose a manager's quota metrics on a Prometheus scrape endpoint.

Needs the ``prometheus`` extra (``pip install 'otel-llm-quota[prometheus]'``), which brings
``opentelemetry-exporter-prometheus``; it is imported only when ``start_prometheus_server`` runs.
The endpoint has its own ``MeterProvider`` and ``CollectorRegistry``: it shows the ``llm.quota.*``
metrics and nothing else, and never touches the global providers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from otel_llm_quota._env import env_str
from otel_llm_quota._metrics import DEFAULT_MAX_CONFIGS, QuotaMetrics, quota_metric_views

if TYPE_CHECKING:  # pragma: no cover - typing only
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics import MeterProvider

    from otel_llm_quota._manager import LLMProviderManager

__all__ = ["PrometheusEndpoint", "start_prometheus_server"]

_logger = logging.getLogger(__name__)

# The standard OpenTelemetry variables of the Prometheus exporter, and their spec defaults.
_ENV_HOST = "OTEL_EXPORTER_PROMETHEUS_HOST"
_ENV_PORT = "OTEL_EXPORTER_PROMETHEUS_PORT"
_DEFAULT_HOST = "localhost"
_DEFAULT_PORT = 9464


class PrometheusEndpoint:
    """A running scrape endpoint (``GET {url}``). Stop it with ``shutdown()``."""

    def __init__(
        self,
        server: WSGIServer,
        thread: threading.Thread,
        meter_provider: MeterProvider,
        metrics: QuotaMetrics,
        release: Callable[[], None] = lambda: None,
    ) -> None:
        self._server = server
        self._release = release
        self._thread = thread
        self.meter_provider = meter_provider
        """The endpoint's own SDK ``MeterProvider`` (one ``PrometheusMetricReader``)."""
        self.metrics = metrics
        """The instruments that report the manager."""
        self._closed = False
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the kernel's choice when started with port 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The scrape URL."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop the HTTP server and the meter provider. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.metrics.shutdown()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
        self._release()
        self.meter_provider.shutdown()

    def __repr__(self) -> str:
        return f"PrometheusEndpoint(url={self.url!r}, closed={self._closed})"


def _port_from_env() -> int:
    raw = env_str(_ENV_PORT)
    if raw is None:
        return _DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        _logger.warning("%s=%r is not a TCP port; using %s", _ENV_PORT, raw, _DEFAULT_PORT)
        return _DEFAULT_PORT
    return port


def start_prometheus_server(
    manager: LLMProviderManager,
    *,
    port: int | None = None,
    host: str | None = None,
    max_configs: int = DEFAULT_MAX_CONFIGS,
) -> PrometheusEndpoint:
    """Serve ``manager``'s quota metrics for Prometheus at ``http://host:port/metrics``.

    Args:
        manager: the manager to report.
        port: TCP port (``0``: any free one, see ``PrometheusEndpoint.port``); default
            ``OTEL_EXPORTER_PROMETHEUS_PORT``, else 9464.
        host: address to listen on; default ``OTEL_EXPORTER_PROMETHEUS_HOST``, else
            ``localhost``. Use ``0.0.0.0`` only where the network is trusted.
        max_configs: configurations to make room for (the SDK drops series beyond its
            cardinality limit into an overflow series).

    Metric names follow the OpenTelemetry-to-Prometheus mapping (``llm.quota.usage`` becomes
    ``llm_quota_usage``, counters get ``_total``): see the README's metrics table. Target info and
    scope labels are left out, so the series carry only their own labels.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    if port is None:
        port = _port_from_env()
    elif type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    if host is None:
        host = env_str(_ENV_HOST) or _DEFAULT_HOST
    reader, registry, release = _private_reader()
    provider = MeterProvider(metric_readers=[reader], views=quota_metric_views(max_configs))
    metrics = QuotaMetrics(manager, provider)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except BaseException:
        metrics.shutdown()
        release()
        provider.shutdown()
        raise
    return PrometheusEndpoint(server, thread, provider, metrics, release)


def _private_reader() -> tuple[Any, Any, Callable[[], None]]:
    """A ``PrometheusMetricReader`` reporting to a ``CollectorRegistry`` of its own (never
    prometheus_client's global one), without target info or scope labels; and a ``release``
    to call before shutting the reader's meter provider down.

    ``registry=`` and ``scope_info_enabled=`` came with opentelemetry-exporter-prometheus
    0.64b0. Older releases (the extra's floor is 0.60b0) register their collector in the global
    registry when constructed and unregister it at shutdown: the collector is moved to the
    private registry here, and ``release`` moves it back so the reader's own shutdown finds it.
    Those releases add no scope labels anyway.
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import REGISTRY, CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    try:
        reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=registry
        )
    except TypeError:  # before 0.64b0
        reader = PrometheusMetricReader(disable_target_info=True)
        collector = reader._collector
        REGISTRY.unregister(collector)
        registry.register(collector)

        def release() -> None:
            registry.unregister(collector)
            REGISTRY.register(collector)

        return reader, registry, release
    return reader, registry, lambda: None
