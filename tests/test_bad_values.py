"""One bad value must not break everything: limits, counts, flags and ids are checked up front."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_llm_quota import LLMProviderManager, instrument_metrics
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

INT64_MAX = 2**63 - 1
MAX_TOKENS = 2**53  # the documented maximum of a limit and of one count
MAX_PERIOD_TOKENS = 2**62 - 1  # the documented cap of a period's total


@pytest.mark.parametrize("bad", [2**1024, MAX_TOKENS + 1, 2**63], ids=["2**1024", "max+1", "2**63"])
async def test_a_huge_limit_is_refused_and_changes_nothing(
    manager: LLMProviderManager, recorder: RecordingAlertHandler, bad: int
) -> None:
    await manager.set_quota_limit("healthy", 100)
    await manager.set_quota_limit("victim", 1000, thresholds=[50])
    before = await manager.get_quota_status("victim")
    with pytest.raises(ValueError, match=r"quota_limit must be at most 2\*\*53"):
        await manager.set_quota_limit("victim", bad)
    with pytest.raises(ValueError, match="quota_limit"):
        await manager.set_quota_limit("new", bad)
    assert await manager.get_quota_status("victim") == before
    assert await manager.get_quota_status("new") is None
    # Every read and every monitor pass still works: the healthy config's alert is sent.
    manager.record_usage("healthy", input_tokens=90)
    assert len(await manager.get_all_quota_statuses()) == 2
    alerts = await manager.check_quotas()
    assert [a.config_id for a in alerts] == ["healthy"]
    assert [a.config_id for a in recorder.alerts] == ["healthy"]


async def test_the_maximum_limit_is_accepted(manager: LLMProviderManager) -> None:
    info = await manager.set_quota_limit("big", MAX_TOKENS, thresholds=[50, 100])
    assert info.quota_limit == MAX_TOKENS
    manager.record_usage("big", input_tokens=MAX_TOKENS // 2)
    assert [a.threshold_percent for a in await manager.check_quotas()] == [50.0]


@pytest.mark.parametrize("key", ["input_tokens", "output_tokens", "total_tokens"])
@pytest.mark.parametrize("bad", [2**63, MAX_TOKENS + 1, 2**1024], ids=["2**63", "max+1", "2**1024"])
def test_a_huge_count_is_refused_before_counting(
    manager: LLMProviderManager, key: str, bad: int
) -> None:
    manager.record_usage("a", input_tokens=1)
    with pytest.raises(ValueError, match=rf"{key} must be at most 2\*\*53"):
        manager.record_usage("a", **{key: bad})
    info = manager.ledger.get("a")
    assert info is not None
    assert (info.total_tokens, info.total_requests) == (1, 1)


async def test_seed_api_refuses_a_huge_tokens_used(manager: LLMProviderManager) -> None:
    with pytest.raises(ValueError, match=r"tokens_used must be at most 2\*\*53"):
        await manager.update_quota_usage("a", "openai", 2**63)
    assert await manager.get_quota_status("a") is None


def _otlp_points(reader: InMemoryMetricReader) -> list[tuple[str, str, int]]:
    """Encode the collection as the OTLP exporter does (raises on a value beyond int64)."""
    data = reader.get_metrics_data()
    assert data is not None
    request = encode_metrics(data)
    out: list[tuple[str, str, int]] = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = metric.sum.data_points if metric.HasField("sum") else []
                points = points or (metric.gauge.data_points if metric.HasField("gauge") else [])
                for point in points:
                    attrs = {kv.key: kv.value.string_value for kv in point.attributes}
                    out.append((metric.name, attrs.get("llm.quota.config_id", ""), point.as_int))
    return out


async def test_totals_saturate_within_int64_and_other_configs_export(clock: FakeClock) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    async with LLMProviderManager(clock=clock, timezone="UTC") as manager:
        metrics = instrument_metrics(manager, meter_provider=provider)
        try:
            await manager.set_quota_limit("small", 100, period="hour")
            await manager.set_quota_limit("huge", MAX_TOKENS, period="hour")
            manager.record_usage("small", input_tokens=7)
            for _ in range(3):  # three periods, each pushed far beyond the cap
                for _ in range(600):
                    manager.record_usage("huge", input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS)
                info = manager.ledger.get("huge")
                assert info is not None
                assert info.total_tokens == MAX_PERIOD_TOKENS
                assert info.input_tokens <= MAX_PERIOD_TOKENS
                clock.advance(3600)
            info = manager.ledger.get("huge")
            assert info is not None
            assert info.lifetime_input_tokens + info.lifetime_output_tokens <= 2 * INT64_MAX
            assert info.lifetime_input_tokens <= INT64_MAX
            points = _otlp_points(reader)  # the whole batch encodes
            assert max(value for _, _, value in points) <= INT64_MAX
            small = {value for _, cid, value in points if cid == "small"}
            assert {7, 100} <= small  # lifetime input tokens and the limit
        finally:
            metrics.shutdown()
            provider.shutdown()


@pytest.mark.parametrize("bad", ["false", "no", 0, 1, None])
def test_record_usage_success_must_be_a_bool(manager: LLMProviderManager, bad: Any) -> None:
    with pytest.raises(TypeError, match="success must be a bool"):
        manager.record_usage("a", input_tokens=5, success=bad)
    assert manager.ledger.get("a") is None


@pytest.mark.parametrize("bad", ["span", 42, object()])
async def test_record_usage_checks_span_up_front(manager: LLMProviderManager, bad: Any) -> None:
    await manager.set_quota_limit("a", 100)
    # Below the threshold (nothing would look at the span) as well as across it.
    for tokens in (1, 99):
        with pytest.raises(TypeError, match="span must be a SpanRef, a SpanContext or None"):
            manager.record_usage("a", input_tokens=tokens, span=bad)
    info = manager.ledger.get("a")
    assert info is not None
    assert (info.total_tokens, info.total_requests) == (0, 0)


@pytest.mark.parametrize("bad", [[1], {"a": 1}, 3])
async def test_reads_with_a_non_string_id_name_the_argument(
    manager: LLMProviderManager, bad: Any
) -> None:
    with pytest.raises(TypeError, match="config_id must be a str, not"):
        await manager.get_quota_status(bad)
    with pytest.raises(TypeError, match="config_id must be a str, not"):
        await manager.get_quota_usage(bad)
    with pytest.raises(TypeError, match="config_id must be a str, not"):
        await manager.reset_quota_cache(bad)


@pytest.mark.parametrize("bad", [80, 80.0])
def test_thresholds_that_are_not_a_sequence_say_so(manager: LLMProviderManager, bad: Any) -> None:
    with pytest.raises(TypeError, match=r"thresholds must be a sequence of numbers, not"):
        manager.set_quota_limit_sync("a", 100, thresholds=bad)


def test_a_huge_threshold_is_out_of_range(manager: LLMProviderManager) -> None:
    with pytest.raises(ValueError, match=r"must be in \(0, 100\], got a 1025-bit number"):
        manager.set_quota_limit_sync("a", 100, thresholds=[2**1024])


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_handler_raising_timeout_error_is_a_failure_not_a_timeout(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    def sync_handler(config_id: str, quota: Any) -> None:
        raise TimeoutError("upstream said 504")

    async def async_handler(config_id: str, quota: Any) -> None:
        raise TimeoutError("upstream said 504")

    handler = sync_handler if kind == "sync" else async_handler
    async with LLMProviderManager(clock=clock, handler_timeout_seconds=30) as manager:
        manager.add_alert_handler(handler)
        await manager.set_quota_limit("c", 10)
        manager.record_usage("c", input_tokens=10)
        with caplog.at_level(logging.WARNING, logger="otel_llm_quota"):
            await manager.check_quotas()
        assert list(manager.handler_failures.values()) == [1]
        assert manager.handler_timeouts == {}
    assert "TimeoutError: upstream said 504" in caplog.text  # logged as the handler's failure
    assert "timed out after" not in caplog.text
