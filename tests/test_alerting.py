"""The alert state machine, driven by a fake clock through ``check_quotas`` (no sleeping)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from otel_llm_quota import AlertReason, AlertState, LLMProviderManager, SpanRef, _alerting
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

HOUR = timedelta(hours=1)


async def test_crossing_alerts_once_then_repeats_after_cooldown(
    manager: LLMProviderManager, recorder: RecordingAlertHandler, clock: FakeClock
) -> None:
    await manager.set_quota_limit("c", 1000, alert_threshold_percent=80.0)
    manager.record_usage("c", provider="openai", input_tokens=799)
    assert await manager.check_quotas() == []
    manager.record_usage("c", output_tokens=1)
    [alert] = await manager.check_quotas()
    assert (alert.state, alert.reason, alert.threshold_percent) == (
        AlertState.FIRING,
        AlertReason.THRESHOLD_CROSSED,
        80.0,
    )
    assert alert.quota.total_tokens == 800
    assert alert.quota.alert_triggered
    assert alert.started_at == clock.datetime
    assert alert.provider == "openai"
    assert recorder.alerts == [alert]

    clock.advance(HOUR - timedelta(seconds=1))
    manager.record_usage("c", input_tokens=10)
    assert await manager.check_quotas() == []  # inside the cooldown
    clock.advance(timedelta(seconds=1))
    [repeat] = await manager.check_quotas()
    assert repeat.reason is AlertReason.REPEAT
    assert repeat.started_at == alert.started_at
    assert repeat.fingerprint == alert.fingerprint

    status = await manager.get_quota_status("c")
    assert status is not None
    assert status["alert_triggered"] is True
    assert status["last_alert_sent"] == clock.datetime.isoformat()


async def test_a_higher_threshold_alerts_at_once_even_within_cooldown(
    manager: LLMProviderManager, clock: FakeClock
) -> None:
    await manager.set_quota_limit("c", 1000, thresholds=(50, 80, 95, 100))
    manager.record_usage("c", input_tokens=500)
    [first] = await manager.check_quotas()
    clock.advance(timedelta(minutes=1))
    manager.record_usage("c", input_tokens=300)
    [second] = await manager.check_quotas()
    assert (first.threshold_percent, second.threshold_percent) == (50.0, 80.0)
    assert second.reason is AlertReason.THRESHOLD_CROSSED
    assert second.thresholds == (50.0, 80.0)
    assert first.fingerprint != second.fingerprint


async def test_jumping_over_thresholds_sends_one_alert_for_the_highest(
    manager: LLMProviderManager, clock: FakeClock
) -> None:
    await manager.set_quota_limit("c", 1000, thresholds=(50, 80, 95, 100))
    manager.record_usage("c", input_tokens=1200)
    [alert] = await manager.check_quotas()
    assert alert.threshold_percent == 100.0
    assert alert.thresholds == (50.0, 80.0, 95.0, 100.0)
    assert alert.quota.usage_percent == 120.0
    assert alert.quota.quota_remaining == 0
    clock.advance(HOUR)
    [repeat] = await manager.check_quotas()  # only the highest repeats
    assert repeat.threshold_percent == 100.0
    assert repeat.reason is AlertReason.REPEAT


async def test_period_reset_resolves_and_rearms(
    manager: LLMProviderManager, recorder: RecordingAlertHandler, clock: FakeClock
) -> None:
    await manager.set_quota_limit("c", 1000, thresholds=(50, 90), period="day")
    manager.record_usage("c", input_tokens=950)
    [firing] = await manager.check_quotas()
    clock.set(datetime(2026, 3, 15, tzinfo=timezone.utc))
    [resolved] = await manager.check_quotas()
    assert (resolved.state, resolved.reason) == (AlertState.RESOLVED, AlertReason.PERIOD_RESET)
    assert resolved.thresholds == (50.0, 90.0)
    assert resolved.threshold_percent == 90.0
    assert resolved.fingerprint == firing.fingerprint  # same alert: same period and threshold
    assert resolved.ended_at == clock.datetime
    assert resolved.started_at == firing.started_at
    assert resolved.quota.alert_state is AlertState.RESOLVED
    assert resolved.quota.total_tokens == 0
    info = await manager.get_quota_usage("c")
    assert info is not None
    assert info.alert_state is None
    assert not info.alert_triggered

    # The new day alerts again from scratch, under a new fingerprint.
    manager.record_usage("c", input_tokens=500)
    [again] = await manager.check_quotas()
    assert again.reason is AlertReason.THRESHOLD_CROSSED
    assert again.threshold_percent == 50.0
    assert again.fingerprint != firing.fingerprint
    assert [a.state for a in recorder.alerts] == [
        AlertState.FIRING,
        AlertState.RESOLVED,
        AlertState.FIRING,
    ]


async def test_usage_reset_resolves(manager: LLMProviderManager) -> None:
    await manager.set_quota_limit("c", 100)
    manager.record_usage("c", input_tokens=90)
    await manager.check_quotas()
    await manager.reset_quota_cache("c")
    [resolved] = await manager.check_quotas()
    assert resolved.reason is AlertReason.PERIOD_RESET


async def test_raised_limit_resolves_what_usage_is_now_below(
    manager: LLMProviderManager, clock: FakeClock
) -> None:
    await manager.set_quota_limit("c", 1000, thresholds=(50, 80, 95))
    manager.record_usage("c", input_tokens=960)
    [firing] = await manager.check_quotas()
    assert firing.threshold_percent == 95.0
    await manager.set_quota_limit("c", 1500, thresholds=(50, 80, 95))  # 64%
    [resolved] = await manager.check_quotas()
    assert (resolved.state, resolved.reason) == (AlertState.RESOLVED, AlertReason.LIMIT_CHANGED)
    assert resolved.thresholds == (80.0, 95.0)
    info = await manager.get_quota_usage("c")
    assert info is not None
    assert info.alert_threshold == 50.0
    assert info.alert_triggered

    # Lowering the limit again within the cooldown does not notify 95% (or 80%) a second time;
    # they are held, and the status agrees with what the handlers were told: 50% fires.
    clock.advance(timedelta(minutes=5))
    await manager.set_quota_limit("c", 1000, thresholds=(50, 80, 95))
    assert await manager.check_quotas() == []
    info = await manager.get_quota_usage("c")
    assert info is not None
    assert info.alert_threshold == 50.0
    # Once the cooldown since 95%'s notification has passed, it fires again, as a new crossing.
    clock.advance(HOUR - timedelta(minutes=5))
    [again] = await manager.check_quotas()
    assert (again.state, again.reason) == (AlertState.FIRING, AlertReason.THRESHOLD_CROSSED)
    assert again.threshold_percent == 95.0
    assert again.thresholds == (50.0, 80.0, 95.0)
    # Raised again: one resolution for what was notified, not one more.
    await manager.set_quota_limit("c", 1500, thresholds=(50, 80, 95))
    [resolved_again] = await manager.check_quotas()
    assert resolved_again.thresholds == (80.0, 95.0)
    assert await manager.check_quotas() == []


async def test_held_thresholds_drop_silently_and_never_wake_the_monitor_in_a_loop(
    manager: LLMProviderManager, clock: FakeClock
) -> None:
    wakes: list[int] = []
    await manager.set_quota_limit("c", 1000, thresholds=(50, 80))
    manager.record_usage("c", input_tokens=850)
    [_] = await manager.check_quotas()
    await manager.set_quota_limit("c", 2000, thresholds=(50, 80))  # 42.5%: all resolved
    [resolved] = await manager.check_quotas()
    assert resolved.thresholds == (50.0, 80.0)
    await manager.set_quota_limit("c", 1000, thresholds=(50, 80))  # crossed again: held
    assert await manager.check_quotas() == []
    manager.ledger.set_wakeup(lambda: wakes.append(1))
    manager.record_usage("c", input_tokens=10)  # held thresholds are not crossings to wake for
    assert wakes == []
    await manager.set_quota_limit("c", 2000, thresholds=(50, 80))  # below again, still held
    assert await manager.check_quotas() == []  # nothing was notified, so nothing resolves
    info = await manager.get_quota_usage("c")
    assert info is not None
    assert not info.alert_triggered


async def test_a_threshold_added_below_a_firing_one_is_notified_about_itself(
    manager: LLMProviderManager,
) -> None:
    await manager.set_quota_limit("c", 1000, thresholds=(95,))
    manager.record_usage("c", input_tokens=960)
    [first] = await manager.check_quotas()
    await manager.set_quota_limit("c", 1000, thresholds=(50, 95))
    [second] = await manager.check_quotas()
    assert (first.threshold_percent, second.threshold_percent) == (95.0, 50.0)
    assert second.thresholds == (50.0, 95.0)
    assert second.quota.alert_threshold == 50.0


async def test_resolved_notifications_can_be_turned_off(clock: FakeClock) -> None:
    recorder = RecordingAlertHandler()
    async with LLMProviderManager(clock=clock, send_resolved=False) as manager:
        manager.add_alert_handler(recorder)
        await manager.set_quota_limit("c", 100, period="hour")
        manager.record_usage("c", input_tokens=100)
        await manager.check_quotas()
        clock.advance(HOUR)
        assert await manager.check_quotas() == []
        info = await manager.get_quota_usage("c")
        assert info is not None
        assert not info.alert_triggered
    assert [a.state for a in recorder.alerts] == [AlertState.FIRING]


async def test_configs_without_limit_never_alert(manager: LLMProviderManager) -> None:
    manager.record_usage("c", input_tokens=10**9)
    assert await manager.check_quotas() == []


async def test_the_span_that_crossed_is_attached(manager: LLMProviderManager) -> None:
    await manager.set_quota_limit("c", 100)
    manager.record_usage("c", input_tokens=50, span=SpanRef(trace_id=1, span_id=1))
    manager.record_usage("c", input_tokens=40, span=SpanRef(trace_id=7, span_id=9))
    manager.record_usage("c", input_tokens=1, span=SpanRef(trace_id=8, span_id=8))
    [alert] = await manager.check_quotas()
    assert alert.span == SpanRef(trace_id=7, span_id=9)


async def test_thresholds_with_fractions_cross_exactly(manager: LLMProviderManager) -> None:
    await manager.set_quota_limit("c", 3, thresholds=(33.4,))  # 1.002 tokens -> the 2nd token
    manager.record_usage("c", input_tokens=1)
    assert await manager.check_quotas() == []
    manager.record_usage("c", input_tokens=1)
    assert len(await manager.check_quotas()) == 1


async def test_many_configs_are_independent(manager: LLMProviderManager) -> None:
    for i in range(50):
        await manager.set_quota_limit(f"c{i}", 100)
        manager.record_usage(f"c{i}", input_tokens=80 if i % 2 else 10)
    alerts = await manager.check_quotas()
    assert sorted(a.config_id for a in alerts) == sorted(f"c{i}" for i in range(1, 50, 2))


async def test_one_configs_failure_does_not_cost_the_others_their_alerts(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = _alerting.evaluate

    def evaluate(state, now, cooldown, send_resolved):  # type: ignore[no-untyped-def]
        if state.config_id == "c01":
            raise OverflowError("bad data in one config")
        return real(state, now, cooldown, send_resolved)

    monkeypatch.setattr(_alerting, "evaluate", evaluate)
    recorder = RecordingAlertHandler()
    async with LLMProviderManager(clock=clock) as manager:
        manager.add_alert_handler(recorder)
        for name in ("c00", "c01", "c02"):
            await manager.set_quota_limit(name, 100)
            manager.record_usage(name, input_tokens=100)
        with caplog.at_level(logging.ERROR, logger="otel_llm_quota"):
            await manager.check_quotas()
    assert [a.config_id for a in recorder.alerts] == ["c00", "c02"]
    assert "'c01'" in caplog.text
