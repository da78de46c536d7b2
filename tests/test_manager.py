"""The seed API end to end, handler dispatch, the monitor task and thread, lifecycle, settings."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from otel_llm_quota import Alert, AlertState, LLMProviderManager, QuotaInfo
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler


async def test_seed_api_round_trip() -> None:
    seen: list[tuple[str, float]] = []

    async def quota_alert_handler(config_id: str, quota: QuotaInfo) -> None:
        assert quota.quota_limit is not None
        seen.append((config_id, (quota.total_tokens / quota.quota_limit) * 100))

    recorder = RecordingAlertHandler()
    async with LLMProviderManager() as manager:
        manager.add_alert_handler(quota_alert_handler)
        manager.add_alert_handler(recorder)
        await manager.set_quota_limit(
            config_id="openai-prod", quota_limit=100000, alert_threshold_percent=80.0
        )
        await manager.start_monitoring(interval=3600)
        assert manager.monitoring
        await manager.update_quota_usage(
            config_id="openai-prod", provider="openai", tokens_used=1500, success=True
        )
        status = await manager.get_quota_status("openai-prod")
        assert status is not None
        assert (status["total_tokens"], status["total_requests"]) == (1500, 1)
        assert status["provider"] == "openai"
        assert status["usage_percent"] == 1.5
        # Crossing wakes the monitor at once: the interval is an hour.
        await manager.update_quota_usage("openai-prod", "openai", tokens_used=80000)
        await recorder.wait_for(1)
        assert seen == [("openai-prod", 81.5)]
        all_statuses = await manager.get_all_quota_statuses()
        assert [s["config_id"] for s in all_statuses] == ["openai-prod"]
        quota = await manager.get_quota_usage("openai-prod")
        assert quota is not None
        assert quota.alert_triggered
        await manager.reset_quota_cache("openai-prod")
        await recorder.wait_for(2)
        assert recorder.alerts[1].state is AlertState.RESOLVED
        manager.remove_alert_handler(quota_alert_handler)
        assert manager.alert_handlers == (recorder,)
        await manager.stop_monitoring()
        assert not manager.monitoring
        assert await manager.get_quota_status("unknown") is None


async def test_update_quota_usage_creates_unknown_configs_and_validates(
    manager: LLMProviderManager,
) -> None:
    await manager.update_quota_usage("new", "anthropic", tokens_used=10, success=False)
    await manager.update_quota_usage("new", input_tokens=3, output_tokens=4)
    info = await manager.get_quota_usage("new")
    assert info is not None
    assert (info.failed_requests, info.successful_requests, info.total_tokens) == (1, 1, 17)
    with pytest.raises(ValueError, match="tokens_used"):
        await manager.update_quota_usage("new", tokens_used=-1)
    with pytest.raises(TypeError, match="tokens_used"):
        await manager.update_quota_usage("new", tokens_used=1.5)  # type: ignore[arg-type]
    assert await manager.get_quota_usage("new") == info


async def test_set_quota_limit_merges_thresholds_and_validates(
    manager: LLMProviderManager,
) -> None:
    info = await manager.set_quota_limit("c", 1000, 80.0, thresholds=(50, 95))
    assert info.thresholds == (50.0, 80.0, 95.0)
    info = await manager.set_quota_limit("d", 1000)
    assert info.thresholds == (80.0,)
    for bad in (0, 100.5, -1, 150):
        with pytest.raises(ValueError, match="alert_threshold_percent"):
            await manager.set_quota_limit("c", 1000, alert_threshold_percent=bad)
    with pytest.raises(ValueError, match="thresholds"):
        await manager.set_quota_limit("c", 1000, thresholds=(50, 150))
    assert (await manager.get_quota_usage("c")) is not None
    assert (await manager.get_quota_usage("c")).thresholds == (50.0, 80.0, 95.0)  # type: ignore[union-attr]


async def test_handler_shapes_sync_async_objects(
    manager: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    calls: list[str] = []
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def sync_handler(config_id: str, quota: QuotaInfo) -> None:
        threads.append(threading.get_ident())
        calls.append(f"sync:{config_id}:{quota.alert_threshold}")

    async def async_handler(config_id: str, quota: QuotaInfo) -> None:
        calls.append(f"async:{config_id}")

    class AsyncObject:
        async def handle_alert(self, alert: Alert) -> None:
            calls.append(f"object:{alert.threshold_percent}")

    class AsyncCallable:
        async def __call__(self, config_id: str, quota: QuotaInfo) -> None:
            calls.append("callable")

    for handler in (sync_handler, async_handler, AsyncObject(), AsyncCallable()):
        manager.add_alert_handler(handler)
    manager.add_alert_handler(sync_handler)  # twice registers once
    await manager.set_quota_limit("c", 10)
    manager.record_usage("c", input_tokens=10)
    await manager.check_quotas()
    assert sorted(calls) == ["async:c", "callable", "object:80.0", "sync:c:80.0"]
    assert threads
    assert threads[0] != loop_thread
    assert len(recorder.alerts) == 1


async def test_bad_handlers_are_refused(manager: LLMProviderManager) -> None:
    with pytest.raises(TypeError, match="handler"):
        manager.add_alert_handler(42)  # type: ignore[arg-type]


async def test_failing_and_hanging_handlers_are_isolated(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = RecordingAlertHandler()
    never = asyncio.Event()

    async def hangs(config_id: str, quota: QuotaInfo) -> None:
        await never.wait()

    def raises(config_id: str, quota: QuotaInfo) -> None:
        raise RuntimeError("smtp is down")

    async with LLMProviderManager(clock=clock, handler_timeout_seconds=0.05) as manager:
        for handler in (hangs, raises, recorder):
            manager.add_alert_handler(handler)
        await manager.set_quota_limit("c", 10)
        manager.record_usage("c", input_tokens=10)
        with caplog.at_level(logging.WARNING, logger="otel_llm_quota"):
            await manager.check_quotas()
        assert len(recorder.alerts) == 1
        assert manager.handler_failures == {
            "test_failing_and_hanging_handlers_are_isolated.<locals>.hangs": 1,
            "test_failing_and_hanging_handlers_are_isolated.<locals>.raises": 1,
        }
        assert list(manager.handler_timeouts.values()) == [1]
        assert "timed out" in caplog.text
        assert "smtp is down" in caplog.text
        # The monitor carries on: the next alert reaches the healthy handler again.
        clock.advance(3600)
        await manager.check_quotas()
        assert len(recorder.alerts) == 2
        assert manager.alerts_sent == {("c", 80.0, "firing"): 2}


async def test_monitor_survives_a_handler_fault_and_wakes_from_other_threads(
    recorder: RecordingAlertHandler,
) -> None:
    def raises(config_id: str, quota: QuotaInfo) -> None:
        raise RuntimeError("boom")

    async with LLMProviderManager() as manager:
        manager.add_alert_handler(raises)
        manager.add_alert_handler(recorder)
        for name in ("a", "b"):
            await manager.set_quota_limit(name, 100)
        await manager.start_monitoring(interval=3600)
        await manager.start_monitoring(interval=3600)  # twice is harmless
        worker = threading.Thread(
            target=manager.record_usage, args=("a",), kwargs={"input_tokens": 100}
        )
        worker.start()
        worker.join()
        await recorder.wait_for(1)
        worker = threading.Thread(
            target=manager.record_usage, args=("b",), kwargs={"input_tokens": 100}
        )
        worker.start()
        worker.join()
        await recorder.wait_for(2)
        assert [a.config_id for a in recorder.alerts] == ["a", "b"]
        assert manager.monitoring
    assert not manager.monitoring


async def test_monitor_thread_for_apps_without_a_loop(recorder: RecordingAlertHandler) -> None:
    manager = LLMProviderManager()
    manager.add_alert_handler(recorder)
    manager.set_quota_limit_sync("c", 100)
    manager.start_monitoring_thread(interval=3600)
    manager.start_monitoring_thread(interval=3600)  # harmless
    try:
        assert manager.monitoring
        names = {t.name for t in threading.enumerate()}
        assert "otel-llm-quota-monitor" in names
        done = threading.Event()
        original = recorder.handle_alert

        def handle(alert: Alert) -> None:
            original(alert)
            done.set()

        recorder.handle_alert = handle  # type: ignore[method-assign]
        manager.record_usage("c", input_tokens=95)
        assert done.wait(10)
        assert recorder.alerts[0].threshold_percent == 80.0
        with pytest.raises(RuntimeError, match="thread"):
            await manager.start_monitoring()
    finally:
        manager.close()
    assert not manager.monitoring
    assert "otel-llm-quota-monitor" not in {t.name for t in threading.enumerate()}
    manager.close()  # idempotent


async def test_closed_manager_refuses_to_monitor() -> None:
    manager = LLMProviderManager()
    await manager.aclose()
    await manager.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await manager.start_monitoring(interval=1)


async def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="cooldown_seconds"):
        LLMProviderManager(cooldown_seconds=0)
    with pytest.raises(TypeError, match="handler_timeout_seconds"):
        LLMProviderManager(handler_timeout_seconds="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        LLMProviderManager(timezone="Atlantis/Capital")
    manager = LLMProviderManager()
    with pytest.raises(ValueError, match="interval"):
        await manager.start_monitoring(interval=-1)
    await manager.aclose()


def test_a_huge_cooldown_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="cooldown_seconds"):
        LLMProviderManager(cooldown_seconds=1e12)
    assert LLMProviderManager(cooldown_seconds=10 * 365 * 86400).cooldown_seconds > 0
    monkeypatch.setenv("OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS", "1e12")
    with caplog.at_level(logging.WARNING):
        assert LLMProviderManager().cooldown_seconds == 3600.0
    assert "OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS" in caplog.text


async def test_the_longest_cooldown_still_notifies(clock: FakeClock) -> None:
    recorder = RecordingAlertHandler()
    async with LLMProviderManager(clock=clock, cooldown_seconds=10 * 365 * 86400) as manager:
        manager.add_alert_handler(recorder)
        await manager.set_quota_limit("c", 100, period=None)
        manager.record_usage("c", input_tokens=100)
        await manager.check_quotas()
    assert len(recorder.alerts) == 1


async def test_a_tiny_monitor_interval_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LLMProviderManager()
    with pytest.raises(ValueError, match="interval"):
        await manager.start_monitoring(interval=1e-9)
    with pytest.raises(ValueError, match="interval"):
        manager.start_monitoring_thread(interval=0.05)
    assert not manager.monitoring
    monkeypatch.setenv("OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS", "1e-9")
    with caplog.at_level(logging.WARNING):
        await manager.start_monitoring()
    assert manager.monitoring
    assert manager._monitor.interval == 60.0
    assert "OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS" in caplog.text
    await manager.aclose()
    async with LLMProviderManager() as floor:
        await floor.start_monitoring(interval=0.1)  # the floor itself is fine
        assert floor.monitoring


async def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS", "120")
    monkeypatch.setenv("OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("OTEL_LLM_QUOTA_SEND_RESOLVED", "false")
    monkeypatch.setenv("OTEL_LLM_QUOTA_TIMEZONE", "Europe/Paris")
    manager = LLMProviderManager()
    assert (manager.cooldown_seconds, manager.handler_timeout_seconds) == (120.0, 2.5)
    assert manager.send_resolved is False
    info = await manager.set_quota_limit("c", 10)
    assert info.timezone == "Europe/Paris"
    # The argument wins over the environment.
    assert LLMProviderManager(cooldown_seconds=5).cooldown_seconds == 5.0
    # Malformed values warn and fall back to the defaults.
    monkeypatch.setenv("OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS", "soon")
    monkeypatch.setenv("OTEL_LLM_QUOTA_SEND_RESOLVED", "maybe")
    monkeypatch.setenv("OTEL_LLM_QUOTA_TIMEZONE", "Nowhere/Land")
    with caplog.at_level(logging.WARNING):
        fallback = LLMProviderManager()
    assert fallback.cooldown_seconds == 3600.0
    assert fallback.send_resolved is True
    info = await fallback.set_quota_limit("c", 10)
    assert info.timezone == "UTC"
    for name in ("COOLDOWN", "SEND_RESOLVED", "TIMEZONE"):
        assert name in caplog.text


async def test_repr_shows_no_state_details() -> None:
    manager = LLMProviderManager()
    assert repr(manager) == "LLMProviderManager(configs=0, handlers=0, monitoring=False)"


class ClosableHandler:
    """Records the loop its ``aclose`` ran on."""

    def __init__(self) -> None:
        self.closed_on: list[int] = []

    def handle_alert(self, alert: Alert) -> None:
        pass

    async def aclose(self) -> None:
        self.closed_on.append(threading.get_ident())


class BrokenCloser(ClosableHandler):
    async def aclose(self) -> None:
        raise OSError("socket already gone")


async def test_aclose_closes_handlers_that_hold_resources() -> None:
    closable, broken = ClosableHandler(), BrokenCloser()
    manager = LLMProviderManager()
    manager.add_alert_handler(broken)
    manager.add_alert_handler(closable)
    await manager.aclose()
    await manager.aclose()
    assert closable.closed_on == [threading.get_ident()]


def test_close_runs_handler_cleanup_on_the_monitor_thread() -> None:
    closable = ClosableHandler()
    manager = LLMProviderManager()
    manager.add_alert_handler(closable)
    manager.start_monitoring_thread(interval=3600)
    monitor_thread = next(t for t in threading.enumerate() if t.name == "otel-llm-quota-monitor")
    manager.close()
    assert closable.closed_on == [monitor_thread.ident]


def test_close_with_the_monitor_thread_makes_the_final_flush(tmp_path: Path) -> None:
    """close() after start_monitoring_thread() flushes to the store, as close() without the
    thread and aclose() do, not only when the interpreter exits."""
    url = f"sqlite:///{tmp_path / 'quota.db'}"
    manager = LLMProviderManager(store=url, flush_interval_seconds=3600)  # only the final one
    manager.start_monitoring_thread(interval=3600)
    manager.record_usage("c", provider="openai", input_tokens=7, output_tokens=5)
    manager.close()
    reader = LLMProviderManager(store=url)
    try:
        info = reader.ledger.get("c")
        assert info is not None
        assert (info.input_tokens, info.output_tokens, info.total_requests) == (7, 5, 1)
    finally:
        reader.close()


async def test_stop_and_aclose_handle_the_monitor_thread_from_a_loop(
    recorder: RecordingAlertHandler,
) -> None:
    asyncio.get_running_loop().set_debug(True)  # flags non-thread-safe use of another loop
    closable = ClosableHandler()
    manager = LLMProviderManager()
    manager.add_alert_handler(closable)
    manager.add_alert_handler(recorder)
    await manager.set_quota_limit("c", 100)
    manager.start_monitoring_thread(interval=3600)
    await manager.stop_monitoring()
    assert not manager.monitoring
    assert "otel-llm-quota-monitor" not in {t.name for t in threading.enumerate()}
    manager.start_monitoring_thread(interval=3600)
    manager.record_usage("c", input_tokens=100)
    await manager.aclose()
    assert not manager.monitoring
    assert len(recorder.alerts) == 1  # delivered before the thread ended
    assert len(closable.closed_on) == 2  # once per thread stop, each on the monitor thread
    assert threading.get_ident() not in closable.closed_on


async def test_stop_flushes_what_crossed_and_lets_deliveries_finish() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[float] = []

    class Slow:
        async def handle_alert(self, alert: Alert) -> None:
            started.set()
            await release.wait()
            finished.append(alert.threshold_percent)

    manager = LLMProviderManager()
    manager.add_alert_handler(Slow())
    await manager.set_quota_limit("a", 100, thresholds=(50,))
    await manager.set_quota_limit("b", 100, thresholds=(50,))
    await manager.start_monitoring(interval=3600)
    manager.record_usage("a", input_tokens=60)
    await asyncio.wait_for(started.wait(), 10)  # the monitor is delivering a's alert
    manager.record_usage("b", input_tokens=60)  # crosses while that delivery is in flight
    stopping = asyncio.create_task(manager.stop_monitoring())
    release.set()
    await stopping
    # a's delivery finished (not cancelled) and b's crossing was flushed by the final pass.
    assert finished == [50.0, 50.0]
    assert manager.alerts_sent == {("a", 50.0, "firing"): 1, ("b", 50.0, "firing"): 1}
    await manager.aclose()


async def test_a_hung_sync_handler_starves_no_one(clock: FakeClock) -> None:
    unblock, got_all = threading.Event(), threading.Event()
    calls: list[str] = []

    def hangs(config_id: str, quota: QuotaInfo) -> None:
        calls.append(config_id)
        if len(calls) == 8:
            got_all.set()
        unblock.wait(30)

    recorder = RecordingAlertHandler()
    manager = LLMProviderManager(clock=clock, handler_timeout_seconds=0.05, cooldown_seconds=60)
    manager.add_alert_handler(hangs)
    manager.add_alert_handler(recorder)
    try:
        await manager.set_quota_limit("c", 100)
        manager.record_usage("c", input_tokens=90)
        for _ in range(8):
            await manager.check_quotas()  # returns: the hung call timed out, the rest wait
            clock.advance(60)
        assert len(recorder.alerts) == 8  # every alert reached the healthy handler
        assert calls == ["c"]  # the hung one is still in its first call
        name = "test_a_hung_sync_handler_starves_no_one.<locals>.hangs"
        # Only the call that really exceeded the timeout is a timeout; the others are queued.
        assert manager.handler_timeouts == {name: 1}
        assert manager.handler_failures == {name: 1}
        unblock.set()
        assert got_all.wait(30)  # once it returns, it gets every notification, late
        assert manager.handler_dropped == {}
    finally:
        unblock.set()
        await manager.aclose()


def test_a_hung_sync_handler_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, threading
            from otel_llm_quota import LLMProviderManager

            def hangs(config_id, quota):
                threading.Event().wait()  # forever

            async def main():
                async with LLMProviderManager(handler_timeout_seconds=0.05) as manager:
                    manager.add_alert_handler(hangs)
                    await manager.set_quota_limit("c", 10)
                    manager.record_usage("c", input_tokens=10)
                    await manager.check_quotas()
                print("closed", flush=True)

            asyncio.run(main())
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "closed\n"
