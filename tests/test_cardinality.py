"""Bounded memory under hostile cardinality: the config cap and its ``_overflow`` config,
``delete_config``, expiry of idle configs, and the byte-bounded response-id dedupe."""

from __future__ import annotations

import gc
import logging
import threading
import tracemalloc
from collections.abc import Iterable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from otel_llm_quota import (
    LLMProviderManager,
    QuotaLedger,
    QuotaSpanProcessor,
    _pricing,
    instrument_metrics,
)
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

OVERFLOW = "_overflow"


def totals(ledger: QuotaLedger) -> dict[str, tuple[int, int, int]]:
    return {
        q.config_id: (q.input_tokens, q.output_tokens, q.successful_requests)
        for q in ledger.get_all()
    }


# -- the cap ---------------------------------------------------------------------------------------


def test_usage_beyond_max_configs_goes_to_overflow_and_nothing_is_lost(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = QuotaLedger(clock=clock, max_configs=3)
    with caplog.at_level(logging.WARNING, logger="otel_llm_quota"):
        for i in range(10):
            ledger.record_usage(f"tenant-{i}", provider=f"p{i}", input_tokens=i, output_tokens=1)
        ledger.record_usage("tenant-9", input_tokens=100)  # still refused: overflow again
    got = totals(ledger)
    assert set(got) == {"tenant-0", "tenant-1", "tenant-2", OVERFLOW}
    assert got[OVERFLOW] == (sum(range(3, 10)) + 100, 7, 8)
    assert sum(t[0] for t in got.values()) == sum(range(10)) + 100
    assert ledger.overflowed_records == 8
    overflow = ledger.get(OVERFLOW)
    assert overflow is not None
    assert overflow.provider is None  # mixed providers: none kept
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert OVERFLOW in warnings[0].getMessage()


def test_racing_past_the_cap_loses_nothing(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, max_configs=100)
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for i in range(1000):
            ledger.record_usage(f"id-{i}", input_tokens=1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = totals(ledger)
    assert len(got) == 101
    assert sum(t[0] for t in got.values()) == 4000
    assert ledger.overflowed_records == got[OVERFLOW][2] == 3600


def test_configs_with_a_limit_are_never_refused_nor_counted(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, max_configs=2)
    for i in range(5):
        ledger.set_limit(f"limited-{i}", 1000)
    for i in range(5):
        ledger.record_usage(f"limited-{i}", input_tokens=1)
    for i in range(4):
        ledger.record_usage(f"free-{i}", input_tokens=1)
    assert set(totals(ledger)) == {
        *(f"limited-{i}" for i in range(5)),
        "free-0",
        "free-1",
        OVERFLOW,
    }
    # Giving a usage-created config a limit frees its place under the cap.
    ledger.set_limit("free-0", 1000)
    ledger.record_usage("free-9", input_tokens=1)
    assert "free-9" in ledger
    assert ledger.overflowed_records == 2


def test_a_span_may_name_the_overflow_config_itself(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, max_configs=1)
    ledger.record_usage(OVERFLOW, provider="openai", input_tokens=5)
    ledger.record_usage("a", input_tokens=1)  # exempt: _overflow took no place under the cap
    assert set(totals(ledger)) == {OVERFLOW, "a"}
    assert ledger.overflowed_records == 0


def test_bad_max_configs_raise(clock: FakeClock) -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_configs"):
            QuotaLedger(clock=clock, max_configs=bad)  # type: ignore[arg-type]


def test_manager_reads_max_configs_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_MAX_CONFIGS", "7")
    assert LLMProviderManager(clock=clock).ledger.max_configs == 7
    assert LLMProviderManager(clock=clock, max_configs=3).ledger.max_configs == 3
    monkeypatch.setenv("OTEL_LLM_QUOTA_MAX_CONFIGS", "lots")
    with caplog.at_level(logging.WARNING):
        assert LLMProviderManager(clock=clock).ledger.max_configs == 2_000
    assert "OTEL_LLM_QUOTA_MAX_CONFIGS" in caplog.text
    monkeypatch.delenv("OTEL_LLM_QUOTA_MAX_CONFIGS")
    assert LLMProviderManager(clock=clock).ledger.max_configs == 2_000


def test_hostile_providers_on_spans_stay_within_the_cap(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock, max_configs=10)
    processor = QuotaSpanProcessor(manager)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("hostile")
    for i in range(1000):
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.provider.name": f"evil-{i}",
                    "gen_ai.usage.input_tokens": 2,
                    "gen_ai.usage.output_tokens": 1,
                }
            )
    got = totals(manager.ledger)
    assert len(got) == 11
    assert got[OVERFLOW] == (2 * 990, 990, 990)
    assert sum(t[2] for t in got.values()) == 1000
    provider.shutdown()
    manager.close()


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    data = reader.get_metrics_data()
    out: dict[frozenset[tuple[str, Any]], float] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        out[frozenset(p.attributes.items())] = p.value
    return out


