"""Forecast alerts of cost limits: the token forecast's estimator, settings and rules over the
cost in micro-USD (once per period, resolved below 90 %, one notification per fleet), told apart
from the token forecast by ``limit_kind`` and the fingerprint. Every test moves a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from test_forecast import DAY, STEP, forecasts
from test_forecast import run as token_run

from otel_llm_quota import Alert, AlertReason, AlertState, LLMProviderManager
from otel_llm_quota.handlers._payload import alert_details, alert_labels, summary
from otel_llm_quota.stores import MemoryStore
from otel_llm_quota.testing import FakeClock

BUDGET_MICROUSD = 70_000  # 0.07 USD: at 1 micro-USD per input token, 70,000 input tokens
PRICES = [{"provider": "acme", "model": "m", "input": 1, "output": 2}]  # USD per million


@pytest.fixture
def day_clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 15, 0, 0, tzinfo=timezone.utc))  # a period's start


def priced_manager(clock: FakeClock, **kwargs: object) -> LLMProviderManager:
    made = LLMProviderManager(clock=clock, metrics=False, **kwargs)  # type: ignore[arg-type]
    made.set_prices(PRICES)
    return made


@pytest.fixture
def manager(day_clock: FakeClock) -> Iterator[LLMProviderManager]:
    made = priced_manager(day_clock, send_resolved=True)
    made.set_quota_limit_sync("key", None, period="day", cost_limit_usd=BUDGET_MICROUSD / 1e6)
    yield made
    made.close()


async def run(
    manager: LLMProviderManager, clock: FakeClock, seconds: float, microusd_per_second: float
) -> list[tuple[float, Alert]]:
    """Priced usage at a steady pace (1 micro-USD a token), one pass a minute: the token
    forecast tests' ``run``."""
    return await token_run(manager, clock, seconds, microusd_per_second, provider="acme", model="m")


