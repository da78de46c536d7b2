"""Shared benchmark helpers: interleaved rounds, medians, ratios against a same-run baseline."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_call_seconds(loop: Callable[[int], None], n: int) -> float:
    """Seconds per call of ``loop(n)`` (which must make ``n`` calls)."""
    start = time.perf_counter()
    loop(n)
    return (time.perf_counter() - start) / n


def interleaved(cases: dict[str, Callable[[int], None]], n: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each case, running the cases in turn in every round.

    Interleaving spreads machine noise (another process, CPU frequency) over every case alike, so
    the ratios between cases are stable even when the absolute figures drift.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for loop in cases.values():  # warm-up
        loop(max(n // 10, 1))
    for _ in range(rounds):
        for name, loop in cases.items():
            samples[name].append(per_call_seconds(loop, n))
    return {name: statistics.median(values) for name, values in samples.items()}


def fmt_rate(seconds_per_call: float) -> str:
    return f"{1 / seconds_per_call:,.0f} calls/s ({seconds_per_call * 1e9:,.0f} ns/call)"