def test_overflow_records_metric(
    clock: FakeClock, reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    manager = LLMProviderManager(clock=clock, max_configs=2)
    metrics = instrument_metrics(manager, meter_provider=meter_provider)
    for i in range(2):
        manager.record_usage(f"c{i}", input_tokens=1)
    assert points(reader, "llm.quota.overflow.records") == {}
    for i in range(5):
        manager.record_usage(f"x{i}", provider="evil", input_tokens=3)
    assert points(reader, "llm.quota.overflow.records") == {frozenset(): 5}
    usage = points(reader, "llm.quota.usage")
    assert usage[frozenset({("llm.quota.config_id", OVERFLOW)})] == 15
    metrics.shutdown()
    manager.close()


# -- delete_config ---------------------------------------------------------------------------------


async def test_delete_config_removes_state_and_alerts(
    manager: LLMProviderManager, recorder: RecordingAlertHandler
) -> None:
    await manager.set_quota_limit("team", 100, thresholds=(50,))
    await manager.update_quota_usage("team", "openai", 60)
    alerts = await manager.check_quotas()
    assert [a.config_id for a in alerts] == ["team"]
    assert await manager.delete_config("team") is True
    assert await manager.get_quota_usage("team") is None
    assert await manager.delete_config("team") is False
    assert manager.delete_config_sync("never-there") is False
    # A new record re-creates it from zero, without a limit (so no alert).
    await manager.update_quota_usage("team", "openai", 70)
    info = await manager.get_quota_usage("team")
    assert info is not None
    assert (info.total_tokens, info.quota_limit, info.alert_state) == (70, None, None)
    assert await manager.check_quotas() == []


def test_delete_frees_a_place_under_the_cap(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, max_configs=1)
    ledger.record_usage("a", input_tokens=1)
    ledger.record_usage("b", input_tokens=1)
    assert "b" not in ledger
    assert ledger.delete("a") is True
    ledger.record_usage("b", input_tokens=1)
    assert "b" in ledger


def test_deleted_configs_stop_reporting_metrics(
    clock: FakeClock, reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    manager = LLMProviderManager(clock=clock)
    metrics = instrument_metrics(manager, meter_provider=meter_provider)
    for i in range(300):
        manager.record_usage(f"c{i}", input_tokens=1)
    assert len(points(reader, "llm.quota.usage")) == 300
    for i in range(299):
        manager.delete_config_sync(f"c{i}")
    assert points(reader, "llm.quota.usage") == {frozenset({("llm.quota.config_id", "c299")}): 1}
    assert len(metrics._attrs) < 300  # the attribute dicts of deleted configs are let go
    metrics.shutdown()
    manager.close()


# -- idle expiry -----------------------------------------------------------------------------------


def test_idle_configs_without_a_limit_expire(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, idle_config_seconds=100)
    ledger.set_limit("limited", 1000)
    ledger.record_usage("old", input_tokens=1)
    ledger.record_usage("busy", input_tokens=1)
    clock.advance(60)
    ledger.record_usage("busy", input_tokens=1)
    clock.advance(50)  # old: idle 110 s; busy: 50 s; limited: never used, but has a limit
    ledger.record_usage("new", input_tokens=1)  # creating a config sweeps
    assert set(ledger.config_ids()) == {"limited", "busy", "new"}
    clock.advance(200)
    assert ledger.expire_idle() == 2
    assert ledger.config_ids() == ["limited"]


def test_expiry_runs_when_metrics_are_read_and_frees_cap_places(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, max_configs=2, idle_config_seconds=10)
    ledger.record_usage("a", input_tokens=1)
    ledger.record_usage("b", input_tokens=1)
    clock.advance(11)
    assert [row[0] for row in ledger.metric_rows()] == []
    ledger.record_usage("c", input_tokens=1)
    ledger.record_usage("d", input_tokens=1)
    assert ledger.config_ids() == ["c", "d"]
    assert ledger.overflowed_records == 0


def test_without_idle_seconds_nothing_expires(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock)
    ledger.record_usage("a", input_tokens=1)
    clock.advance(10**9)
    ledger.record_usage("b", input_tokens=1)
    assert ledger.expire_idle() == 0
    assert ledger.config_ids() == ["a", "b"]


def test_manager_idle_seconds_from_argument_and_environment(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS", "3600")
    assert LLMProviderManager(clock=clock).ledger.idle_config_seconds == 3600
    assert LLMProviderManager(clock=clock, idle_config_seconds=5).ledger.idle_config_seconds == 5
    monkeypatch.delenv("OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS")
    assert LLMProviderManager(clock=clock).ledger.idle_config_seconds is None
    with pytest.raises(ValueError, match="idle_config_seconds"):
        LLMProviderManager(clock=clock, idle_config_seconds=-1)


# -- the dedupe table is bounded by bytes ----------------------------------------------------------


def _end_spans(
    processor: QuotaSpanProcessor, ids: Iterable[str], scopes: Iterable[str] = "a"
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for scope in scopes:
        _end_in(provider.get_tracer(scope), ids)
    provider.shutdown()


def _end_in(tracer: Tracer, ids: Iterable[str]) -> None:
    for response_id in ids:
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.provider.name": "openai",
                    "gen_ai.usage.input_tokens": 1,
                    "gen_ai.response.id": response_id,
                }
            )


def test_long_response_ids_are_not_kept_whole(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock)
    processor = QuotaSpanProcessor(manager, max_tracked_responses=1000)
    # The processor imports genai-prices' table on a background thread (5 MB): wait for it, it
    # is not what this test measures.
    _pricing._genai_prices()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # Each 20 KB id lives on its span only: once the span is gone, only the table can keep it.
        _end_spans(processor, (f"{i:08d}" + "x" * 20_000 for i in range(200)))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert processor.stats.counted_spans == 200
    assert kept < 1_000_000, kept  # the 200 ids whole would be 4 MB
    manager.close()


def test_long_response_ids_still_count_each_response_once(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock)
    processor = QuotaSpanProcessor(manager)
    same_prefix = ["r" * 100 + "-1", "r" * 100 + "-2"]
    # Two instrumentations report the same two responses.
    _end_spans(processor, same_prefix, scopes=("sdk", "openllmetry"))
    info = manager.ledger.get("openai")
    assert info is not None
    assert info.successful_requests == 2
    assert processor.stats.duplicate_spans == 2
    manager.close()
