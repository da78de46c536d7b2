"""Config-id rules: map a span's provider, model and resource attributes to a configuration.

A rule names a ``config_id`` and a ``match`` mapping. ``provider`` and ``model`` match the values
the processor read from the span; any other key (``service.name``, ``deployment.environment``)
matches the span's resource attribute of that name. Each pattern is a string
(``fnmatch`` wildcards: ``gpt-4o*``) or a list of such strings (any may match). Every key of a rule
must match; the first matching rule wins. ``SpanUsage`` is what a resolver callable receives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any

from otel_llm_quota._validation import check_config_id

__all__ = ["ConfigResolver", "ConfigRule", "SpanUsage"]


@dataclass(frozen=True, slots=True)
class SpanUsage:
    """The usage the processor read from one span, as handed to a ``config_resolver``."""

    provider: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    total_tokens: int | None
    response_id: str | None
    success: bool
    attributes: Mapping[str, Any] = field(repr=False)
    """The span's attributes (read-only)."""
    resource_attributes: Mapping[str, Any] = field(repr=False)
    """The attributes of the span's resource (``service.name`` ...)."""
    details: Mapping[str, int] = field(default_factory=dict)
    """Cache and reasoning token counts (already included in input/output)."""


ConfigResolver = Callable[[SpanUsage], "str | None"]
"""A user callable choosing a config id for a span (or None to fall through to the provider)."""


def _compile(key: str, pattern: object) -> re.Pattern[str]:
    items: Sequence[object]
    items = [pattern] if isinstance(pattern, str) else list(pattern)  # type: ignore[call-overload]  # checked below
    if not items or not all(isinstance(p, str) and p for p in items):
        raise TypeError(f"rule pattern for {key!r} must be a non-empty string or list of strings")
    return re.compile("|".join(f"(?:{translate(str(p))})" for p in items))


@dataclass(frozen=True, slots=True, init=False)
class ConfigRule:
    """``ConfigRule("openai-prod", provider="openai", model="gpt-4o*", **{"service.name": "x"})``.

    Or ``ConfigRule.from_dict({"config_id": ..., "match": {...}})`` (the config-file form).
    """

    config_id: str
    match: Mapping[str, tuple[str, ...]]
    _patterns: tuple[tuple[str, re.Pattern[str]], ...]

    def __init__(self, config_id: str, **match: str | Iterable[str]) -> None:
        object.__setattr__(self, "config_id", check_config_id(config_id))
        if not match:
            raise ValueError(f"rule for {config_id!r} must match on at least one key")
        compiled = []
        shown: dict[str, tuple[str, ...]] = {}
        for key, pattern in match.items():
            if not isinstance(pattern, str) and not isinstance(pattern, Iterable):
                raise TypeError(f"rule pattern for {key!r} must be a string or list of strings")
            compiled.append((key, _compile(key, pattern)))
            shown[key] = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        object.__setattr__(self, "match", shown)
        object.__setattr__(self, "_patterns", tuple(compiled))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfigRule:
        """Build a rule from ``{"config_id": "...", "match": {"provider": "openai", ...}}``."""
        unknown = set(data) - {"config_id", "match"}
        if unknown:
            raise ValueError(f"unknown rule keys: {sorted(unknown)}")
        match = data.get("match")
        if not isinstance(match, Mapping):
            raise TypeError("a rule needs a 'match' mapping")
        return cls(data.get("config_id"), **{str(k): v for k, v in match.items()})  # type: ignore[arg-type]  # checked by __init__

    def matches(
        self,
        provider: str | None,
        model: str | None,
        resource: Mapping[str, Any],
    ) -> bool:
        """True if every key of the rule matches."""
        for key, pattern in self._patterns:
            if key == "provider":
                value: object = provider
            elif key == "model":
                value = model
            else:
                value = resource.get(key)
            if not isinstance(value, str) or pattern.fullmatch(value) is None:
                return False
        return True


def first_match(
    rules: Sequence[ConfigRule],
    provider: str | None,
    model: str | None,
    resource: Mapping[str, Any],
) -> str | None:
    """The config id of the first rule that matches, or None."""
    for rule in rules:
        if rule.matches(provider, model, resource):
            return rule.config_id
    return None
