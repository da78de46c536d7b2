"""Store benchmark (issue 7): one ``apply`` of a flush batch with 10,000 dirty configs.

Every backend in ``BACKENDS`` gets the same batches and the same measures, as medians of
``--runs`` runs (5 by default):

* ``first flush``: the first ``apply`` into an empty store (every config and window row created,
  the first expiry sweep included);
* ``steady flush``: an ``apply`` into a store that already holds the configs (the flusher's
  usual case: a new seq of the same writer, counters added to existing rows);
* ``replayed flush``: the same batch again (a retry after a lost reply: every delta skipped).

Target: a steady flush of 10,000 configs under 200 ms on SQLite (absolute, wall clock; the
process's CPU time is printed beside it, as it varies less on a shared machine). ``memory`` is the
in-process reference, for scale. Usage: ``python benchmarks/bench_store.py [--configs 10000]
[--runs 5]``. Redis is added to ``BACKENDS`` where its server fixture lives.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otel_llm_quota.stores import Delta, FlushBatch, MemoryStore, QuotaStore, Window, open_store

TARGET_MS = 200.0
WINDOW = Window(1_700_000_000, 0, 2 * 86400)


@contextmanager
def sqlite_backend(**options: Any) -> Iterator[Callable[[], QuotaStore]]:
    """Fresh SQLite files in a temporary directory (on the disk the tests use)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
    count = 0

    def make() -> QuotaStore:
        nonlocal count
        count += 1
        return open_store(f"sqlite:///{folder}/quota-{count}.db", **options)

    try:
        yield make
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def memory_backend() -> Iterator[Callable[[], QuotaStore]]:
    yield MemoryStore


BACKENDS: dict[str, Callable[[], AbstractContextManager[Callable[[], QuotaStore]]]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    # A clock 61 s later at every call: every flush also runs the expiry sweep (a full scan of
    # the windows and marks, which the store does at most once a minute).
    "sqlite+sweep": lambda: sqlite_backend(clock=_jumping_clock()),
}
"""name -> context manager yielding a factory of fresh, empty stores."""


def _jumping_clock() -> Callable[[], float]:
    now = time.time()

    def clock() -> float:
        nonlocal now
        now += 61.0
        return now

    return clock


def make_batch(configs: int, seq: int) -> FlushBatch:
    deltas = tuple(
        Delta(f"config-{i:05d}", WINDOW, (3, 1, 1200 + i, 300, 0), "openai") for i in range(configs)
    )
    return FlushBatch("bench-writer", seq, deltas)


async def _apply_ms(store: QuotaStore, batch: FlushBatch) -> tuple[float, float]:
    """(wall, CPU) milliseconds of one ``apply``."""
    wall, cpu = time.perf_counter(), time.process_time()
    synced = await store.apply(batch)
    elapsed = (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000
    assert len(synced) == len(batch.deltas)
    return elapsed


async def bench_backend(
    make: Callable[[], QuotaStore], configs: int, runs: int
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {
        "first flush": [],
        "steady flush": [],
        "replayed flush": [],
    }
    batches = [make_batch(configs, seq) for seq in range(1, runs + 2)]
    for _ in range(runs):
        store = make()
        results["first flush"].append(await _apply_ms(store, batches[0]))
        await store.aclose()
    store = make()
    await store.apply(batches[0])
    for batch in batches[1:]:
        results["steady flush"].append(await _apply_ms(store, batch))
        results["replayed flush"].append(await _apply_ms(store, batch))
    [check] = await store.read([("config-00000", WINDOW.start)])
    assert check.window_counts[0] == 3 * (runs + 1), check  # every batch counted exactly once
    await store.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS))
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        f"{args.configs:,} configs per batch, median of {args.runs} runs"
    )
    for name in args.backend or list(BACKENDS):
        with BACKENDS[name]() as make:
            results = asyncio.run(bench_backend(make, args.configs, args.runs))
        for measure, values in results.items():
            walls = [wall for wall, _ in values]
            cpu = statistics.median(c for _, c in values)
            target = f"  (target < {TARGET_MS:.0f} ms)" if measure == "steady flush" else ""
            print(
                f"{name:8} {measure:15}: {statistics.median(walls):7.1f} ms "
                f"(min {min(walls):.1f}, max {max(walls):.1f}; CPU {cpu:.1f} ms){target}"
            )


if __name__ == "__main__":
    main()
