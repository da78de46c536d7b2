"""Alert delivery: per-handler ordered, bounded queues; containment; one shutdown deadline.

Synchronisation is by events; the only real delays are a handler's own work (5 ms), never waits
in place of synchronisation, and nothing here asserts how long something took.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_llm_quota import (
    Alert,
    AlertState,
    LLMProviderManager,
    QuotaInfo,
    instrument_metrics,
)
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler


async def cross(manager: LLMProviderManager, count: int, prefix: str = "c") -> list[str]:
    """Give ``count`` configs a limit of 100 and usage of 100: one alert each at the next pass."""
    names = [f"{prefix}{i:02d}" for i in range(count)]
    for name in names:
        await manager.set_quota_limit(name, 100)
        manager.record_usage(name, input_tokens=100)
    return names


# -- item 1: a slow handler gets every notification, in order --------------------------------


class SlowSync:
    """A sync handler doing 5 ms of real work per call."""

    name = "slow"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def handle_alert(self, alert: Alert) -> None:
        time.sleep(0.005)  # the handler's own work, not synchronisation
        self.seen.append(alert.config_id)


async def test_a_slow_sync_handler_gets_all_50_alerts_of_a_pass_in_order(
    clock: FakeClock,
) -> None:
    slow = SlowSync()
    async with LLMProviderManager(clock=clock) as manager:
        manager.add_alert_handler(slow)
        names = await cross(manager, 50)
        alerts = await manager.check_quotas()
        assert [a.config_id for a in alerts] == names
        # check_quotas waits for its own deliveries: all of them are done when it returns.
        assert slow.seen == names
        assert manager.handler_failures == {}
        assert manager.handler_timeouts == {}


async def test_otel_log_event_handler_with_a_slow_exporter_gets_all_50(clock: FakeClock) -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        LogExportResult,
        SimpleLogRecordProcessor,
    )

    from otel_llm_quota.handlers import OTelLogEventHandler

    class SlowExporter(InMemoryLogRecordExporter):
        def export(self, batch):  # type: ignore[no-untyped-def]
            time.sleep(0.005)  # a 5 ms exporter (real work, not synchronisation)
            return super().export(batch) or LogExportResult.SUCCESS

    exporter = SlowExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    try:
        async with LLMProviderManager(clock=clock) as manager:
            manager.add_alert_handler(OTelLogEventHandler(logger_provider=provider))
            names = await cross(manager, 50)
            await manager.check_quotas()
            logged = [
                data.log_record.attributes["llm.quota.config_id"]
                for data in exporter.get_finished_logs()
            ]
            assert logged == names
            assert manager.handler_failures == {}
    finally:
        provider.shutdown()


async def test_a_call_slower_than_the_next_alert_is_not_a_timeout_and_order_holds(
    clock: FakeClock,
) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[tuple[str, AlertState]] = []

    def slow(config_id: str, quota: QuotaInfo) -> None:
        entered.set()
        release.wait(30)
        seen.append((config_id, quota.alert_state))

    async with LLMProviderManager(clock=clock, handler_timeout_seconds=30) as manager:
        manager.add_alert_handler(slow)
        await cross(manager, 1)
        first = asyncio.create_task(manager.check_quotas())
        assert await asyncio.to_thread(entered.wait, 30)  # the firing call is in progress
        await manager.reset_quota_cache("c00")  # resolves: a notification while it is busy
        second = asyncio.create_task(manager.check_quotas())
        await asyncio.sleep(0)  # a yield (no delay): the second pass runs up to its wait
        assert manager.alerts_sent[("c00", 80.0, "resolved")] == 1  # queued while busy
        assert not second.done()
        release.set()
        await asyncio.gather(first, second)
        # The resolved notification waited for the firing one: late, in order, not lost.
        assert seen == [("c00", AlertState.FIRING), ("c00", AlertState.RESOLVED)]
        assert manager.handler_timeouts == {}
        assert manager.handler_failures == {}


def dropped_points(reader: InMemoryMetricReader) -> dict[frozenset[tuple[str, object]], float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        frozenset(point.attributes.items()): point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "llm.quota.handler.dropped"
        for point in metric.data.data_points
    }


async def test_a_full_queue_drops_the_oldest_counts_and_warns_once(
    clock: FakeClock,
    reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = RecordingAlertHandler()
    recorder.name = "recorder"  # type: ignore[attr-defined]
    async with LLMProviderManager(clock=clock, handler_queue_size=3) as manager:
        metrics = instrument_metrics(manager, meter_provider=meter_provider)
        manager.add_alert_handler(recorder)
        names = await cross(manager, 10)
        with caplog.at_level(logging.WARNING, logger="otel_llm_quota"):
            await manager.check_quotas()  # ten notifications into a queue of three at once
            more = await cross(manager, 10, prefix="d")
            await manager.check_quotas()
        # The newest three of each pass arrive, in order; the oldest were dropped and counted.
        assert [a.config_id for a in recorder.alerts] == names[-3:] + more[-3:]
        assert manager.handler_dropped == {"recorder": 14}
        assert dropped_points(reader) == {frozenset({("llm.quota.handler.name", "recorder")}): 14}
        assert caplog.text.count("cannot keep up") == 1
        metrics.shutdown()
    with pytest.raises(ValueError, match="handler_queue_size"):
        LLMProviderManager(handler_queue_size=0)


async def test_dispatch_returns_an_awaitable_that_reports_each_outcome(clock: FakeClock) -> None:
    from otel_llm_quota._handlers import DELIVERED, FAILED, HandlerDispatcher

    async with LLMProviderManager(clock=clock) as manager:
        await cross(manager, 2)
        alerts = await manager.check_quotas()
    dispatcher = HandlerDispatcher(timeout_seconds=5)
    recorder = RecordingAlertHandler()

    def broken(config_id: str, quota: QuotaInfo) -> None:
        raise RuntimeError("down")

    pending = dispatcher.dispatch([recorder, broken], alerts)
    outcomes = await pending
    assert pending.done()
    assert outcomes == {DELIVERED: 2, FAILED: 2}
    assert [a.config_id for a in recorder.alerts] == ["c00", "c01"]
    assert await dispatcher.dispatch([recorder], []) == {}


# -- item 2: a handler's BaseException is contained ------------------------------------------


async def test_an_async_handler_raising_cancelled_error_does_not_kill_the_monitor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = RecordingAlertHandler()

    class Cancels:
        name = "cancels"

        async def handle_alert(self, alert: Alert) -> None:
            raise asyncio.CancelledError

    manager = LLMProviderManager()
    manager.add_alert_handler(Cancels())
    manager.add_alert_handler(recorder)
    await manager.set_quota_limit("a", 100)
    await manager.set_quota_limit("b", 100)
    await manager.start_monitoring(interval=3600)
    with caplog.at_level(logging.ERROR, logger="otel_llm_quota"):
        manager.record_usage("a", input_tokens=100)
        await recorder.wait_for(1)
        manager.record_usage("b", input_tokens=100)  # a later alert still arrives
        await recorder.wait_for(2)
        await manager._dispatcher.flush()  # the monitor's deliveries have their outcomes
        assert manager.monitoring
    await manager.aclose()  # does not raise
    assert [a.config_id for a in recorder.alerts] == ["a", "b"]
    assert manager.handler_failures == {"cancels": 2}
    assert "alert handler cancels failed" in caplog.text


def test_system_exit_and_keyboard_interrupt_from_handlers_stay_inside(tmp_path: Path) -> None:
    # In a child process: without containment these would end the test runner itself.
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from otel_llm_quota import LLMProviderManager
            from otel_llm_quota.testing import RecordingAlertHandler

            class Exits:
                async def handle_alert(self, alert):
                    raise SystemExit(3)

            class Interrupts:
                async def handle_alert(self, alert):
                    raise KeyboardInterrupt

            def exits_sync(config_id, quota):
                raise SystemExit(4)

            async def main():
                recorder = RecordingAlertHandler()
                async with LLMProviderManager() as manager:
                    for handler in (Exits(), Interrupts(), exits_sync, recorder):
                        manager.add_alert_handler(handler)
                    await manager.set_quota_limit("c", 10)
                    await manager.start_monitoring(interval=3600)
                    manager.record_usage("c", input_tokens=10)
                    await recorder.wait_for(1)
                    await manager._dispatcher.flush()
                    print(manager.monitoring, sorted(manager.handler_failures.values()))
                print("app still running", flush=True)

            asyncio.run(main())
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True [1, 1, 1]\napp still running\n"


def test_a_handler_raising_system_exit_in_thread_mode_leaves_the_monitor_running() -> None:
    recorder = RecordingAlertHandler()
    second = threading.Event()

    class Exits:
        name = "exits"

        async def handle_alert(self, alert: Alert) -> None:
            raise SystemExit(1)

    def notes(config_id: str, quota: QuotaInfo) -> None:
        if config_id == "b":
            second.set()

    manager = LLMProviderManager()
    for handler in (Exits(), notes, recorder):
        manager.add_alert_handler(handler)
    manager.set_quota_limit_sync("a", 100)
    manager.set_quota_limit_sync("b", 100)
    manager.start_monitoring_thread(interval=3600)
    try:
        manager.record_usage("a", input_tokens=100)
        manager.record_usage("b", input_tokens=100)
        assert second.wait(30)

        async def flush() -> None:  # from another loop: the queues are thread-safe
            await manager._dispatcher.flush()

        asyncio.run(flush())
        assert manager.monitoring
        assert manager.handler_failures == {"exits": 2}
    finally:
        manager.close()  # does not raise "monitor runs on an event loop"
    assert not manager.monitoring


def test_a_dead_monitor_thread_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import otel_llm_quota._monitor as monitor_module

    entered = threading.Event()

    def dies(*args: object, **kwargs: object) -> None:
        entered.set()
        raise SystemExit(2)  # a bug of ours that escapes the pass: the monitor ends

    manager = LLMProviderManager()
    manager.set_quota_limit_sync("c", 100)
    with caplog.at_level(logging.ERROR, logger="otel_llm_quota"):
        monkeypatch.setattr(monitor_module, "evaluate_ledger", dies)
        manager.start_monitoring_thread(interval=3600)
        assert entered.wait(30)
        thread = next(
            (t for t in threading.enumerate() if t.name == "otel-llm-quota-monitor"), None
        )
        if thread is not None:
            thread.join(30)
    assert not manager.monitoring
    assert "died" in caplog.text
    manager.close()  # does not raise


# -- item 3: shutdown has one deadline -------------------------------------------------------


def test_close_does_not_wait_for_a_handler_that_blocks_the_monitor_loop() -> None:
    entered, unblock, closed = threading.Event(), threading.Event(), threading.Event()

    class Blocks:
        async def handle_alert(self, alert: Alert) -> None:
            entered.set()
            unblock.wait(60)  # blocks the monitor thread's event loop itself

    manager = LLMProviderManager(shutdown_timeout_seconds=0.2)
    manager.add_alert_handler(Blocks())
    manager.set_quota_limit_sync("c", 100)
    manager.start_monitoring_thread(interval=3600)
    try:
        manager.record_usage("c", input_tokens=100)
        assert entered.wait(30)

        def close() -> None:
            manager.close()
            closed.set()

        threading.Thread(target=close, daemon=True).start()
        # close() returns although the handler still blocks (the thread is a daemon).
        assert closed.wait(20)
        assert not unblock.is_set()
    finally:
        unblock.set()


async def test_the_shutdown_deadline_cuts_a_hanging_async_handler_short_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    class Hangs:
        name = "hangs"

        async def handle_alert(self, alert: Alert) -> None:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    manager = LLMProviderManager(handler_timeout_seconds=600, shutdown_timeout_seconds=0.2)
    manager.add_alert_handler(Hangs())
    await manager.set_quota_limit("c", 100)
    await manager.start_monitoring(interval=3600)
    manager.record_usage("c", input_tokens=100)
    await asyncio.wait_for(entered.wait(), 30)
    with caplog.at_level(logging.WARNING, logger="otel_llm_quota"):
        await manager.aclose()  # does not wait the 600 s handler timeout
    assert cancelled.is_set()
    assert not manager.monitoring
    assert manager.handler_dropped == {"hangs": 1}
    assert "delivery interrupted" in caplog.text


async def test_handlers_close_concurrently() -> None:
    everyone = asyncio.Event()
    entered: list[int] = []
    finished: list[int] = []

    class Closer:
        def __init__(self, number: int) -> None:
            self.number = number
            self.name = f"closer{number}"

        def handle_alert(self, alert: Alert) -> None:
            pass

        async def aclose(self) -> None:
            entered.append(self.number)
            if len(entered) == 10:
                everyone.set()
            await everyone.wait()  # returns only once all ten are closing at the same time
            finished.append(self.number)

    manager = LLMProviderManager(handler_timeout_seconds=0.2)
    for number in range(10):
        manager.add_alert_handler(Closer(number))
    await manager.aclose()
    assert sorted(finished) == list(range(10))


def test_the_shutdown_deadline_comes_from_argument_env_or_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert LLMProviderManager().shutdown_timeout_seconds == 30.0
    monkeypatch.setenv("OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS", "4.5")
    assert LLMProviderManager().shutdown_timeout_seconds == 4.5
    assert LLMProviderManager(shutdown_timeout_seconds=2).shutdown_timeout_seconds == 2.0
    monkeypatch.setenv("OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS", "never")
    with caplog.at_level(logging.WARNING):
        assert LLMProviderManager().shutdown_timeout_seconds == 30.0
    assert "OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS" in caplog.text
    with pytest.raises(ValueError, match="shutdown_timeout_seconds"):
        LLMProviderManager(shutdown_timeout_seconds=0)


async def test_closing_ends_the_handler_workers(clock: FakeClock) -> None:
    slow = SlowSync()

    class Async:
        name = "async"

        async def handle_alert(self, alert: Alert) -> None:
            pass

    manager = LLMProviderManager(clock=clock)
    manager.add_alert_handler(slow)
    manager.add_alert_handler(Async())
    await cross(manager, 1)
    await manager.check_quotas()
    workers = [t for t in threading.enumerate() if t.name == "otel-llm-quota-handler-slow"]
    assert len(workers) == 1  # one long-lived worker per sync handler
    consumers = [t for t in asyncio.all_tasks() if t.get_name() == "otel-llm-quota-handler-async"]
    assert len(consumers) == 1
    await manager.aclose()
    workers[0].join(10)
    assert not workers[0].is_alive()
    assert consumers[0].done()
