"""Fuzz ``on_end`` with hypothesis-generated attribute maps: never raises, never corrupts totals.

The oracle below is a deliberately plain re-statement of the documented rules (first well-formed
int per key table, a total only adds its excess, a failure without usage counts when a provider
or token key is present, config = provider or "unknown"); the processor's
totals must equal it exactly, and the ledger's invariants must hold.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from otel_llm_quota import DEFAULT_CONVENTIONS, LLMProviderManager, QuotaSpanProcessor
from otel_llm_quota._processor import MAX_TOKENS_PER_SPAN

C = DEFAULT_CONVENTIONS
TOKEN_KEYS = list(C.input_tokens + C.output_tokens + C.total_tokens)
OTHER_KEYS = [*C.provider, *C.model, "error.type", "http.route", "llm.quota.config_id"]

attribute_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=0, max_value=5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3).map(tuple),
)
provider_values = st.one_of(st.sampled_from(["openai", "anthropic", ""]), attribute_values)
attribute_maps = st.dictionaries(
    st.sampled_from(TOKEN_KEYS + OTHER_KEYS),
    attribute_values,
    max_size=10,
).flatmap(
    lambda attrs: st.dictionaries(st.sampled_from(C.provider), provider_values, max_size=2).map(
        lambda prov: {**attrs, **prov}
    )
)


def _first_int(attrs: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if type(value) is int and 0 <= value <= MAX_TOKENS_PER_SPAN:
            return value
    return None


def _first_str(attrs: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if type(value) is str and value:
            return value
    return None


def _usable(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= 256 and not value.isspace()


def _expected(spans: list[dict[str, Any]]) -> dict[str, list[int]]:
    """config id -> [input, output, other, successes, failures]."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for attrs in spans:
        inp = _first_int(attrs, C.input_tokens)
        out = _first_int(attrs, C.output_tokens)
        total = _first_int(attrs, C.total_tokens)
        failed = "error.type" in attrs
        has_usage = not (inp is None and out is None and total is None)
        provider = _first_str(attrs, C.provider)
        # A provider or token key marks an LLM span, whatever its value.
        is_llm_span = any(key in attrs for key in (*C.provider, *TOKEN_KEYS))
        if not has_usage and not (failed and is_llm_span):
            continue
        # The resolution order: a usable config id attribute, else a usable provider, else the
        # default ("unknown"); blank or over-long values fall through, never lose the tokens.
        config = attrs.get("llm.quota.config_id")
        if not _usable(config):
            config = provider if _usable(provider) else "unknown"
        row = totals[config]
        row[0] += inp or 0
        row[1] += out or 0
        if total is not None:
            row[2] += max(total - (inp or 0) - (out or 0), 0)
        row[3 if not failed else 4] += 1
    return dict(totals)


@settings(max_examples=300, deadline=None)
@given(st.lists(attribute_maps, max_size=12))
def test_on_end_never_raises_and_totals_match_the_rules(spans: list[dict[str, Any]]) -> None:
    manager = LLMProviderManager()
    processor = QuotaSpanProcessor(manager)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("fuzz")
    try:
        recorded: list[dict[str, Any]] = []
        for attrs in spans:
            span = tracer.start_span("llm")
            for key, value in attrs.items():
                span.set_attribute(key, value)
            # What the SDK kept (it drops some value types): what the processor sees.
            recorded.append(dict(span.attributes or {}))
            span.end()  # on_end runs here; an exception would propagate out of end()
        got = {
            info.config_id: [
                info.input_tokens,
                info.output_tokens,
                info.other_tokens,
                info.successful_requests,
                info.failed_requests,
            ]
            for info in manager.ledger.get_all()
        }
        assert got == _expected(recorded), recorded
        for info in manager.ledger.get_all():
            assert min(info.input_tokens, info.output_tokens, info.other_tokens) >= 0
            assert info.total_tokens == info.input_tokens + info.output_tokens + info.other_tokens
    finally:
        provider.shutdown()
        manager.close()
