"""What pricing adds to recording one request (issue 10: at most 1 µs per LLM span).

    .venv/bin/python benchmarks/bench_cost.py [--rounds 41] [--n 20000]

Interleaved rounds (medians of the calling thread's CPU time, as bench_processor.py), all in
one process:

1. ``record_checked`` of a priced model (genai-prices' gpt-4o-mini, resolved once and cached):
   the processor's path, pricing included;
2. the same call with cache-read tokens (the general ``_Rates.micro`` path);
3. the same call with no model: the request is counted as unpriced (the price look-up misses in
   the cache of unpriced pairs, no arithmetic);
4. the price alone: ``Pricer.cost`` on the cached rates.

The difference 1 - 3 is the arithmetic of pricing; 3 itself includes the look-up. The whole
processor's cost per LLM span, before and after pricing, is in bench_processor.py's figures
(benchmarks/README.md, "Cost per request").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_processor import interleaved  # CPU time of the calling thread: steadier here

from otel_llm_quota._ledger import QuotaLedger
from otel_llm_quota._pricing import Pricer

MODEL = ("openai", "gpt-4o-mini-2024-07-18")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    pricer = Pricer()
    if pricer.price(*MODEL) is None:
        raise SystemExit("genai-prices is not installed: pip install 'otel-llm-quota[cost]'")
    ledger = QuotaLedger(pricer=pricer)
    record = ledger.record_checked
    provider, model = MODEL
    record("c", provider, 11, 7, 0, True, None, model, 0, 0)
    record("c", provider, 11, 7, 0, True, None, None, 0, 0)  # resolves the unpriced pair too

    def priced(n: int) -> None:
        for _ in range(n):
            record("c", provider, 11, 7, 0, True, None, model, 0, 0)

    def priced_cache(n: int) -> None:
        for _ in range(n):
            record("c", provider, 11, 7, 0, True, None, model, 3, 0)

    def unpriced(n: int) -> None:
        for _ in range(n):
            record("c", provider, 11, 7, 0, True, None, None, 0, 0)

    cost = pricer.cost

    def price_only(n: int) -> None:
        for _ in range(n):
            cost(provider, model, 11, 7, 3, 0)

    result = interleaved(
        {
            "record_checked, priced": priced,
            "record_checked, priced, cache tokens": priced_cache,
            "record_checked, no model (unpriced)": unpriced,
            "Pricer.cost alone": price_only,
        },
        args.n,
        args.rounds,
    )
    for name, seconds in result.items():
        print(f"{name:<42} {seconds * 1e9:8.0f} ns")
    base = result["record_checked, no model (unpriced)"]
    extra = result["record_checked, priced"] - base
    print(f"{'pricing arithmetic (priced - unpriced)':<42} {extra * 1e9:8.0f} ns")
    print(f"{'ratio priced / unpriced':<42} {result['record_checked, priced'] / base:8.3f}x")


if __name__ == "__main__":
    main()