async def test_a_steady_cost_pace_that_exhausts_at_70_percent_alerts_once_early(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    start = day_clock()
    pace = BUDGET_MICROUSD / (0.7 * DAY)
    found = await run(manager, day_clock, DAY - STEP, pace)
    assert [(a.state, a.reason, a.limit_kind) for _, a in found] == [
        (AlertState.FIRING, AlertReason.FORECAST, "cost")
    ]
    when, alert = found[0]
    assert alert.forecast is not None
    # Early enough: after one full window (a tenth of the day) of data, well before 70 %.
    assert 0.1 * DAY <= when - start <= 0.15 * DAY
    assert alert.forecast.projected_percent == pytest.approx(100 / 0.7, rel=0.02)
    lead = alert.forecast.time_to_exhaustion
    assert lead is not None
    assert lead == pytest.approx(start + 0.7 * DAY - when, rel=0.03)
    # The pace in USD per second; the notification says it is the cost limit's.
    assert alert.forecast.burn_rate == pytest.approx(pace / 1e6, rel=0.03)
    details = alert_details(alert)
    assert details["burn_rate_usd_per_second"] == alert.forecast.burn_rate
    assert "burn_rate_tokens_per_second" not in details
    assert (details["kind"], details["limit_kind"]) == ("forecast", "cost")
    assert alert_labels(alert, 100.0)["limit_kind"] == "cost"
    assert "LLM quota key cost on pace to use 143% of the budget" in summary(alert)
    assert "of 0.07 USD used" in summary(alert)
    assert alert.quota.cost_alert_threshold is None  # about the pace, not a threshold


async def test_a_cost_burst_then_silence_does_not_alert(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    day_clock.advance(5)
    manager.record_usage("key", provider="acme", model="m", input_tokens=BUDGET_MICROUSD // 2)
    assert forecasts(await manager.check_quotas()) == []
    assert await run(manager, day_clock, DAY - STEP, 0.0) == []


async def test_a_cost_pace_that_slows_resolves_and_does_not_fire_again(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    pace = BUDGET_MICROUSD / (0.7 * DAY)
    found = await run(manager, day_clock, 0.15 * DAY, pace)
    assert [a.state for _, a in found] == [AlertState.FIRING]
    fired = found[0][1]
    found = await run(manager, day_clock, 0.2 * DAY, pace / 10)
    assert [(a.state, a.reason, a.limit_kind) for _, a in found] == [
        (AlertState.RESOLVED, AlertReason.FORECAST, "cost")
    ]
    resolved = found[0][1]
    assert resolved.forecast is not None
    assert resolved.forecast.projected_percent < 90
    assert resolved.fingerprint == fired.fingerprint
    assert await run(manager, day_clock, 0.2 * DAY, pace) == []  # once per period


async def test_cost_time_to_exhaustion_in_the_status(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    [status] = await manager.get_all_quota_statuses()
    assert status["cost_time_to_exhaustion"] is None  # no cost yet, no rate
    assert status["time_to_exhaustion"] is None  # no token limit
    await run(manager, day_clock, 0.2 * DAY, 0.5)  # 0.5 micro-USD/s
    [status] = await manager.get_all_quota_statuses()
    spent = status["cost_microusd"]
    assert status["cost_time_to_exhaustion"] == pytest.approx(
        (BUDGET_MICROUSD - spent) / 0.5, rel=0.02
    )
    manager.record_usage("key", provider="acme", model="m", input_tokens=BUDGET_MICROUSD)
    [status] = await manager.get_all_quota_statuses()
    assert status["cost_time_to_exhaustion"] == 0.0


async def test_token_and_cost_forecasts_of_one_config_are_independent(
    day_clock: FakeClock,
) -> None:
    manager = priced_manager(day_clock)
    # The tokens on pace to exhaust at 70 % of the day, the cost only at 140 %: one forecast.
    manager.set_quota_limit_sync(
        "key", BUDGET_MICROUSD, period="day", cost_limit_usd=2 * BUDGET_MICROUSD / 1e6
    )
    pace = BUDGET_MICROUSD / (0.7 * DAY)
    found = await run(manager, day_clock, 0.3 * DAY, pace)
    assert [a.limit_kind for _, a in found] == ["tokens"]
    # Now the cost limit is lowered to the token limit's: the cost forecast fires on its own.
    manager.set_quota_limit_sync(
        "key", BUDGET_MICROUSD, period="day", cost_limit_usd=BUDGET_MICROUSD / 1e6
    )
    found += await run(manager, day_clock, 0.1 * DAY, pace)
    assert [(a.state, a.limit_kind) for _, a in found] == [
        (AlertState.FIRING, "tokens"),
        (AlertState.FIRING, "cost"),
    ]
    tokens, cost = (a for _, a in found)
    assert tokens.period_start == cost.period_start
    assert tokens.fingerprint != cost.fingerprint
    manager.close()


async def test_a_fleet_sends_one_cost_forecast(day_clock: FakeClock) -> None:
    store = MemoryStore()
    managers = [priced_manager(day_clock, store=store, flush_interval_seconds=60) for _ in range(2)]
    managers[0].set_quota_limit_sync(
        "key", None, period="day", cost_limit_usd=BUDGET_MICROUSD / 1e6
    )
    pace = BUDGET_MICROUSD / (0.7 * DAY)
    sent: list[Alert] = []
    for _ in range(int(0.15 * DAY / STEP)):
        day_clock.advance(STEP)
        for m in managers:
            m.record_usage("key", provider="acme", model="m", input_tokens=round(pace * STEP / 2))
            assert await m.aflush()
        for m in managers:
            sent += forecasts(await m.check_quotas())
    assert [(a.state, a.reason, a.limit_kind) for a in sent] == [
        (AlertState.FIRING, AlertReason.FORECAST, "cost")
    ]
    for m in managers:
        await m.aclose()


async def test_a_replica_that_synced_the_fired_cost_forecast_does_not_send_it_again(
    day_clock: FakeClock,
) -> None:
    store = MemoryStore()
    first, second = (
        priced_manager(day_clock, store=store, flush_interval_seconds=60) for _ in range(2)
    )
    first.set_quota_limit_sync("key", None, period="day", cost_limit_usd=BUDGET_MICROUSD / 1e6)
    pace = BUDGET_MICROUSD / (0.7 * DAY)
    sent: list[Alert] = []
    for _ in range(int(0.15 * DAY / STEP)):  # only the first replica's monitor looks
        day_clock.advance(STEP)
        first.record_usage("key", provider="acme", model="m", input_tokens=round(pace * STEP))
        assert await first.aflush()
        sent += forecasts(await first.check_quotas())
        assert await second.aflush()  # the second syncs the counts and the alert record
    assert [a.limit_kind for a in sent] == ["cost"]
    for _ in range(60):  # then the second's, with data enough: the record says it was told
        day_clock.advance(STEP)
        assert await second.aflush()
        sent += forecasts(await second.check_quotas())
    assert [a.limit_kind for a in sent] == ["cost"]
    for m in (first, second):
        await m.aclose()


async def test_a_cost_forecast_on_pace_at_the_reset_resolves_with_the_period(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    pace = BUDGET_MICROUSD / (0.7 * DAY)
    found = await run(manager, day_clock, 0.5 * DAY, pace)
    assert [a.state for _, a in found] == [AlertState.FIRING]
    day_clock.advance(0.5 * DAY)  # the next day: a new period
    ended = forecasts(await manager.check_quotas())
    assert [(a.state, a.reason, a.limit_kind) for a in ended] == [
        (AlertState.RESOLVED, AlertReason.PERIOD_RESET, "cost")
    ]
    assert ended[0].fingerprint == found[0][1].fingerprint


async def test_the_cost_time_to_exhaustion_metric_matches_the_status(day_clock: FakeClock) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = LLMProviderManager(clock=day_clock, meter_provider=provider)
    try:
        manager.set_prices(PRICES)
        manager.set_quota_limit_sync(
            "key", None, period="day", cost_limit_usd=BUDGET_MICROUSD / 1e6
        )
        manager.set_quota_limit_sync("tokens-only", 1000, period="day")
        await run(manager, day_clock, 0.2 * DAY, 0.5)
        data = reader.get_metrics_data()
        assert data is not None
        found = {
            point.attributes["llm.quota.config_id"]: point.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "llm.quota.cost.time_to_exhaustion"
            for point in metric.data.data_points
        }
        [status] = [s for s in await manager.get_all_quota_statuses() if s["config_id"] == "key"]
        assert found == {"key": pytest.approx(status["cost_time_to_exhaustion"])}
        assert status["cost_time_to_exhaustion"] > 0
    finally:
        manager.close()
        provider.shutdown()
