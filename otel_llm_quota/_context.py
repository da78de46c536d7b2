"""``quota_config``: choose the quota configuration of the LLM calls made in a block of code.

The id is stored in the OpenTelemetry context, so it follows the code the way OTel context does:
into ``asyncio`` tasks created inside the block, into threads that copy the context, and it is
gone when the block ends. ``QuotaSpanProcessor.on_start`` reads it for every span started inside
the block and stamps it on the span as ``llm.quota.config_id`` (unless the span already has one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from opentelemetry import context as otel_context

from otel_llm_quota._validation import check_config_id

__all__ = ["ContextUse", "current_quota_config", "quota_config"]

QUOTA_CONFIG_CONTEXT_KEY: Final = otel_context.create_key("llm.quota.config_id")


class ContextUse:
    """Whether ``quota_config`` was ever entered in this process: until then the processor's
    ``on_start`` has nothing to look up and returns at once."""

    used = False


@contextmanager
def quota_config(config_id: str) -> Iterator[str]:
    """Count the LLM spans started inside the ``with`` block toward ``config_id``.

    ``with otel_llm_quota.quota_config("openai-prod"): client.chat.completions.create(...)``.
    Nesting works: the innermost block wins. A span attribute ``llm.quota.config_id`` set by the
    instrumentation or the app still wins over this. Raises TypeError/ValueError for a bad id.
    """
    config_id = check_config_id(config_id)
    ContextUse.used = True
    token = otel_context.attach(otel_context.set_value(QUOTA_CONFIG_CONTEXT_KEY, config_id))
    try:
        yield config_id
    finally:
        otel_context.detach(token)


def current_quota_config(context: otel_context.Context | None = None) -> str | None:
    """The config id set by the innermost ``quota_config`` block around ``context`` (or now)."""
    value = otel_context.get_value(QUOTA_CONFIG_CONTEXT_KEY, context)
    return value if isinstance(value, str) else None
