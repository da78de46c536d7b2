"""The hot path with a store attached (stores issue): ``record_usage`` and the span processor's
LLM-span lifecycle, each against the same thing with state in memory, in the same run.

Run: ``.venv/bin/python benchmarks/bench_store_hotpath.py [--store URL ...] [--runs 3]``.
Default stores: ``memory://`` and a SQLite file in a temporary directory; pass Redis URLs too.
The flusher thread of each store-backed manager runs (interval 1 s) while the loops run, as in
an application. Targets: ``record_usage`` with a store at most 1.1x in memory; the lifecycle
ratio unchanged.

Times are CPU time of the recording thread (``time.thread_time``) so that the flusher's own work
on the other core is not charged to the hot path; medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_processor import LLM_REQUEST, LLM_RESPONSE, batch, lifecycle, provider
from bench_processor import interleaved as interleaved_cpu  # CPU time of the thread, medians

from otel_llm_quota import LLMProviderManager, QuotaSpanProcessor


def record_loop(manager: LLMProviderManager) -> Callable[[int], None]:
    record = manager.record_usage

    def loop(n: int) -> None:
        for _ in range(n):
            record("openai-prod", input_tokens=10, output_tokens=5)

    return loop


def run(stores: list[str], rounds: int) -> None:
    managers = {"memory (no store)": LLMProviderManager()}
    for url in stores:
        managers[url] = LLMProviderManager(store=url, flush_interval_seconds=1.0)
    for m in managers.values():
        m.set_quota_limit_sync("openai-prod", 10**15, thresholds=(50, 80, 95))
    results = interleaved_cpu({k: record_loop(m) for k, m in managers.items()}, 200_000, rounds)
    base = results["memory (no store)"]
    print("record_usage (ns/call, CPU of the recording thread):")
    for name, value in results.items():
        print(f"  {name:40s} {value * 1e9:7.0f} ns   ratio {value / base:.3f}x  (target <= 1.1x)")
    for m in managers.values():
        m.close()

    lifecycle_cases: dict[str, Callable[[int], None]] = {
        "no quota": lifecycle(provider(batch()), LLM_REQUEST, LLM_RESPONSE, ids=True)
    }
    made = [LLMProviderManager()] + [
        LLMProviderManager(store=url, flush_interval_seconds=1.0) for url in stores
    ]
    for name, m in zip(["memory (no store)", *stores], made, strict=True):
        tp = provider(batch(), QuotaSpanProcessor(m))
        lifecycle_cases[name] = lifecycle(tp, LLM_REQUEST, LLM_RESPONSE, ids=True)
    results = interleaved_cpu(lifecycle_cases, 2_000, rounds * 3)
    base = results["no quota"]
    print("LLM span lifecycle with BatchSpanProcessor (us/span), ratio to no quota processor:")
    for name, value in results.items():
        print(f"  {name:40s} {value * 1e6:7.2f} us   ratio {value / base:.3f}x")
    for m in made:
        m.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", default=[])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = ["memory://", *args.store]
        try:
            import otel_llm_quota.stores._sqlite  # noqa: F401 - present once SQLite lands
        except ImportError:
            pass
        else:
            stores.insert(1, f"sqlite:///{tmp}/bench.db")
        for i in range(args.runs):
            print(f"-- run {i + 1}")
            run(stores, args.rounds)


if __name__ == "__main__":
    main()
