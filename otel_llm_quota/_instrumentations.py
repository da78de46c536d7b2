"""Which installed OpenTelemetry instrumentations make LLM spans, and which of them are active.

Shared by ``otel-llm-quota doctor`` (what is installed, does it import) and the zero-code entry
point (warn when ``opentelemetry-instrument`` activated none). Nothing here imports an
instrumentation or a client library: the entry points are read from the installed distributions'
metadata, and "active" is read from the instrumentor singletons the auto-instrumentation already
imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from importlib import metadata
from typing import Final

__all__ = [
    "INSTRUMENTOR_GROUP",
    "LLM_CLIENTS",
    "LLMInstrumentation",
    "active_llm_instrumentations",
    "anthropic_sdk_tracing",
    "describe_handler",
    "is_llm_entry_point",
    "llm_instrumentations",
]

INSTRUMENTOR_GROUP: Final = "opentelemetry_instrumentor"
"""The entry-point group ``opentelemetry-instrument`` loads instrumentors from."""

LLM_CLIENTS: Final = (
    "openai",
    "anthropic",
    "google-genai",
    "google-cloud-aiplatform",
    "mistralai",
    "cohere",
    "groq",
    "ollama",
    "litellm",
    "boto3",
    "langchain-core",
    "langchain-openai",
    "llama-index-core",
)
"""Distributions of LLM clients and frameworks whose instrumentation makes LLM spans."""

# Entry-point names (in INSTRUMENTOR_GROUP) of the LLM instrumentations of opentelemetry-python-
# contrib, OpenLLMetry and OpenInference. Several packages share a name ("openai" is openai-v2's,
# OpenLLMetry's and OpenInference's).
_LLM_ENTRY_POINTS: Final = frozenset(
    {
        "openai",
        "openai_v2",
        "openai_agents",
        "anthropic",
        "bedrock",
        "cohere",
        "crewai",
        "google_genai",
        "google_generativeai",
        "groq",
        "haystack",
        "langchain",
        "litellm",
        "llama_index",
        "llamaindex",
        "mistralai",
        "ollama",
        "replicate",
        "sagemaker",
        "together",
        "transformers",
        "vertexai",
        "watsonx",
    }
)


@dataclass(frozen=True)
class LLMInstrumentation:
    """One installed instrumentor entry point that makes LLM spans."""

    name: str
    """The entry point's name (what ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` lists)."""
    value: str
    """``module:Class`` of the instrumentor."""
    distribution: str
    version: str

    @property
    def module(self) -> str:
        return self.value.partition(":")[0]


def llm_instrumentations() -> list[LLMInstrumentation]:
    """The installed LLM instrumentor entry points, by distribution name (from metadata only)."""
    found: list[LLMInstrumentation] = []
    seen: set[tuple[str, str]] = set()
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for entry_point in dist.entry_points:
            if entry_point.group != INSTRUMENTOR_GROUP or entry_point.name not in _LLM_ENTRY_POINTS:
                continue
            key = (dist_name.lower(), entry_point.value)
            if key in seen:  # the same distribution on sys.path twice
                continue
            seen.add(key)
            found.append(
                LLMInstrumentation(entry_point.name, entry_point.value, dist_name, dist.version)
            )
    return sorted(found, key=lambda i: (i.distribution.lower(), i.name))


def is_llm_entry_point(name: str) -> bool:
    """Whether an instrumentor entry point of this name makes LLM spans."""
    return name in _LLM_ENTRY_POINTS


def active_llm_instrumentations() -> list[str]:
    """The LLM instrumentations that are instrumenting now (distribution names), plus
    ``anthropic`` when the anthropic SDK traces its own calls.

    An instrumentor counts when its module was already imported and its singleton says
    ``is_instrumented_by_opentelemetry``: nothing is imported here, so it costs a metadata scan.
    """
    active: list[str] = []
    for item in llm_instrumentations():
        module = sys.modules.get(item.module)
        if module is None:
            continue
        cls = module
        try:
            for part in item.value.partition(":")[2].split("."):
                cls = getattr(cls, part)
            instance = getattr(cls, "_instance", None)
            if instance is not None and instance.is_instrumented_by_opentelemetry:
                active.append(item.distribution)
        except Exception:  # an odd instrumentor must not break the check
            continue
    if anthropic_sdk_tracing():
        active.append("anthropic (SDK spans)")
    return active


def anthropic_sdk_tracing() -> bool:
    """Whether the installed anthropic SDK makes OpenTelemetry spans of its own calls.

    Releases with ``anthropic/_tracing.py`` do, unless ``ANTHROPIC_OPEN_TELEMETRY=false``. Found
    without importing anthropic (which takes a few hundred milliseconds).
    """
    if os.environ.get("ANTHROPIC_OPEN_TELEMETRY", "").strip().lower() == "false":
        return False
    try:
        spec = importlib.util.find_spec("anthropic")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        os.path.exists(os.path.join(location, "_tracing.py"))
        for location in spec.submodule_search_locations
    )


def describe_handler(handler: object) -> str:
    """A handler as it may be shown in logs: the built-ins' reprs (which redact their URLs and
    passwords), else only the class and ``name`` (a handler of yours may hold secrets)."""
    if isinstance(handler, (types.FunctionType, types.MethodType)):
        return f"{handler.__module__}.{handler.__qualname__}"
    cls = type(handler)
    if cls.__module__.startswith("otel_llm_quota."):
        return repr(handler)
    name = getattr(handler, "name", None) or getattr(handler, "__name__", None)
    shown = f"{cls.__module__}.{cls.__qualname__}"
    return f"{shown}(name={name!r})" if isinstance(name, str) else shown
