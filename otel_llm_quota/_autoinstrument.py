"""Zero-code registration: the ``opentelemetry_post_instrument`` entry point.

``opentelemetry-instrument python app.py`` configures the SDK, runs the instrumentors and then
calls ``post_instrument()``, which attaches a ``QuotaSpanProcessor`` with the default manager
(configured from ``OTEL_LLM_QUOTA_*`` and ``OTEL_LLM_QUOTA_CONFIG_FILE``) to the global tracer
provider and starts the monitor thread. It logs one INFO line saying what it attached (quotas,
store, handlers, the LLM instrumentations active) and one WARNING when no LLM instrumentation is
active, since then nothing makes the spans it counts. Whatever goes wrong is logged; the app
always starts.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from otel_llm_quota import environment_variables as env
from otel_llm_quota._env import env_bool
from otel_llm_quota._instrumentations import active_llm_instrumentations, describe_handler
from otel_llm_quota._registration import get_manager, instrument

__all__ = ["post_instrument"]

_logger = logging.getLogger(__name__)

_MAX_SHOWN: int = 10
"""Quotas named in the INFO line at most (the rest are counted)."""


def post_instrument() -> None:
    """Attach the quota processor to the SDK tracer provider. Never raises."""
    try:
        if not env_bool(env.OTEL_LLM_QUOTA_ENABLED, True):
            return
        provider = trace.get_tracer_provider()
        if not callable(getattr(provider, "add_span_processor", None)):
            _logger.warning(
                "otel-llm-quota: the global tracer provider is %s, not the SDK's; LLM spans "
                "are not counted (is OTEL_SDK_DISABLED set, or opentelemetry-distro missing? "
                "run `otel-llm-quota doctor`)",
                type(provider).__name__,
            )
            return
        processor = instrument(provider)
        _logger.debug("otel-llm-quota: attached %r", processor)
    except Exception:  # the app must start whatever happens here
        _logger.exception("otel-llm-quota: could not attach the quota span processor")
        return
    try:
        _report_attached()
    except Exception:  # a report is not worth a failed start
        _logger.debug("otel-llm-quota: could not describe the set-up", exc_info=True)


def _report_attached() -> None:
    """The INFO line (what counts, into what) and the WARNING when no LLM instrumentation is
    active (read from the instrumentor singletons the auto-instrumentation activated)."""
    manager = get_manager()
    active = active_llm_instrumentations()
    limited = [q for q in manager.ledger.get_all() if q.quota_limit is not None]
    shown = ", ".join(f"{q.config_id}={q.quota_limit}" for q in limited[:_MAX_SHOWN])
    if len(limited) > _MAX_SHOWN:
        shown += f", ... ({len(limited) - _MAX_SHOWN} more)"
    store = manager.store
    handlers = [describe_handler(h) for h in manager.alert_handlers]
    _logger.info(
        "otel-llm-quota: counting LLM spans; quotas: %s; store: %s; handlers: %s; "
        "LLM instrumentations: %s",
        shown or "none",
        "none (this process only)" if store is None else repr(store),
        ", ".join(handlers) or "none",
        ", ".join(active) or "none",
    )
    if not active:
        _logger.warning(
            "otel-llm-quota: no LLM instrumentation is active, so no LLM span is made and "
            "nothing is counted: install one (pip install 'otel-llm-quota[openai]') and run "
            "`otel-llm-quota doctor` to see why an installed one is not"
        )
