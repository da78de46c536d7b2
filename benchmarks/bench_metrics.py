"""Benchmark: one metrics collection over 10,000 configurations.

Measures, as medians of several runs after a warm-up:

1. ``ledger``: ``QuotaLedger.metric_rows`` (the one critical section a collection takes);
2. ``callbacks``: everything otel-llm-quota does per collection (the snapshot plus building
   every observation of every ``llm.quota.*`` instrument);
3. ``sdk collect``: a full ``InMemoryMetricReader`` collection through the OpenTelemetry SDK
   (callbacks + the SDK's aggregation of every data point);
4. ``prometheus scrape``: ``GET /metrics`` on ``start_prometheus_server`` (3 + text encoding).

Usage: ``python benchmarks/bench_metrics.py [--configs 10000] [--runs 7]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import time
import urllib.request
from collections.abc import Callable

from opentelemetry.metrics import CallbackOptions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_llm_quota import (
    LLMProviderManager,
    instrument_metrics,
    quota_metric_views,
    start_prometheus_server,
)
from otel_llm_quota.testing import FakeClock

TARGET_MS = 100.0


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float, float]:
    """(median, min, max) wall time of ``fn`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times), max(times)


def build_manager(configs: int) -> LLMProviderManager:
    """``configs`` daily quotas with usage, a few failed requests and two fired alerts."""
    manager = LLMProviderManager(clock=FakeClock())
    providers = ("openai", "anthropic", "azure.ai.openai", "aws.bedrock")
    for i in range(configs):
        cid = f"config-{i:05d}"
        manager.set_quota_limit_sync(
            cid, 1_000_000, thresholds=(50, 80, 95), period="day", provider=providers[i % 4]
        )
        if i % 10:  # every tenth config stays idle: it must still report
            manager.record_usage(cid, input_tokens=i * 7, output_tokens=i * 3, success=i % 13 != 0)
    manager.record_usage("config-00001", input_tokens=900_000)
    manager.record_usage("config-00002", input_tokens=990_000)
    asyncio.run(manager.check_quotas())
    return manager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    manager = build_manager(args.configs)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=quota_metric_views(args.configs))
    metrics = instrument_metrics(manager, meter_provider=provider)
    options = CallbackOptions()
    callbacks = [
        metrics._observe_usage,  # first: takes the snapshot the others read
        metrics._observe_limit,
        metrics._observe_remaining,
        metrics._observe_utilization,
        metrics._observe_tokens,
        metrics._observe_requests,
        metrics._observe_time_until_reset,
        metrics._observe_alerts,
        metrics._observe_handler_failures,
    ]

    def run_callbacks() -> int:
        # Consumed one at a time, as the SDK does (nothing is kept).
        return sum(1 for cb in callbacks for _ in cb(options))

    data = reader.get_metrics_data()
    assert data is not None
    series = sum(
        len(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )
    endpoint = start_prometheus_server(manager, port=0, host="127.0.0.1", max_configs=args.configs)

    def scrape() -> int:
        with urllib.request.urlopen(endpoint.url, timeout=60) as response:
            return len(response.read())

    results = {
        "ledger (metric_rows)": median_ms(manager.ledger.metric_rows, args.runs),
        "callbacks (otel-llm-quota's share)": median_ms(run_callbacks, args.runs),
        "sdk collect (InMemoryMetricReader)": median_ms(reader.get_metrics_data, args.runs),
        "prometheus scrape (GET /metrics)": median_ms(scrape, args.runs),
    }
    endpoint.shutdown()
    provider.shutdown()
    gc.collect()

    print(
        f"{args.configs} configs, {series} series, {args.runs} runs, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(f"{'step':<38} {'median ms':>10} {'min':>8} {'max':>8}")
    for name, (med, low, high) in results.items():
        print(f"{name:<38} {med:>10.1f} {low:>8.1f} {high:>8.1f}")
    share = results["callbacks (otel-llm-quota's share)"][0]
    print(
        f"target {TARGET_MS:.0f} ms: otel-llm-quota's share "
        f"{'meets' if share < TARGET_MS else 'MISSES'} it "
        f"({share:.1f} ms); full SDK collection "
        f"{results['sdk collect (InMemoryMetricReader)'][0]:.0f} ms"
    )


if __name__ == "__main__":
    main()
