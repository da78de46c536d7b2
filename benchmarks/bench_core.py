"""Core benchmarks (issue 2): record_usage cost, monitor pass over 100k configs, memory/config.

Run: ``.venv/bin/python benchmarks/bench_core.py`` (or ``make bench``). Targets:

* ``record_usage`` on one thread costs at most 3x a bare function that adds to a dict under a
  lock, measured beside it in the same run;
* one monitor pass over 100,000 configs under 200 ms;
* memory under 1 KiB per config.
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_rate, interleaved

from otel_llm_quota import QuotaLedger
from otel_llm_quota._alerting import evaluate_ledger

CONFIGS = 100_000


def bench_record_usage(rounds: int = 15, n: int = 200_000) -> dict[str, float]:
    ledger = QuotaLedger()
    ledger.set_limit("openai-prod", 10**15, thresholds=(50, 80, 95))
    record = ledger.record_usage

    lock = threading.Lock()
    table: dict[str, int] = {}

    def bare(key: str, tokens: int) -> None:
        with lock:
            table[key] = table.get(key, 0) + tokens

    def loop_bare(count: int) -> None:
        for _ in range(count):
            bare("openai-prod", 15)

    def loop_record(count: int) -> None:
        for _ in range(count):
            record("openai-prod", input_tokens=10, output_tokens=5)

    return interleaved({"bare dict+lock": loop_bare, "record_usage": loop_record}, n, rounds)


def build_ledger(firing_every: int) -> QuotaLedger:
    """100k configs with limits; every ``firing_every``-th one above its threshold (0: none)."""
    ledger = QuotaLedger()
    for i in range(CONFIGS):
        cid = f"config-{i:06d}"
        ledger.set_limit(cid, 1_000_000, thresholds=(50, 80, 95))
        above = firing_every and i % firing_every == 0
        ledger.record_usage(cid, provider="openai", input_tokens=900_000 if above else 1_000)
    return ledger


def bench_monitor_pass(firing_every: int, rounds: int = 7) -> tuple[float, int, int]:
    ledger = build_ledger(firing_every)
    first = evaluate_ledger(ledger, time.time(), 3600.0, True)  # sends the initial alerts
    times = []
    examined = 0
    for _ in range(rounds):
        start = time.perf_counter()
        result = evaluate_ledger(ledger, time.time(), 3600.0, True)
        times.append(time.perf_counter() - start)
        examined = result.examined
    return statistics.median(times), len(first.alerts), examined


def bench_first_pass_alerting(firing_every: int, rounds: int = 5) -> float:
    """A pass that must decide and build an alert for every firing config."""
    times = []
    for _ in range(rounds):
        ledger = build_ledger(firing_every)
        start = time.perf_counter()
        evaluate_ledger(ledger, time.time(), 3600.0, True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_memory() -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ledger = build_ledger(firing_every=10)
    evaluate_ledger(ledger, time.time(), 3600.0, True)  # alert state allocated too
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(ledger) == CONFIGS
    return (after - before) / CONFIGS


def main() -> None:
    print(f"Python {sys.version.split()[0]}")
    results = bench_record_usage()
    bare, rec = results["bare dict+lock"], results["record_usage"]
    print(f"bare dict+lock : {fmt_rate(bare)}")
    print(f"record_usage   : {fmt_rate(rec)}")
    print(f"ratio          : {rec / bare:.2f}x  (target <= 3x)")
    for firing_every, label in ((0, "no alert firing"), (10, "10% firing (repeat check)")):
        seconds, initial, examined = bench_monitor_pass(firing_every)
        print(
            f"monitor pass, {CONFIGS:,} configs, {label}: {seconds * 1000:.1f} ms "
            f"(examined {examined:,} under the lock; first pass sent {initial:,} alerts)"
            "  (target < 200 ms)"
        )
    first = bench_first_pass_alerting(10)
    print(
        f"monitor pass, {CONFIGS:,} configs, 10% crossing now (10,000 alerts built): "
        f"{first * 1000:.1f} ms"
    )
    print(f"memory per config (limit set, 10% firing): {bench_memory():.0f} bytes (target < 1024)")


if __name__ == "__main__":
    main()
