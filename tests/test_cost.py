"""Cost per request (genai-prices, user prices, integer micro-USD) and cost limits.

The rates below are those of the genai-prices release pinned in tests/constraints.txt (0.2.3),
in USD per million tokens:

* anthropic claude-3-5-haiku (…-latest, …-20241022): input 0.80, output 4, cache read 0.08,
  cache write 1;
* openai gpt-4o-mini (…-2024-07-18): input 0.15, output 0.60, cache read 0.075 (no cache-write
  price: genai-prices prices cache writes as input);
* google gemini-2.5-pro: input 1.25 / 2.50 above 200,000 input tokens, output 10 / 15, cache read
  0.125 / 0.25.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_llm_quota import AlertState, LLMProviderManager
from otel_llm_quota._ledger import QuotaLedger
from otel_llm_quota._pricing import Pricer, parse_price_overrides
from otel_llm_quota.stores import MemoryStore
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler


@pytest.fixture(scope="module")
def genai_prices() -> Any:
    """The genai-prices module (the ``cost`` extra): skipped without it, failed under CI=true."""
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        return importlib.import_module("genai_prices")
    return pytest.importorskip("genai_prices")


HAIKU = ("anthropic", "claude-3-5-haiku-20241022")
MINI = ("openai", "gpt-4o-mini-2024-07-18")
GEMINI = ("gcp.gemini", "gemini-2.5-pro")


def half_up(value: Fraction) -> int:
    return int((Decimal(value.numerator) / Decimal(value.denominator)).to_integral(ROUND_HALF_UP))


def test_cache_tokens_are_priced_at_their_own_rates(genai_prices: Any) -> None:
    pricer = Pricer()
    # 200 uncached + 10 cache-read + 5 cache-write input tokens (input_tokens includes them).
    cost = pricer.cost(*HAIKU, 215, 100, 10, 5)
    # 200 * 0.80 + 10 * 0.08 + 5 * 1 + 100 * 4 = 565.8 micro-USD
    assert cost == 566
    assert cost != pricer.cost(*HAIKU, 215, 100)  # not 215 plain input tokens (572)
    assert pricer.cost(*HAIKU, 215, 100) == 572
    # gpt-4o-mini: 1000 input of which 400 cached, 50 output: 600*0.15 + 400*0.075 + 50*0.6
    assert pricer.cost(*MINI, 1000, 50, 400, 0) == half_up(
        600 * Fraction("0.15") + 400 * Fraction("0.075") + 50 * Fraction("0.6")
    )


def test_tiered_prices_follow_the_input_tokens(genai_prices: Any) -> None:
    pricer = Pricer()
    assert pricer.cost(*GEMINI, 200_000, 1000) == half_up(
        200_000 * Fraction("1.25") + 1000 * Fraction(10)
    )
    assert pricer.cost(*GEMINI, 200_001, 1000) == half_up(
        200_001 * Fraction("2.5") + 1000 * Fraction(15)
    )


usages = st.tuples(
    st.integers(0, 400_000), st.integers(0, 100_000), st.integers(0, 1), st.integers(0, 1)
).flatmap(
    lambda t: st.tuples(
        st.just(t[0]),
        st.just(t[1]),
        st.integers(0, t[0]) if t[2] else st.just(0),
        st.just(0),
    ).flatmap(
        lambda u: st.tuples(
            st.just(u[0]),
            st.just(u[1]),
            st.just(u[2]),
            st.integers(0, u[0] - u[2]) if t[3] else st.just(0),
        )
    )
)


@settings(max_examples=150, deadline=None)
@given(model=st.sampled_from([HAIKU, MINI, GEMINI]), usage=usages)
def test_integer_prices_equal_genai_prices_own_calculation(
    genai_prices: Any, model: tuple[str, str], usage: tuple[int, int, int, int]
) -> None:
    inp, out, cr, cw = usage
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=inp, output_tokens=out, cache_read_tokens=cr, cache_write_tokens=cw
        ),
        model[1],
        provider_id=model[0],
    ).total_price
    assert Pricer().cost(*model, inp, out, cr, cw) == half_up(Fraction(expected) * 10**6)


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from([HAIKU, MINI, GEMINI]),
            usages,
        ),
        max_size=40,
    )
)
def test_config_costs_are_the_exact_sum_of_request_prices(
    genai_prices: Any,
    requests: list[tuple[str, tuple[str, str], tuple[int, int, int, int]]],
) -> None:
    ledger = QuotaLedger()
    pricer = Pricer()
    expected: dict[str, int] = {}
    for config_id, (provider, model), (inp, out, cr, cw) in requests:
        ledger.record_usage(
            config_id,
            provider=provider,
            model=model,
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cr,
            cache_write_tokens=cw,
        )
        price = pricer.cost(provider, model, inp, out, cr, cw)
        assert price is not None
        expected[config_id] = expected.get(config_id, 0) + price
    got = {q.config_id: q.cost_microusd for q in ledger.get_all()}
    assert got == expected
    assert all(q.unpriced_requests == 0 for q in ledger.get_all())
    assert sum(got.values()) == sum(expected.values())


def test_an_unknown_model_is_unpriced_not_free_and_warned_once(
    genai_prices: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = QuotaLedger()
    with caplog.at_level(logging.WARNING, logger="otel_llm_quota._pricing"):
        for _ in range(3):
            ledger.record_usage(
                "c", provider="openai", model="my-own-model-v7", input_tokens=10, output_tokens=5
            )
        ledger.record_usage("c", provider=MINI[0], model=MINI[1], input_tokens=10)
    quota = ledger.get("c")
    assert quota is not None
    assert quota.unpriced_requests == 3
    assert quota.cost_microusd == half_up(10 * Fraction("0.15"))  # only the priced request
    warnings = [r for r in caplog.records if "my-own-model-v7" in r.getMessage()]
    assert len(warnings) == 1
    assert "unpriced" in warnings[0].getMessage()


def test_requests_without_a_model_or_with_unsplit_tokens_are_unpriced(genai_prices: Any) -> None:
    ledger = QuotaLedger()
    ledger.record_usage("c", provider="openai", input_tokens=10)
    ledger.record_usage("c", provider=MINI[0], model=MINI[1], total_tokens=100)  # no split
    quota = ledger.get("c")
    assert quota is not None
    assert (quota.cost_microusd, quota.unpriced_requests) == (0, 2)


def test_user_prices_override_genai_prices_and_free_is_priced_at_zero(genai_prices: Any) -> None:
    overrides = parse_price_overrides(
        [
            {"provider": "openai", "model": "ft:gpt-4o-mini:*", "input": 0.30, "output": 1.2},
            {"provider": "ollama", "model": "*", "free": True},
            {"model": "claude-3-5-haiku*", "input": 1, "output": 5, "cache_read": 0.1},
        ]
    )
    ledger = QuotaLedger(pricer=Pricer(overrides))
    ledger.record_usage(
        "ft", provider="openai", model="ft:gpt-4o-mini:acme:x1", input_tokens=1000, output_tokens=10
    )
    ledger.record_usage("local", provider="ollama", model="llama3", input_tokens=10**6)
    ledger.record_usage(
        "claude",
        provider=HAIKU[0],
        model=HAIKU[1],
        input_tokens=110,
        cache_read_tokens=100,
        cache_write_tokens=10,
        output_tokens=1,
    )
    quotas = {q.config_id: q for q in ledger.get_all()}
    assert quotas["ft"].cost_microusd == 300 + 12  # 1000 * 0.30 + 10 * 1.2
    assert (quotas["local"].cost_microusd, quotas["local"].unpriced_requests) == (0, 0)
    # cache_write defaults to the input rate: 100 * 0.1 + 10 * 1 + 1 * 5
    assert quotas["claude"].cost_microusd == 25


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"model": "x", "input": 1}, "'input' and 'output'"),
        ({"model": "x", "input": -1, "output": 1}, r"input must be in \[0"),
        ({"model": "x", "input": "cheap", "output": 1}, "must be a number"),
        ({"model": "x", "free": True, "input": 1}, "free price takes no rates"),
        ({"input": 1, "output": 1}, "'model'"),
        ({"model": "x", "input": 1, "output": 1, "cost": 3}, "unknown key"),
        ({"model": "", "input": 1, "output": 1}, "non-empty pattern"),
    ],
)
def test_bad_price_entries_are_refused(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_price_overrides([entry])


# -- cost limits ---------------------------------------------------------------------------------


@pytest.fixture
async def priced(
    clock: FakeClock, recorder: RecordingAlertHandler
) -> AsyncIterator[LLMProviderManager]:
    async with LLMProviderManager(clock=clock, cooldown_seconds=3600) as mgr:
        mgr.set_prices([{"provider": "acme", "model": "m", "input": 1, "output": 2}])
        mgr.add_alert_handler(recorder)
        yield mgr


async def test_a_cost_limit_alerts_on_its_own_thresholds_and_says_so(
    priced: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    # 1 micro-USD per input token, 2 per output token; a 0.01 USD = 10,000 micro-USD limit.
    info = await priced.set_quota_limit(
        "c", 1_000_000, thresholds=(90,), cost_limit_usd=0.01, cost_thresholds=(50, 100)
    )
    assert (info.cost_limit_usd, info.cost_thresholds) == (0.01, (50.0, 100.0))
    priced.record_usage("c", provider="acme", model="m", input_tokens=4_999)
    assert await priced.check_quotas() == []
    priced.record_usage("c", provider="acme", model="m", output_tokens=1)  # 5,001 micro-USD
    [alert] = await priced.check_quotas()
    assert (alert.limit_kind, alert.threshold_percent, alert.state) == (
        "cost",
        50.0,
        AlertState.FIRING,
    )
    assert alert.quota.cost_microusd == 5_001
    assert alert.quota.cost_usage_percent == pytest.approx(50.01)
    assert alert.quota.cost_alert_threshold == 50.0
    assert alert.quota.alert_threshold is None  # the token limit is not firing
    status = await priced.get_quota_status("c")
    assert status is not None
    assert status["cost_usd"] == 0.005001
    assert status["cost_microusd"] == 5_001
    assert status["cost_remaining_usd"] == 0.004999
    assert status["unpriced_requests"] == 0
    assert status["usage_percent"] == pytest.approx(0.5)
    # The token limit fires on its own; the two alerts have different fingerprints.
    priced.record_usage("c", provider="acme", model="m", input_tokens=900_000)
    found = await priced.check_quotas()
    kinds = sorted((a.limit_kind, a.threshold_percent) for a in found)
    assert kinds == [("cost", 100.0), ("tokens", 90.0)]
    fingerprints = {a.fingerprint for a in recorder.alerts}
    assert len(fingerprints) == 3


async def test_the_cost_fingerprint_differs_from_the_token_one_at_the_same_threshold(
    priced: LLMProviderManager,
) -> None:
    await priced.set_quota_limit("c", 100, thresholds=(50,), cost_limit_usd=0.0001)
    priced.record_usage("c", provider="acme", model="m", input_tokens=60)  # 60 of 100 micro-USD
    found = await priced.check_quotas()
    assert sorted(a.limit_kind for a in found) == ["cost", "tokens"]
    assert len({a.fingerprint for a in found}) == 2
    assert {a.threshold_percent for a in found} == {50.0}


async def test_a_cost_limit_alone_and_its_period_reset(
    priced: LLMProviderManager, clock: FakeClock, recorder: RecordingAlertHandler
) -> None:
    info = await priced.set_quota_limit("c", None, cost_limit_usd=0.001, period="day")
    assert (info.quota_limit, info.cost_limit_microusd) == (None, 1_000)
    priced.record_usage("c", provider="acme", model="m", input_tokens=800)
    [alert] = await priced.check_quotas()
    assert (alert.limit_kind, alert.threshold_percent) == ("cost", 80.0)
    clock.advance(timedelta(days=1))
    [resolved] = await priced.check_quotas()
    assert (resolved.limit_kind, resolved.state) == ("cost", AlertState.RESOLVED)
    quota = await priced.get_quota_usage("c")
    assert quota is not None
    assert (quota.cost_microusd, quota.lifetime_cost_microusd) == (0, 800)


async def test_the_seed_signature_still_sets_a_token_limit_only(
    priced: LLMProviderManager,
) -> None:
    info = await priced.set_quota_limit("c", 1000, thresholds=(50, 90), period="week")
    assert (info.quota_limit, info.cost_limit_usd, info.cost_usage_percent) == (1000, None, None)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "5", True])
async def test_bad_cost_limits_are_refused(priced: LLMProviderManager, bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="cost_limit_usd"):
        await priced.set_quota_limit("c", 1000, cost_limit_usd=bad)  # type: ignore[arg-type]
    assert await priced.get_quota_usage("c") is None


async def test_costs_and_cost_alerts_are_fleet_wide(clock: FakeClock) -> None:
    store = MemoryStore()
    managers = [
        LLMProviderManager(store=store, clock=clock, flush_interval_seconds=60.0) for _ in range(3)
    ]
    handlers = []
    try:
        for m in managers:
            m.set_prices([{"provider": "acme", "model": "m", "input": 1, "output": 2}])
            handlers.append(RecordingAlertHandler())
            m.add_alert_handler(handlers[-1])
        await managers[0].set_quota_limit("team", None, cost_limit_usd=0.001)  # 1,000 micro
        for m in managers:
            assert await m.aflush()
        for m in managers:
            m.record_usage("team", provider="acme", model="m", input_tokens=300)
            m.record_usage("team", provider="acme", model="bad", input_tokens=1)
        for _ in range(2):
            for m in managers:
                assert await m.aflush()
        firing = [a for m in managers for a in await m.check_quotas()]
        assert [(a.limit_kind, a.threshold_percent) for a in firing] == [("cost", 80.0)]
        assert sum(len(h.alerts) for h in handlers) == 1
        for m in managers:
            quota = await m.get_quota_usage("team")
            assert quota is not None
            assert (quota.cost_microusd, quota.unpriced_requests) == (900, 3)
            assert quota.cost_limit_microusd == 1_000
    finally:
        for m in managers:
            await m.aclose()


async def test_notifications_say_which_limit_fired(priced: LLMProviderManager) -> None:
    from otel_llm_quota.handlers._otel_log import OTelLogEventHandler
    from otel_llm_quota.handlers._payload import alert_details, summary, webhook_payload

    await priced.set_quota_limit("c", 100, thresholds=(50,), cost_limit_usd=0.0001)
    priced.record_usage("c", provider="acme", model="m", input_tokens=60)
    by_kind = {a.limit_kind: a for a in await priced.check_quotas()}
    cost, tokens = by_kind["cost"], by_kind["tokens"]
    assert summary(cost) == "LLM quota c cost crossed 50% (60.0% of 0.0001 USD used)"
    assert summary(tokens) == "LLM quota c crossed 50% (60.0% used)"
    details = alert_details(cost)
    assert (details["limit_kind"], details["cost_microusd"], details["cost_utilization"]) == (
        "cost",
        60,
        0.6,
    )
    cost_body, token_body = (
        webhook_payload(cost, receiver="r"),
        webhook_payload(tokens, receiver="r"),
    )
    assert cost_body["alerts"][0]["labels"]["limit_kind"] == "cost"
    assert "limit_kind" not in token_body["alerts"][0]["labels"]  # token alerts as before
    assert cost_body["alerts"][0]["fingerprint"] != token_body["alerts"][0]["fingerprint"]
    assert "USD spent" in cost_body["alerts"][0]["annotations"]["description"]
    attrs = OTelLogEventHandler.attributes(cost)
    assert (attrs["llm.quota.limit.kind"], attrs["llm.quota.utilization"]) == ("cost", 0.6)
    assert "llm.quota.limit.kind" not in OTelLogEventHandler.attributes(tokens)
