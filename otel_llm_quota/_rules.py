"""Config-id rules: map a span's provider, model and resource attributes to a configuration.

A rule names a ``config_id`` and a ``match`` mapping. ``provider`` and ``model`` match the values
the processor read from the span; any other key (``service.name``, ``deployment.environment``)
matches the span's resource attribute of that name. Each pattern is a string
(``fnmatch`` wildcards: ``gpt-4o*``) or a list of such strings (any may match). Every key of a rule
must match; the first matching rule wins. ``SpanUsage`` is what a resolver callable receives.
``service_name`` is accepted for ``service.name`` (a Python keyword cannot hold a dot).

**Routing by a span attribute** (opt-in): a rule with ``attribute="app.tenant_id"`` matches only
spans that carry that attribute as a non-empty string, and its ``config_id`` may hold ``{value}``,
replaced by the attribute's value: ``ConfigRule("tenant-{value}", attribute="app.tenant_id")``
gives each tenant a config of its own. The ids so created are configs without a limit, so the
``max_configs`` cap bounds them (beyond it their usage counts in ``_overflow``). A rule's
``parent`` links the configs it creates to a parent config (nested budgets), e.g. every tenant
of one team to ``team-search``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any

from otel_llm_quota._validation import MAX_CONFIG_ID_LENGTH, check_config_id

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
    attribute: str | None
    """The span attribute whose value fills ``{value}`` in ``config_id`` (None: no routing)."""
    parent: str | None
    """The parent given to the configs this rule creates (None: none)."""

    def __init__(
        self,
        config_id: str,
        *,
        attribute: str | None = None,
        parent: str | None = None,
        **match: str | Iterable[str],
    ) -> None:
        object.__setattr__(self, "config_id", check_config_id(config_id))
        if attribute is not None and (not isinstance(attribute, str) or not attribute):
            raise TypeError("a rule's 'attribute' must be a non-empty string (a span attribute)")
        if "{value}" in config_id and attribute is None:
            raise ValueError(f"rule for {config_id!r} uses {{value}} but names no 'attribute'")
        object.__setattr__(self, "attribute", attribute)
        object.__setattr__(self, "parent", None if parent is None else check_config_id(parent))
        if not match and attribute is None:
            raise ValueError(f"rule for {config_id!r} must match on at least one key")
        compiled = []
        shown: dict[str, tuple[str, ...]] = {}
        if "service_name" in match:
            match["service.name"] = match.pop("service_name")
        for key, pattern in match.items():
            if not isinstance(pattern, str) and not isinstance(pattern, Iterable):
                raise TypeError(f"rule pattern for {key!r} must be a string or list of strings")
            compiled.append((key, _compile(key, pattern)))
            shown[key] = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        object.__setattr__(self, "match", shown)
        object.__setattr__(self, "_patterns", tuple(compiled))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfigRule:
        """Build a rule from ``{"config_id": "...", "match": {"provider": "openai", ...}}``
        (plus ``attribute`` and ``parent``; ``match`` may be left out with an ``attribute``)."""
        unknown = set(data) - {"config_id", "match", "attribute", "parent"}
        if unknown:
            raise ValueError(f"unknown rule keys: {sorted(unknown)}")
        match = data.get("match")
        if match is None and data.get("attribute") is not None:
            match = {}
        if not isinstance(match, Mapping):
            raise TypeError("a rule needs a 'match' mapping")
        return cls(
            data.get("config_id"),  # type: ignore[arg-type]  # checked by __init__
            attribute=data.get("attribute"),
            parent=data.get("parent"),
            **{str(k): v for k, v in match.items()},
        )

    def matches(
        self,
        provider: str | None,
        model: str | None,
        resource: Mapping[str, Any],
    ) -> bool:
        """True if every key of the rule matches (the ``attribute`` is checked by
        ``config_id_for``)."""
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

    def config_id_for(self, attributes: Mapping[str, Any] | None) -> str | None:
        """The config id for a span with ``attributes`` (its ``{value}`` filled in), or None if
        the span lacks the rule's attribute or the id it would give is not usable."""
        key = self.attribute
        if key is None:
            return self.config_id
        value = None if attributes is None else attributes.get(key)
        if not isinstance(value, str) or not value:
            return None
        chosen = self.config_id.replace("{value}", value)
        if len(chosen) > MAX_CONFIG_ID_LENGTH:
            return None
        return chosen


def first_match(
    rules: Sequence[ConfigRule],
    provider: str | None,
    model: str | None,
    resource: Mapping[str, Any],
    attributes: Mapping[str, Any] | None = None,
) -> str | None:
    """The config id of the first rule that matches, or None."""
    found = first_rule(rules, provider, model, resource, attributes)
    return None if found is None else found[0]


def first_rule(
    rules: Sequence[ConfigRule],
    provider: str | None,
    model: str | None,
    resource: Mapping[str, Any],
    attributes: Mapping[str, Any] | None = None,
) -> tuple[str, ConfigRule] | None:
    """``(config id, rule)`` of the first rule that matches the span, or None."""
    for rule in rules:
        if rule.matches(provider, model, resource):
            chosen = rule.config_id_for(attributes)
            if chosen is not None:
                return chosen, rule
    return None


def attribute_keys(rules: Sequence[ConfigRule]) -> tuple[str, ...]:
    """The span attributes the rules route by (their values are part of the rule cache key)."""
    return tuple(dict.fromkeys(r.attribute for r in rules if r.attribute is not None))
