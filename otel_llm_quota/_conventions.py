"""Where LLM instrumentations put token usage on spans: the attribute-key tables.

Each field of ``Conventions`` is a tuple of attribute keys, read in order; the first key present
on a span wins. The defaults cover every convention in use today:

* OpenTelemetry GenAI semantic conventions (``gen_ai.usage.input_tokens`` /
  ``gen_ai.usage.output_tokens``, provider in ``gen_ai.provider.name`` or the older
  ``gen_ai.system``), as written by ``opentelemetry-instrumentation-openai-v2``, the ``anthropic``
  SDK's own spans and OpenLLMetry;
* the older GenAI keys ``gen_ai.usage.prompt_tokens`` / ``gen_ai.usage.completion_tokens``;
* OpenLLMetry's totals (``llm.usage.total_tokens``, ``gen_ai.usage.total_tokens``);
* OpenInference (``llm.token_count.prompt`` / ``.completion`` / ``.total``, provider in
  ``llm.provider`` / ``llm.system``, model in ``llm.model_name``).

The key strings live here rather than being imported from the incubating semantic-convention
packages, whose constants have moved between packages and versions. To read a convention of your
own, extend the defaults and give the result to the processor::

    conventions = DEFAULT_CONVENTIONS.extend(input_tokens=("myco.llm.tokens_in",))
    QuotaSpanProcessor(manager, conventions=conventions)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Final

__all__ = ["DEFAULT_CONVENTIONS", "QUOTA_CONFIG_ID_ATTRIBUTE", "Conventions"]

QUOTA_CONFIG_ID_ATTRIBUTE: Final = "llm.quota.config_id"
"""Span attribute naming the quota configuration a span's usage counts toward (ours)."""

ERROR_TYPE_ATTRIBUTE: Final = "error.type"
"""Set by instrumentations on failed calls (with or without an ERROR status)."""


@dataclass(frozen=True)
class Conventions:
    """Attribute keys the processor reads, each field in order of preference.

    Token counts must be non-negative ``int`` attributes; anything else is skipped and counted (see
    ``QuotaSpanProcessor.stats``). Detail keys (cache, reasoning) are never added to the quota:
    the conventions define them as already included in the input/output counts.
    """

    input_tokens: tuple[str, ...] = (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "llm.usage.prompt_tokens",
    )
    output_tokens: tuple[str, ...] = (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "llm.usage.completion_tokens",
    )
    total_tokens: tuple[str, ...] = (
        "gen_ai.usage.total_tokens",
        "llm.usage.total_tokens",
        "llm.token_count.total",
    )
    """A total above input + output is counted as tokens of unspecified type; a total alone (no
    input/output split) counts in full."""
    provider: tuple[str, ...] = (
        "gen_ai.provider.name",
        "gen_ai.system",
        "llm.provider",
        "llm.system",
    )
    model: tuple[str, ...] = (
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.model_name",
        "llm.response.model",
        "llm.request.model",
    )
    cache_read_tokens: tuple[str, ...] = (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    )
    """Input tokens read from the provider's prompt cache (included in the input tokens): priced
    at the model's cache-read rate (see the README, "Cost budgets"), never added to the quota."""
    cache_write_tokens: tuple[str, ...] = (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "llm.token_count.prompt_details.cache_write",
    )
    """Input tokens written to the prompt cache (included in the input tokens): priced at the
    model's cache-write rate, never added to the quota."""
    response_id: tuple[str, ...] = ("gen_ai.response.id",)
    """Identifies one LLM response: two spans carrying the same id are counted once."""
    detail_tokens: tuple[str, ...] = (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.reasoning_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "llm.token_count.prompt_details.cache_read",
        "llm.token_count.prompt_details.cache_write",
        "llm.token_count.completion_details.reasoning",
    )
    """Breakdowns already included in input/output: shown to resolvers, never added."""
    request_model: tuple[str, ...] = ("gen_ai.request.model", "llm.request.model")
    """The model asked for: part of the key that pairs a framework span with a provider span
    (the response model of a streamed call differs between instrumentations)."""
    framework_scopes: tuple[str, ...] = (
        "opentelemetry.instrumentation.langchain",
        "openinference.instrumentation.langchain",
        "opentelemetry.instrumentation.llamaindex",
        "openinference.instrumentation.llama_index",
    )
    """Instrumentation scopes of frameworks that wrap a provider's client and repeat its usage.
    A span of one of them that carries usage but no response id is not counted when a provider
    span (another scope, with a response id) with the same provider, request model and token
    counts ended within ``FRAMEWORK_MATCH_SECONDS`` (and the other way round): see the README,
    "Counting each response once"."""
    operation: tuple[str, ...] = ("gen_ai.operation.name",)
    non_model_operations: frozenset[str] = frozenset(
        {"execute_tool", "create_agent", "invoke_agent"}
    )
    """Operations that are not a model call: a failure of one is not a failed LLM request."""

    def extend(self, **keys: tuple[str, ...]) -> Conventions:
        """A copy with ``keys`` appended to the named fields (after the existing keys)."""
        names = {f.name for f in fields(self)} - {"non_model_operations"}
        changes: dict[str, tuple[str, ...]] = {}
        for name, extra in keys.items():
            if name not in names:
                raise TypeError(f"unknown conventions field {name!r}")
            if isinstance(extra, str) or not all(isinstance(k, str) for k in extra):
                raise TypeError(f"{name} must be a tuple of attribute keys")
            current: tuple[str, ...] = getattr(self, name)
            changes[name] = current + tuple(k for k in extra if k not in current)
        return replace(self, **changes)  # type: ignore[arg-type]  # fields checked above

    @property
    def usage_keys(self) -> frozenset[str]:
        """Every token-count key: a span with none of them carries no usage."""
        return frozenset(self.input_tokens + self.output_tokens + self.total_tokens)


DEFAULT_CONVENTIONS: Final = Conventions()
"""The conventions of OTel GenAI, OpenLLMetry and OpenInference (see the module docstring)."""
