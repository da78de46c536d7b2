"""Zero-code registration: the ``opentelemetry_post_instrument`` entry point.

``opentelemetry-instrument python app.py`` configures the SDK, runs the instrumentors and then
calls ``post_instrument()``, which attaches a ``QuotaSpanProcessor`` with the default manager
(configured from ``OTEL_LLM_QUOTA_*`` and ``OTEL_LLM_QUOTA_CONFIG_FILE``) to the global tracer
provider and starts the monitor thread. Whatever goes wrong is logged; the app always starts.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from otel_llm_quota import environment_variables as env
from otel_llm_quota._env import env_bool
from otel_llm_quota._registration import instrument

__all__ = ["post_instrument"]

_logger = logging.getLogger(__name__)


def post_instrument() -> None:
    """Attach the quota processor to the SDK tracer provider. Never raises."""
    try:
        if not env_bool(env.OTEL_LLM_QUOTA_ENABLED, True):
            return
        provider = trace.get_tracer_provider()
        if not callable(getattr(provider, "add_span_processor", None)):
            _logger.warning(
                "otel-llm-quota: the global tracer provider is %s, not the SDK's; LLM spans "
                "are not counted (is OTEL_SDK_DISABLED set?)",
                type(provider).__name__,
            )
            return
        processor = instrument(provider)
        _logger.debug("otel-llm-quota: attached %r", processor)
    except Exception:  # the app must start whatever happens here
        _logger.exception("otel-llm-quota: could not attach the quota span processor")
