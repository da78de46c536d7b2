"""Nested budgets and forecasts (issue 10, items 3 and 4): what they add to the hot path and to
a monitor pass.

Run: ``.venv/bin/python benchmarks/bench_nested.py``. Measured in one process, interleaved
rounds, medians, as ratios:

* ``record_usage`` into a key with a two-level parent chain (team, org) against a key without
  parents: three configs updated instead of one, in one critical section (target <= 2x);
* a monitor pass over 10,000 limited configs with forecasts on (each config sampled and
  projected) against the same pass with forecasts off, and the pass that follows at once (the
  samples' cadence skips every config: the ratio should be about 1x).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_rate, interleaved

from otel_llm_quota import QuotaLedger
from otel_llm_quota._alerting import evaluate_ledger
from otel_llm_quota._forecast import ForecastSettings

CONFIGS = 10_000


def bench_chain(rounds: int = 15, n: int = 200_000) -> dict[str, float]:
    ledger = QuotaLedger()
    ledger.set_limit("org", 10**15, thresholds=(50, 80, 95))
    ledger.set_limit("team", None, parent="org")
    ledger.set_limit("key-nested", 10**15, thresholds=(50, 80, 95), parent="team")
    ledger.set_limit("key-flat", 10**15, thresholds=(50, 80, 95))
    record = ledger.record_usage

    def loop_flat(count: int) -> None:
        for _ in range(count):
            record("key-flat", input_tokens=10, output_tokens=5)

    def loop_nested(count: int) -> None:
        for _ in range(count):
            record("key-nested", input_tokens=10, output_tokens=5)

    return interleaved({"no parent": loop_flat, "key -> team -> org": loop_nested}, n, rounds)


def bench_forecast_pass(rounds: int = 7) -> dict[str, float]:
    def ledger() -> QuotaLedger:
        made = QuotaLedger()
        for i in range(CONFIGS):
            cid = f"config-{i:05d}"
            made.set_limit(cid, 1_000_000, thresholds=(50, 80, 95), period="day")
            made.record_usage(cid, input_tokens=1_000)
        return made

    settings = ForecastSettings()
    off, first, again = [], [], []
    for _ in range(rounds):
        plain, forecasting = ledger(), ledger()
        now = time.time()
        start = time.perf_counter()
        evaluate_ledger(plain, now, 3600.0, True)
        off.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluate_ledger(forecasting, now, 3600.0, True, forecast=settings)
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluate_ledger(forecasting, now + 1, 3600.0, True, forecast=settings)
        again.append(time.perf_counter() - start)
    return {
        "pass, forecasts off": statistics.median(off),
        "pass, forecasts on (all sampled)": statistics.median(first),
        "next pass, forecasts on (none due)": statistics.median(again),
    }


def main() -> None:
    print(f"Python {sys.version.split()[0]}")
    chain = bench_chain()
    for name, seconds in chain.items():
        print(f"record_usage, {name:<20}: {fmt_rate(seconds)}")
    ratio = chain["key -> team -> org"] / chain["no parent"]
    print(f"ratio nested / flat        : {ratio:.2f}x  (target <= 2x)")
    passes = bench_forecast_pass()
    base = passes["pass, forecasts off"]
    for name, seconds in passes.items():
        print(f"{name:<36}: {seconds * 1e3:7.1f} ms  ({seconds / base:.2f}x), {CONFIGS:,} configs")


if __name__ == "__main__":
    main()
