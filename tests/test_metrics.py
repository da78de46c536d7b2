"""The ``llm.quota.*`` metrics, read through the SDK's ``InMemoryMetricReader``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from _forking import fork_while_locked
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from otel_llm_quota import (
    Alert,
    LLMProviderManager,
    QuotaMetrics,
    instrument_metrics,
    quota_metric_views,
)
from otel_llm_quota.testing import FakeClock

Points = dict[frozenset[tuple[str, Any]], float]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader], views=quota_metric_views(100))
    yield provider
    provider.shutdown()


@pytest.fixture
def metrics(manager: LLMProviderManager, meter_provider: MeterProvider) -> Iterator[QuotaMetrics]:
    qm = instrument_metrics(manager, meter_provider=meter_provider)
    yield qm
    qm.shutdown()


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Metric name -> the SDK Metric, for one collection."""
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "otel_llm_quota"
            for metric in sm.metrics:
                out[metric.name] = metric
    return out


def points(metric: Any) -> Points:
    return {frozenset(p.attributes.items()): p.value for p in metric.data.data_points}


def attrs(config_id: str, provider: str | None = "openai", **extra: Any) -> frozenset[Any]:
    base: dict[str, Any] = {"llm.quota.config_id": config_id}
    if provider is not None:
        base["gen_ai.provider.name"] = provider
    base.update(extra)
    return frozenset(base.items())


async def test_usage_limit_remaining_utilization_per_config(
    manager: LLMProviderManager, reader: InMemoryMetricReader, metrics: QuotaMetrics
) -> None:
    await manager.set_quota_limit("a", 1000, provider="openai")
    await manager.set_quota_limit("b", 4000, provider="anthropic")
    manager.record_usage("a", input_tokens=200, output_tokens=50)
    manager.record_usage("b", input_tokens=1000)

    got = collect(reader)

    assert points(got["llm.quota.usage"]) == {attrs("a"): 250, attrs("b", "anthropic"): 1000}
    assert points(got["llm.quota.limit"]) == {attrs("a"): 1000, attrs("b", "anthropic"): 4000}
    assert points(got["llm.quota.remaining"]) == {attrs("a"): 750, attrs("b", "anthropic"): 3000}
    assert points(got["llm.quota.utilization"]) == {
        attrs("a"): 0.25,
        attrs("b", "anthropic"): 0.25,
    }
    assert got["llm.quota.usage"].unit == "{token}"
    assert got["llm.quota.utilization"].unit == "1"


async def test_idle_config_with_a_limit_reports_zero(
    manager: LLMProviderManager, reader: InMemoryMetricReader, metrics: QuotaMetrics
) -> None:
    await manager.set_quota_limit("idle", 500)

    got = collect(reader)

    idle = attrs("idle", None)
    assert points(got["llm.quota.usage"]) == {idle: 0}
    assert points(got["llm.quota.utilization"]) == {idle: 0.0}
    assert points(got["llm.quota.remaining"]) == {idle: 500}
    assert points(got["llm.quota.requests"]) == {
        attrs("idle", None, **{"llm.quota.request.outcome": "success"}): 0,
        attrs("idle", None, **{"llm.quota.request.outcome": "failure"}): 0,
    }


async def test_config_without_limit_reports_usage_but_no_limit_series(
    manager: LLMProviderManager, reader: InMemoryMetricReader, metrics: QuotaMetrics
) -> None:
    manager.record_usage("free", provider="openai", input_tokens=7)

    got = collect(reader)

    assert points(got["llm.quota.usage"]) == {attrs("free"): 7}
    for name in ("llm.quota.limit", "llm.quota.remaining", "llm.quota.utilization"):
        assert name not in got or points(got[name]) == {}


async def test_overused_quota_has_zero_remaining_and_utilization_above_one(
    manager: LLMProviderManager, reader: InMemoryMetricReader, metrics: QuotaMetrics
) -> None:
    await manager.set_quota_limit("a", 100, provider="openai")
    manager.record_usage("a", input_tokens=150)

    got = collect(reader)

    assert points(got["llm.quota.remaining"]) == {attrs("a"): 0}
    assert points(got["llm.quota.utilization"]) == {attrs("a"): 1.5}


