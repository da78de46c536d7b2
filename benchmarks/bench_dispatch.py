"""Alert delivery benchmark (hardening items 1-3): what a notification costs to deliver.

Run: ``.venv/bin/python benchmarks/bench_dispatch.py``. One pass in which 1,000 configs cross at
once, delivered to one no-op handler (sync: its worker thread; async: its consumer task), against
the same pass with no handler (building the alerts only) in the same run, interleaved. Target:
delivery adds at most 1x the cost of building the alerts (ratio with a handler <= 2x), and every
notification arrives.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otel_llm_quota import LLMProviderManager, QuotaInfo
from otel_llm_quota.testing import FakeClock

CONFIGS = 1_000


def one_pass(handler: Callable[[str, QuotaInfo], object] | None, received: list[str]) -> float:
    """Seconds of one ``check_quotas`` pass in which ``CONFIGS`` configs cross."""

    async def main() -> float:
        clock = FakeClock(datetime(2026, 3, 14, tzinfo=timezone.utc))
        async with LLMProviderManager(clock=clock) as manager:
            if handler is not None:
                manager.add_alert_handler(handler)  # type: ignore[arg-type]
            for i in range(CONFIGS):
                manager.set_quota_limit_sync(f"c{i}", 100)
                manager.record_usage(f"c{i}", input_tokens=100)
            start = time.perf_counter()
            await manager.check_quotas()
            return time.perf_counter() - start

    received.clear()
    return asyncio.run(main())


def main(rounds: int = 9) -> None:
    received: list[str] = []

    def sync_handler(config_id: str, quota: QuotaInfo) -> None:
        received.append(config_id)

    async def async_handler(config_id: str, quota: QuotaInfo) -> None:
        received.append(config_id)

    cases: dict[str, Callable[[str, QuotaInfo], object] | None] = {
        "no handler (baseline)": None,
        "sync handler": sync_handler,
        "async handler": async_handler,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, handler in cases.items():
            samples[name].append(one_pass(handler, received))
            expected = 0 if handler is None else CONFIGS
            assert len(received) == expected, (name, len(received))
    base = statistics.median(samples["no handler (baseline)"])
    print(f"{CONFIGS} alerts in one pass, median of {rounds} interleaved rounds")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"  {name:22s} {median * 1e3:7.1f} ms  ({median / CONFIGS * 1e6:5.1f} us/alert)  "
            f"ratio {median / base:.2f}x"
        )


if __name__ == "__main__":
    main()
