"""The process-wide default manager and one-line registration of the span processor.

``get_manager()`` creates the default ``LLMProviderManager`` on first use, configured from
``OTEL_LLM_QUOTA_CONFIG_FILE`` and the other ``OTEL_LLM_QUOTA_*`` variables (problems are logged,
never raised: this also runs inside ``opentelemetry-instrument``). ``instrument()`` attaches a
``QuotaSpanProcessor`` to a tracer provider, once per provider, and for the default manager starts
its monitor thread, closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from otel_llm_quota import environment_variables as env
from otel_llm_quota._config import QuotaSetup, load_config
from otel_llm_quota._env import env_bool
from otel_llm_quota._manager import LLMProviderManager
from otel_llm_quota._metrics import QuotaMetrics, instrument_metrics, shutdown_metrics
from otel_llm_quota._processor import QuotaSpanProcessor

__all__ = ["get_manager", "instrument"]

_logger = logging.getLogger(__name__)

_lock = threading.RLock()
_default: QuotaSetup | None = None
_processors: weakref.WeakKeyDictionary[Any, QuotaSpanProcessor] = weakref.WeakKeyDictionary()
_default_metrics: QuotaMetrics | None = None


def _default_setup() -> QuotaSetup:
    global _default
    with _lock:
        if _default is None:
            _default = load_config(strict=False)
        return _default


def get_manager() -> LLMProviderManager:
    """The process-wide default manager (created and configured from the environment once)."""
    return _default_setup().manager


def instrument(
    tracer_provider: Any = None,
    *,
    manager: LLMProviderManager | None = None,
    start_monitoring: bool | None = None,
    metrics: bool | None = None,
    meter_provider: otel_metrics.MeterProvider | None = None,
    **processor_options: Any,
) -> QuotaSpanProcessor:
    """Attach a ``QuotaSpanProcessor`` to ``tracer_provider`` (default: the global one).

    With no ``manager`` the default one (``get_manager()``) is used, with the processor options
    of its configuration (rules, default config id), and its monitor thread is started unless
    ``start_monitoring=False`` or the config says ``monitor.enabled: false``; it is closed at
    interpreter exit; its quotas are also reported as ``llm.quota.*`` metrics through
    ``meter_provider`` (default: the global one) unless ``metrics=False`` or
    ``OTEL_LLM_QUOTA_METRICS_ENABLED=false``: the default manager then reports through that one
    provider only, or not at all, and never twice. Other keyword arguments go to
    ``QuotaSpanProcessor`` (its self-metrics use ``meter_provider`` too). Calling it again for the
    same provider returns the processor already attached.

    Raises TypeError if the provider is not an SDK ``TracerProvider`` (one with
    ``add_span_processor``), and ValueError if it is already instrumented for another manager.
    """
    provider: Any = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if not callable(getattr(provider, "add_span_processor", None)):
        raise TypeError(
            f"{type(provider).__name__} has no add_span_processor: configure the OpenTelemetry "
            "SDK (opentelemetry.sdk.trace.TracerProvider) first"
        )
    with _lock:
        existing = _processors.get(provider)
        if existing is not None:
            if manager is not None and existing._ledger is not manager.ledger:
                raise ValueError(
                    "this tracer provider already has a QuotaSpanProcessor recording into "
                    "another manager; add a QuotaSpanProcessor yourself to record into two"
                )
            return existing
        if meter_provider is not None:
            processor_options["meter_provider"] = meter_provider
        if manager is None:
            global _default_metrics
            setup = _default_setup()
            options = {**setup.processor_options, **processor_options}
            processor = QuotaSpanProcessor(setup.manager, **options)
            report = (
                env_bool(env.OTEL_LLM_QUOTA_METRICS_ENABLED, True) if metrics is None else metrics
            )
            # The default manager already reports through the global provider unless
            # OTEL_LLM_QUOTA_METRICS_ENABLED=false: instrument_metrics returns that QuotaMetrics
            # for the global provider; the arguments here say where it reports instead.
            if report and _default_metrics is None:
                _default_metrics = instrument_metrics(setup.manager, meter_provider)
            shutdown_metrics(setup.manager, keep=_default_metrics if report else None)
            monitor = setup.monitor if start_monitoring is None else start_monitoring
            if monitor and not setup.manager.monitoring:
                setup.manager.start_monitoring_thread(setup.monitor_interval_seconds)
                atexit.register(_close_quietly, setup.manager)
        else:
            processor = QuotaSpanProcessor(manager, **processor_options)
            if start_monitoring and not manager.monitoring:
                manager.start_monitoring_thread()
        provider.add_span_processor(processor)
        _processors[provider] = processor
        return processor


def _close_quietly(manager: LLMProviderManager) -> None:
    try:
        manager.close()
    except Exception:  # at exit, a failing close must not hide the app's own exit status
        _logger.debug("otel-llm-quota: closing the default manager failed", exc_info=True)


def _reset_for_tests() -> None:
    """Forget the default manager and the registrations (tests only; closes the manager)."""
    global _default, _default_metrics
    with _lock:
        if _default_metrics is not None:
            _default_metrics.shutdown()
        if _default is not None:
            _close_quietly(_default.manager)
        _default = None
        _default_metrics = None
        _processors.clear()