async def test_token_and_request_counters_never_go_backwards_at_a_period_reset(
    manager: LLMProviderManager,
    reader: InMemoryMetricReader,
    metrics: QuotaMetrics,
    clock: FakeClock,
) -> None:
    await manager.set_quota_limit("a", 10_000, period="day", provider="openai")
    manager.record_usage("a", input_tokens=100, output_tokens=40)
    manager.record_usage("a", input_tokens=10, output_tokens=5, success=False)
    first = collect(reader)

    clock.advance(timedelta(days=1))
    manager.record_usage("a", input_tokens=1, output_tokens=2)
    second = collect(reader)
    await manager.reset_quota_cache("a")
    third = collect(reader)

    token = "gen_ai.token.type"
    outcome = "llm.quota.request.outcome"
    assert points(first["llm.quota.tokens"]) == {
        attrs("a", **{token: "input"}): 110,
        attrs("a", **{token: "output"}): 45,
    }
    assert points(second["llm.quota.tokens"]) == {
        attrs("a", **{token: "input"}): 111,
        attrs("a", **{token: "output"}): 47,
    }
    assert points(third["llm.quota.tokens"]) == points(second["llm.quota.tokens"])
    assert points(first["llm.quota.requests"]) == {
        attrs("a", **{outcome: "success"}): 1,
        attrs("a", **{outcome: "failure"}): 1,
    }
    assert points(second["llm.quota.requests"]) == {
        attrs("a", **{outcome: "success"}): 2,
        attrs("a", **{outcome: "failure"}): 1,
    }
    assert points(second["llm.quota.usage"]) == {attrs("a"): 3}
    assert points(third["llm.quota.usage"]) == {attrs("a"): 0}
    for name in ("llm.quota.tokens", "llm.quota.requests"):
        data = second[name].data
        assert isinstance(data, Sum)
        assert data.is_monotonic


async def test_tokens_reported_only_as_a_total_have_no_token_type(
    manager: LLMProviderManager, reader: InMemoryMetricReader, metrics: QuotaMetrics
) -> None:
    await manager.update_quota_usage("a", provider="openai", tokens_used=90, input_tokens=60)

    got = collect(reader)

    assert points(got["llm.quota.tokens"]) == {
        attrs("a", **{"gen_ai.token.type": "input"}): 60,
        attrs("a", **{"gen_ai.token.type": "output"}): 0,
        attrs("a"): 30,
    }


async def test_time_until_reset_follows_the_clock(
    manager: LLMProviderManager,
    reader: InMemoryMetricReader,
    metrics: QuotaMetrics,
    clock: FakeClock,
) -> None:
    # The fixture clock is 2026-03-14 15:09:26 UTC: the day ends in 8 h 50 min 34 s.
    await manager.set_quota_limit("daily", 100, period="day")
    await manager.set_quota_limit("forever", 100, period=None)

    got = collect(reader)
    clock.advance(34)
    later = collect(reader)

    assert points(got["llm.quota.time_until_reset"]) == {attrs("daily", None): 31834.0}
    assert points(later["llm.quota.time_until_reset"]) == {attrs("daily", None): 31800.0}
    assert got["llm.quota.time_until_reset"].unit == "s"


async def test_alerts_sent_by_threshold_and_state(
    manager: LLMProviderManager,
    reader: InMemoryMetricReader,
    metrics: QuotaMetrics,
    clock: FakeClock,
) -> None:
    await manager.set_quota_limit("a", 100, thresholds=(50, 90), period="day", provider="openai")
    manager.record_usage("a", input_tokens=60)
    await manager.check_quotas()
    clock.advance(timedelta(days=1))
    await manager.check_quotas()

    got = collect(reader)

    threshold, state = "llm.quota.threshold", "llm.quota.alert.state"
    assert points(got["llm.quota.alerts"]) == {
        attrs("a", **{threshold: 50.0, state: "firing"}): 1,
        attrs("a", **{threshold: 50.0, state: "resolved"}): 1,
    }


