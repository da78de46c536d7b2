"""Forecast alerts: the burn rate over a sliding window, the projection at the reset, one
``forecast`` notification per period when it crosses 100 % early enough, resolved when the pace
falls back; ``time_to_exhaustion`` in the status. Every test moves a fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_llm_quota import (
    Alert,
    AlertReason,
    AlertState,
    ConfigError,
    LLMProviderManager,
    load_config,
)
from otel_llm_quota._alerting import evaluate_ledger
from otel_llm_quota._claims import encode
from otel_llm_quota._forecast import ForecastSettings, add_sample, burn_rate
from otel_llm_quota.cli._status import seconds_to_exhaustion
from otel_llm_quota.handlers._payload import alert_details, alert_labels, is_critical, summary
from otel_llm_quota.handlers._slack import slack_message
from otel_llm_quota.stores import MemoryStore
from otel_llm_quota.testing import FakeClock

DAY = 86_400.0
LIMIT = 70_000
STEP = 60.0  # one monitor pass a minute


@pytest.fixture
def day_clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 15, 0, 0, tzinfo=timezone.utc))  # a period's start


@pytest.fixture
def manager(day_clock: FakeClock) -> Iterator[LLMProviderManager]:
    made = LLMProviderManager(clock=day_clock, metrics=False, send_resolved=True)
    made.set_quota_limit_sync("key", LIMIT, thresholds=(80, 100), period="day")
    yield made
    made.close()


def forecasts(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.forecast is not None]


async def run(
    manager: LLMProviderManager,
    clock: FakeClock,
    seconds: float,
    tokens_per_second: float,
    **usage: str,
) -> list[tuple[float, Alert]]:
    """Usage at a steady pace, one pass a minute; the forecast notifications with their time.
    ``usage``: more arguments of ``record_usage`` (``provider`` and ``model``, to price it)."""
    out: list[tuple[float, Alert]] = []
    carry = 0.0
    for _ in range(int(seconds / STEP)):
        clock.advance(STEP)
        carry += tokens_per_second * STEP
        if carry >= 1:
            manager.record_usage("key", input_tokens=int(carry), **usage)
            carry -= int(carry)
        out += [(clock(), a) for a in forecasts(await manager.check_quotas())]
    return out


async def test_a_steady_pace_that_exhausts_at_70_percent_alerts_once_early(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    start = day_clock()
    pace = LIMIT / (0.7 * DAY)
    found = await run(manager, day_clock, DAY - STEP, pace)
    firing = [(t, a) for t, a in found if a.state is AlertState.FIRING]
    assert len(firing) == 1
    when, alert = firing[0]
    assert alert.reason is AlertReason.FORECAST
    assert alert.forecast is not None
    # Early enough: after one full window (a tenth of the day) of data, well before 70 %.
    assert 0.1 * DAY <= when - start <= 0.15 * DAY
    assert alert.forecast.projected_percent == pytest.approx(100 / 0.7, rel=0.02)
    lead = alert.forecast.time_to_exhaustion
    assert lead is not None
    assert lead == pytest.approx(start + 0.7 * DAY - when, rel=0.03)
    assert "on pace to use 143% of the budget before it resets on 2026-03-16T00:00:00" in (
        summary(alert)
    )
    assert alert_details(alert)["kind"] == "forecast"
    assert alert_labels(alert, 100.0)["kind"] == "forecast"
    # Not the same alert as a 100 % threshold's of the same period.
    assert alert.fingerprint != replace(alert, forecast=None).fingerprint
    # Still on pace at the end: nothing resolved within the period.
    assert [a.state for _, a in found] == [AlertState.FIRING]


async def test_a_burst_then_silence_does_not_alert(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    day_clock.advance(5)
    manager.record_usage("key", input_tokens=LIMIT // 2)  # half the budget at once
    assert forecasts(await manager.check_quotas()) == []
    assert await run(manager, day_clock, DAY - STEP, 0.0) == []


async def test_a_pace_that_slows_resolves_and_does_not_fire_again(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    pace = LIMIT / (0.7 * DAY)
    found = await run(manager, day_clock, 0.15 * DAY, pace)
    assert [a.state for _, a in found] == [AlertState.FIRING]
    fired = found[0][1]
    found = await run(manager, day_clock, 0.2 * DAY, pace / 10)
    assert [(a.state, a.reason) for _, a in found] == [(AlertState.RESOLVED, AlertReason.FORECAST)]
    resolved = found[0][1]
    assert resolved.forecast is not None
    assert resolved.forecast.projected_percent < 90
    assert resolved.fingerprint == fired.fingerprint
    # The pace picks up again: once per period, so no second forecast in this one.
    assert await run(manager, day_clock, 0.2 * DAY, pace) == []


async def test_time_to_exhaustion_in_the_status(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    [status] = await manager.get_all_quota_statuses()
    assert status["time_to_exhaustion"] is None  # no usage, no rate
    await run(manager, day_clock, 0.2 * DAY, 0.5)  # 0.5 token/s
    [status] = await manager.get_all_quota_statuses()
    used = status["total_tokens"]
    assert status["time_to_exhaustion"] == pytest.approx((LIMIT - used) / 0.5, rel=0.02)
    manager.record_usage("key", input_tokens=LIMIT)
    [status] = await manager.get_all_quota_statuses()
    assert status["time_to_exhaustion"] == 0.0


async def test_a_fleet_sends_one_forecast(day_clock: FakeClock) -> None:
    store = MemoryStore()
    managers = [
        LLMProviderManager(clock=day_clock, store=store, metrics=False, flush_interval_seconds=60)
        for _ in range(2)
    ]
    managers[0].set_quota_limit_sync("key", LIMIT, period="day")
    pace = LIMIT / (0.7 * DAY)
    sent: list[Alert] = []
    for _ in range(int(0.15 * DAY / STEP)):
        day_clock.advance(STEP)
        for m in managers:
            m.record_usage("key", input_tokens=round(pace * STEP / 2))
            assert await m.aflush()
        for m in managers:
            sent += forecasts(await m.check_quotas())
    assert [(a.state, a.reason) for a in sent] == [(AlertState.FIRING, AlertReason.FORECAST)]
    for m in managers:
        await m.aclose()


def test_the_estimator_takes_the_slower_half_of_the_window() -> None:
    samples: list[tuple[float, int]] = [(0.0, 0)]
    for t in range(100, 1001, 100):
        add_sample(samples, float(t), t * 2, 1000.0)
    assert burn_rate(samples, 0.0, 1000.0, 2000, 1000.0) == pytest.approx(2.0)
    # A burst in the first half only: the second half's (zero) rate wins.
    burst = [(0.0, 0), (100.0, 5000), (600.0, 5000)]
    assert burn_rate(burst, 0.0, 1000.0, 5000, 1000.0) == 0.0
    # No samples: the period's average rate.
    assert burn_rate(None, 0.0, 100.0, 50, 1000.0) == pytest.approx(0.5)


def test_time_to_exhaustion_metric(clock: FakeClock) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = LLMProviderManager(clock=clock, meter_provider=provider)
    try:
        # 15:09:26 UTC: 54,566 s into the day; that many tokens is 1 token/s on average.
        manager.set_quota_limit_sync("daily", 100_000, period="day")
        manager.set_quota_limit_sync("idle", 100, period="day")
        manager.record_usage("daily", input_tokens=54_566)
        data = reader.get_metrics_data()
        assert data is not None
        found = {
            point.attributes["llm.quota.config_id"]: point.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "llm.quota.time_to_exhaustion"
            for point in metric.data.data_points
        }
        assert found == {"daily": pytest.approx(100_000 - 54_566)}
    finally:
        manager.close()
        provider.shutdown()


def test_the_cli_status_uses_the_same_estimator(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock, metrics=False)
    try:
        manager.set_quota_limit_sync("daily", 100_000, period="day")
        manager.record_usage("daily", input_tokens=20_000)
        info = manager.ledger.get("daily")
        assert info is not None
        assert info.time_to_exhaustion is not None
        assert seconds_to_exhaustion(info, clock()) == pytest.approx(info.time_to_exhaustion)
    finally:
        manager.close()


def test_forecast_knobs_from_the_config_file_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = load_config(
        {"monitor": {"forecast_window_seconds": 600, "forecast_min_samples": 6}},
        environment=False,
    )
    try:
        assert setup.manager.ledger.forecast_window_seconds == 600
    finally:
        setup.manager.close()
    with pytest.raises(ConfigError, match="monitor: forecast_min_samples must be > 0"):
        load_config({"monitor": {"forecast_min_samples": 0}}, environment=False)
    monkeypatch.setenv("OTEL_LLM_QUOTA_FORECAST_WINDOW_SECONDS", "120")
    manager = LLMProviderManager(metrics=False)
    try:
        assert manager.ledger.forecast_window_seconds == 120
    finally:
        manager.close()


async def test_a_plain_callable_handler_is_told_no_threshold(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    calls: list[tuple[str, float | None, AlertState | None]] = []
    manager.add_alert_handler(lambda cid, q: calls.append((cid, q.alert_threshold, q.alert_state)))
    await run(manager, day_clock, 0.15 * DAY, LIMIT / (0.7 * DAY))
    assert calls == [("key", None, AlertState.FIRING)]


async def test_a_forecast_whose_claimer_died_is_delivered_by_another(
    day_clock: FakeClock,
) -> None:
    store = MemoryStore()
    a, b = (
        LLMProviderManager(clock=day_clock, store=store, metrics=False, flush_interval_seconds=60)
        for _ in range(2)
    )
    try:
        a.set_quota_limit_sync("key", LIMIT, period="day")
        fleet_a = a._fleet
        assert fleet_a is not None
        settings = ForecastSettings()
        won: list[Alert] = []
        pace = LIMIT / (0.7 * DAY)
        # A evaluates and claims, but "dies" before delivering: no handler is called.
        while not won and day_clock() < datetime(2026, 3, 16, tzinfo=timezone.utc).timestamp():
            day_clock.advance(STEP)
            a.record_usage("key", input_tokens=round(pace * STEP))
            assert await a.aflush()
            result = evaluate_ledger(
                a.ledger, day_clock(), 3600.0, True, encoder=encode, forecast=settings
            )
            won = [x for _, found, _ in await fleet_a.claim(result.changes) for x in found]
        assert [x.reason for x in won] == [AlertReason.FORECAST]
        assert await b.aflush()
        assert forecasts(await b.check_quotas()) == []  # A's lease still runs
        day_clock.advance(fleet_a.lease_seconds + 1)
        assert await b.aflush()
        found = await b.check_quotas()
        assert [(x.state, x.reason) for x in found] == [(AlertState.FIRING, AlertReason.FORECAST)]
        assert found[0].forecast is not None
        assert found[0].forecast.projected_percent == pytest.approx(
            won[0].forecast.projected_percent  # type: ignore[union-attr]
        )
        assert found[0].fingerprint == won[0].fingerprint
        assert await b.aflush()
        assert forecasts(await b.check_quotas()) == []  # once
    finally:
        await a.aclose()
        await b.aclose()


async def test_handlers_say_forecast_not_crossed(
    manager: LLMProviderManager, day_clock: FakeClock
) -> None:
    found = await run(manager, day_clock, 0.15 * DAY, LIMIT / (0.7 * DAY))
    [(_, alert)] = found
    assert not is_critical(alert)
    message = json.dumps(slack_message(alert))
    assert "on pace to use 143% of the budget" in message
    assert "crossed" not in message
