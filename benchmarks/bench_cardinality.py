"""Benchmark: memory and metrics-collection time under 1,000,000 hostile ids.

Each scenario runs in a fresh process: a manager with the default ``max_configs`` (10,000), a
``QuotaSpanProcessor`` on an SDK ``TracerProvider``, metrics through an SDK ``MeterProvider``
with an ``InMemoryMetricReader`` and ``quota_metric_views()``. It measures the resident set size
(RSS, ``/proc/self/statm``) after a warm-up, ends ``--spans`` LLM spans that each carry a new
hostile value, and measures the time of one full SDK metrics collection (median of 3) and the RSS
growth (the larger of after the spans and after the collections). Targets (absolute): RSS
growth under 40 MB, one collection under 1 s.

Scenarios:

* ``providers``: a new ``gen_ai.provider.name`` on every span (each would be a config);
* ``config_ids``: a new ``llm.quota.config_id`` on every span;
* ``response_ids``: a new ``gen_ai.response.id`` of ``--id-chars`` characters (default 20,000)
  on every span (the dedupe table).

Usage: ``python benchmarks/bench_cardinality.py [--spans 1000000] [--scenario NAME]
[--max-configs N]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCENARIOS = ("providers", "config_ids", "response_ids")
RSS_TARGET_MB = 40.0
COLLECT_TARGET_S = 1.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_scenario(name: str, spans: int, id_chars: int, max_configs: int | None) -> dict[str, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from otel_llm_quota import (
        LLMProviderManager,
        QuotaSpanProcessor,
        instrument_metrics,
        quota_metric_views,
    )

    manager = LLMProviderManager(max_configs=max_configs)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=quota_metric_views())
    metrics = instrument_metrics(manager, meter_provider=meter_provider)
    tracer_provider = TracerProvider()
    processor = QuotaSpanProcessor(manager, meter_provider=meter_provider)
    tracer_provider.add_span_processor(processor)
    tracer = tracer_provider.get_tracer("hostile")
    base = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
    }
    filler = "x" * max(id_chars - 8, 0)

    def attributes(i: int) -> dict[str, Any]:
        if name == "providers":
            return {**base, "gen_ai.provider.name": f"evil-{i}"}
        if name == "config_ids":
            return {**base, "llm.quota.config_id": f"evil-{i}"}
        return {**base, "gen_ai.response.id": f"{i:08d}{filler}"}

    # Warm-up: a few spans and a collection, so that lazily built parts are in the baseline.
    for i in range(100):
        tracer.start_span("chat", attributes={**base, "gen_ai.response.id": f"warm-{i}"}).end()
    reader.get_metrics_data()
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    for i in range(spans):
        tracer.start_span("chat", attributes=attributes(i)).end()
    record_s = time.perf_counter() - start
    gc.collect()
    after = rss_mb()
    collect_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        data = reader.get_metrics_data()
        collect_times.append(time.perf_counter() - t0)
    assert data is not None
    gc.collect()
    after_collect = rss_mb()
    points = sum(
        len(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )
    overflow = manager.ledger.get("_overflow")
    total_requests = sum(q.successful_requests for q in manager.ledger.get_all())
    result = {
        "scenario": name,
        "spans": spans,
        "configs": len(manager.ledger),
        "overflowed_records": manager.ledger.overflowed_records,
        "overflow_requests": overflow.successful_requests if overflow is not None else 0,
        "requests_counted": total_requests,
        "rss_before_mb": round(before, 1),
        "rss_growth_mb": round(after - before, 1),
        "rss_growth_collected_mb": round(after_collect - before, 1),
        "collect_s": round(statistics.median(collect_times), 3),
        "data_points": points,
        "record_us_per_span": round(record_s / spans * 1e6, 1),
    }
    metrics.shutdown()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    manager.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--id-chars", type=int, default=20_000)
    parser.add_argument("--max-configs", type=int, default=None)
    parser.add_argument("--scenario", choices=SCENARIOS)
    args = parser.parse_args()
    if args.scenario:  # the child process: one scenario, one JSON line
        result = run_scenario(args.scenario, args.spans, args.id_chars, args.max_configs)
        print(json.dumps(result))
        return 0
    print(
        f"{args.spans:,} hostile spans per scenario, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'scenario':<14} {'configs':>8} {'overflowed':>11} {'counted':>9} "
        f"{'RSS growth MB':>14} {'collect s':>10} {'points':>8} {'us/span':>8}"
    )
    print(header)
    status = 0
    for name in SCENARIOS:
        command = [sys.executable, __file__, "--scenario", name, "--spans", str(args.spans)]
        command += ["--id-chars", str(args.id_chars)]
        if args.max_configs is not None:
            command += ["--max-configs", str(args.max_configs)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        growth = max(r["rss_growth_mb"], r["rss_growth_collected_mb"])
        ok = growth < RSS_TARGET_MB and r["collect_s"] < COLLECT_TARGET_S
        status |= 0 if ok else 1
        print(
            f"{name:<14} {r['configs']:>8,} {r['overflowed_records']:>11,} "
            f"{r['requests_counted']:>9,} {growth:>14.1f} {r['collect_s']:>10.3f} "
            f"{r['data_points']:>8,} {r['record_us_per_span']:>8.1f}  {'ok' if ok else 'MISSED'}"
        )
    print(
        f"targets: RSS growth < {RSS_TARGET_MB:.0f} MB, one collection < {COLLECT_TARGET_S:.0f} s"
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