async def test_handler_failures_by_handler_and_error_type(
    clock: FakeClock, reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    class Broken:
        name = "broken"

        async def handle_alert(self, alert: Alert) -> None:
            raise RuntimeError("boom")

    class Hung:
        name = "hung"

        async def handle_alert(self, alert: Alert) -> None:
            await asyncio.Event().wait()

    async with LLMProviderManager(clock=clock, handler_timeout_seconds=0.05) as manager:
        qm = instrument_metrics(manager, meter_provider=meter_provider)
        manager.add_alert_handler(Broken())
        manager.add_alert_handler(Hung())
        await manager.set_quota_limit("a", 100)
        manager.record_usage("a", input_tokens=100)
        await manager.check_quotas()

        got = collect(reader)
        qm.shutdown()

    assert points(got["llm.quota.handler.failures"]) == {
        frozenset({("llm.quota.handler.name", "broken"), ("error.type", "exception")}): 1,
        frozenset({("llm.quota.handler.name", "hung"), ("error.type", "timeout")}): 1,
    }


async def test_shutdown_stops_reporting(
    manager: LLMProviderManager, reader: InMemoryMetricReader, metrics: QuotaMetrics
) -> None:
    await manager.set_quota_limit("a", 100)
    assert points(collect(reader)["llm.quota.usage"]) == {attrs("a", None): 0}

    metrics.shutdown()

    got = collect(reader)
    assert all(not points(metric) for metric in got.values())


async def test_views_make_room_for_many_configs(clock: FakeClock) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=quota_metric_views(3000))
    try:
        async with LLMProviderManager(clock=clock) as manager:
            for i in range(2500):
                manager.set_quota_limit_sync(f"c{i}", 1000)
            instrument_metrics(manager, meter_provider=provider)
            usage = points(collect(reader)["llm.quota.usage"])
    finally:
        provider.shutdown()

    assert len(usage) == 2500
    assert not any(("otel.metric.overflow", True) in key for key in usage)


