"""Config rules that route by ``service.name``, model, or (opt-in) a span attribute such as the
app's tenant id, whose new configs are capped by ``max_configs`` and may count toward a parent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_llm_quota import ConfigRule, LLMProviderManager, QuotaSpanProcessor
from otel_llm_quota._ledger import OVERFLOW_CONFIG_ID
from otel_llm_quota.testing import FakeClock

GENAI = {
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 7,
}


@pytest.fixture
def manager(clock: FakeClock) -> Iterator[LLMProviderManager]:
    made = LLMProviderManager(clock=clock, metrics=False, max_configs=3)
    yield made
    made.close()


def spans(
    manager: LLMProviderManager,
    rules: list[Any],
    attributes: list[dict[str, Any]],
    service: str = "search-api",
) -> None:
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(QuotaSpanProcessor(manager, rules=rules))
    tracer = provider.get_tracer("test")
    for extra in attributes:
        with tracer.start_as_current_span("llm", attributes={**GENAI, **extra}):
            pass
    provider.shutdown()


def tokens(manager: LLMProviderManager) -> dict[str, int]:
    return {q.config_id: q.total_tokens for q in manager.ledger.get_all()}


def test_route_by_service_name_and_model(manager: LLMProviderManager) -> None:
    rules = [
        ConfigRule("search-mini", service_name="search-*", model="gpt-4o-mini"),
        ConfigRule("search-other", service_name="search-*"),
    ]
    spans(manager, rules, [{}, {"gen_ai.request.model": "gpt-4o"}])
    spans(manager, rules, [{}], service="checkout")
    assert tokens(manager) == {"search-mini": 18, "search-other": 18, "openai": 18}


def test_route_by_a_span_attribute_into_one_config_per_tenant_under_a_parent(
    manager: LLMProviderManager,
) -> None:
    manager.set_quota_limit_sync("team-search", 1_000)
    rules = [
        ConfigRule.from_dict(
            {"config_id": "tenant-{value}", "attribute": "app.tenant_id", "parent": "team-search"}
        )
    ]
    spans(
        manager,
        rules,
        [
            {"app.tenant_id": "acme"},
            {"app.tenant_id": "acme"},  # from the rule cache
            {"app.tenant_id": "globex"},
            {},  # no tenant: the rule does not match, the provider's config takes it
        ],
    )
    assert tokens(manager) == {
        "team-search": 54,
        "tenant-acme": 36,
        "tenant-globex": 18,
        "openai": 18,
    }
    assert manager.ledger.get("tenant-acme").parent == "team-search"  # type: ignore[union-attr]


def test_tenant_configs_are_capped_by_max_configs(manager: LLMProviderManager) -> None:
    rules = [ConfigRule("tenant-{value}", attribute="app.tenant_id")]
    spans(manager, rules, [{"app.tenant_id": f"t{i}"} for i in range(10)])
    found = tokens(manager)
    assert len(found) == 4  # max_configs=3, and the overflow config
    assert found[OVERFLOW_CONFIG_ID] == 7 * 18
    assert sum(found.values()) == 10 * 18  # nothing lost


def test_bad_routing_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="names no 'attribute'"):
        ConfigRule("tenant-{value}", provider="openai")
    with pytest.raises(TypeError, match="'attribute' must be a non-empty string"):
        ConfigRule("x", attribute="")