def test_views_reject_a_bad_size() -> None:
    with pytest.raises(ValueError, match="max_configs"):
        quota_metric_views(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_collects_metrics_even_if_the_lock_was_held_at_fork() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = LLMProviderManager()
    metrics = instrument_metrics(manager, meter_provider=provider)
    manager.set_quota_limit_sync("c", 100)
    try:

        def child() -> int:
            data = reader.get_metrics_data()
            return 0 if data is not None and data.resource_metrics else 2

        assert fork_while_locked(metrics._lock, child)[1] == 0
    finally:
        metrics.shutdown()
        provider.shutdown()
        manager.close()


# -- the manager's own metrics (metrics=, meter_provider=) -------------------------------------


def _usage(reader: InMemoryMetricReader) -> Points:
    got = collect(reader)
    return points(got["llm.quota.usage"]) if "llm.quota.usage" in got else {}


async def test_a_plain_manager_reports_through_its_meter_provider(
    clock: FakeClock, reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    async with LLMProviderManager(clock=clock, meter_provider=meter_provider) as manager:
        await manager.set_quota_limit("c", 1000, provider="openai")
        manager.record_usage("c", provider="openai", input_tokens=40, output_tokens=2)
        assert _usage(reader) == {attrs("c"): 42}


@pytest.mark.parametrize(
    ("env_value", "argument", "reports"),
    [
        ("false", None, False),
        ("true", False, False),
        ("false", True, True),  # the argument wins over the environment
        ("not-a-bool", None, True),  # a bad value is logged and the default (on) applies
    ],
)
async def test_metrics_argument_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    env_value: str,
    argument: bool | None,
    reports: bool,
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_METRICS_ENABLED", env_value)
    async with LLMProviderManager(
        clock=clock, metrics=argument, meter_provider=meter_provider
    ) as manager:
        manager.set_quota_limit_sync("c", 1000, provider="openai")
        assert _usage(reader) == ({attrs("c"): 0} if reports else {})


def test_metrics_argument_must_be_a_bool(meter_provider: MeterProvider) -> None:
    with pytest.raises(ValueError, match="metrics"):
        LLMProviderManager(metrics="maybe", meter_provider=meter_provider)  # type: ignore[arg-type]


async def test_instrument_metrics_returns_the_managers_own_instead_of_registering_twice(
    clock: FakeClock, reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    async with LLMProviderManager(clock=clock, meter_provider=meter_provider) as manager:
        first = instrument_metrics(manager, meter_provider=meter_provider)
        assert instrument_metrics(manager, meter_provider=meter_provider) is first
        first.shutdown()  # shut down, then asked for again: resumed, not registered anew
        assert instrument_metrics(manager, meter_provider=meter_provider) is first
        manager.set_quota_limit_sync("c", 1000, provider="openai")
        assert _usage(reader) == {attrs("c"): 0}

        other_reader = InMemoryMetricReader()
        other = MeterProvider(metric_readers=[other_reader])
        try:  # another provider gets its own instruments, which close() stops too
            assert instrument_metrics(manager, meter_provider=other) is not first
            assert _usage(other_reader) == {attrs("c"): 0}
            await manager.aclose()
            assert _usage(other_reader) == {}
        finally:
            other.shutdown()


@pytest.mark.parametrize("closing", ["close", "aclose"])
async def test_closing_the_manager_stops_its_metrics(
    clock: FakeClock, reader: InMemoryMetricReader, meter_provider: MeterProvider, closing: str
) -> None:
    manager = LLMProviderManager(clock=clock, meter_provider=meter_provider)
    manager.set_quota_limit_sync("c", 1000, provider="openai")
    assert _usage(reader) == {attrs("c"): 0}
    if closing == "close":
        manager.close()
    else:
        await manager.aclose()
    assert _usage(reader) == {}


_GLOBAL_PROVIDER_SCRIPT = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from otel_llm_quota import LLMProviderManager, instrument_metrics

manager = LLMProviderManager()  # before the application sets its provider: the API's proxy
own = instrument_metrics(manager)
manager.set_quota_limit_sync("c", 1000, provider="openai")
manager.record_usage("c", provider="openai", input_tokens=7)
reader = InMemoryMetricReader()
provider = MeterProvider(metric_readers=[reader])
metrics.set_meter_provider(provider)
assert instrument_metrics(manager) is own
assert instrument_metrics(manager, meter_provider=provider) is own
later = LLMProviderManager()  # after: the SDK's meter directly
assert instrument_metrics(later, meter_provider=provider) is instrument_metrics(later)
later.close()

def usage():
    data = reader.get_metrics_data()
    return sorted(
        (dict(p.attributes)["llm.quota.config_id"], p.value)
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "llm.quota.usage"
        for p in m.data.data_points
    )

print(usage())
manager.close()
print(usage())
"""


def test_a_manager_created_before_the_global_provider_reports_through_it() -> None:
    # The global provider can be set once per process: this runs in a fresh interpreter.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", _GLOBAL_PROVIDER_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[('c', 7)]", "[]"]


async def test_managers_sharing_a_meter_provider_all_report(
    clock: FakeClock, reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    # The SDK registers each instrument name once per meter: without sharing the instruments,
    # the second manager's callbacks were dropped and it reported nothing.
    first = LLMProviderManager(clock=clock, meter_provider=meter_provider)
    second = LLMProviderManager(clock=clock, meter_provider=meter_provider)
    try:
        first.set_quota_limit_sync("a", 100, provider="openai")
        second.set_quota_limit_sync("b", 100, provider="openai")
        second.record_usage("b", provider="openai", input_tokens=3)
        assert _usage(reader) == {attrs("a"): 0, attrs("b"): 3}
        first.close()  # a closed manager leaves; one created after it reports
        third = LLMProviderManager(clock=clock, meter_provider=meter_provider)
        third.set_quota_limit_sync("c", 100, provider="openai")
        assert _usage(reader) == {attrs("b"): 3, attrs("c"): 0}
        third.close()
    finally:
        second.close()


async def test_cost_metrics_lifetime_counter_and_period_gauges(
    manager: LLMProviderManager,
    reader: InMemoryMetricReader,
    metrics: QuotaMetrics,
    clock: FakeClock,
) -> None:
    # 2 micro-USD per input token, 10 per output token.
    manager.set_prices([{"provider": "openai", "model": "m", "input": 2, "output": 10}])
    await manager.set_quota_limit("a", None, cost_limit_usd=0.5, period="day", provider="openai")
    manager.record_usage("a", model="m", input_tokens=1000, output_tokens=100)  # 3,000 micro
    manager.record_usage("a", model="unknown-model", input_tokens=5)
    manager.record_usage("b", provider="openai", model="m", input_tokens=10)  # 20 micro
    first = collect(reader)
    clock.advance(timedelta(days=1))
    manager.record_usage("a", model="m", output_tokens=1)  # 10 micro
    second = collect(reader)

    assert points(first["llm.quota.cost"]) == {attrs("a"): 0.003, attrs("b"): 0.00002}
    assert points(first["llm.quota.cost.usage"]) == {attrs("a"): 0.003, attrs("b"): 0.00002}
    assert points(first["llm.quota.cost.limit"]) == {attrs("a"): 0.5}
    assert points(first["llm.quota.requests.unpriced"]) == {attrs("a"): 1}
    assert points(second["llm.quota.cost"])[attrs("a")] == pytest.approx(0.00301)  # lifetime
    assert points(second["llm.quota.cost.usage"])[attrs("a")] == 0.00001  # the new period's
    assert first["llm.quota.cost"].unit == "USD"
    assert first["llm.quota.cost.usage"].unit == "USD"
    data = first["llm.quota.cost"].data
    assert isinstance(data, Sum)
    assert data.is_monotonic
