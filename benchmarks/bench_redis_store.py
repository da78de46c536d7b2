"""One ``RedisStore.apply`` of a flush with 10,000 dirty configs, and one ``read`` of them, on
one Redis and on a 3-master Redis Cluster (targets for apply: < 100 ms and < 200 ms, absolute;
medians of 5 rounds after a warm-up), against a baseline implementation in the same run.

Starts its own servers on 127.0.0.1 with the tests' helpers (tests/_redis.py; needs
redis-server and redis-cli: ``make system-deps``). Each timed flush is a new batch (a new seq)
of the same 10,000 configs, so every delta is applied, as in a steady flusher; the first (warm-up)
flush creates the keys and loads the scripts. Besides the wall time it prints the time the
servers spent in the scripts (``INFO commandstats``), the rest being the client's (redis-py
packing commands and parsing replies, asyncio) and the network.

The baseline is ``otel_llm_quota/stores/_redis.py`` as it was at ``--baseline`` (a git
revision; default: the one-script-per-delta store), loaded from git history into a module of its
own. Both run on the same servers under their own key prefixes, interleaved round by round
(the order alternating), so the machine's load weighs on both alike: the ratios new / baseline
are the figures to trust on a loaded machine. ``--baseline none`` measures only the current
store.

    .venv/bin/python benchmarks/bench_redis_store.py [--configs 10000] [--runs 5]
        [--baseline REV|none]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _redis import RedisClusterServers, RedisServer

from otel_llm_quota.stores import Delta, FlushBatch, Window
from otel_llm_quota.stores._redis import RedisStore

ROOT = Path(__file__).resolve().parent.parent
WINDOW = Window(1_700_000_000, 0, 2 * 86400)
DEFAULT_BASELINE = "b3ee122"
"""The last revision with one script call per delta."""


def _baseline_module(revision: str) -> ModuleType:
    """``otel_llm_quota/stores/_redis.py`` at ``revision``, imported as a module of its own."""
    text = subprocess.run(
        ["git", "show", f"{revision}:otel_llm_quota/stores/_redis.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "_redis_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("_redis_baseline", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script_seconds(servers: list[RedisServer]) -> float:
    """Seconds the servers spent running EVALSHA since the last call (then reset)."""
    total = 0.0
    for server in servers:
        with server.client() as client:
            stats = client.info("commandstats")
            total += stats.get("cmdstat_evalsha", {}).get("usec", 0) / 1e6
            client.config_resetstat()
    return total


class _Figures:
    def __init__(self) -> None:
        self.apply: list[float] = []
        self.server: list[float] = []
        self.read: list[float] = []


async def _measure(
    url: str, servers: list[RedisServer], configs: int, runs: int, baseline: ModuleType | None
) -> dict[str, _Figures]:
    stores: dict[str, Any] = {"new": RedisStore(url, key_prefix="bench_new:")}
    if baseline is not None:
        stores["baseline"] = baseline.RedisStore(url, key_prefix="bench_old:")
    figures = {name: _Figures() for name in stores}
    ids = [f"tenant-{n}/openai-gpt-4o" for n in range(configs)]
    wanted = [(i, WINDOW.start) for i in ids]

    def batch(seq: int) -> FlushBatch:
        return FlushBatch(
            "bench-writer",
            seq,
            tuple(Delta(i, WINDOW, (1, 0, 120 + seq, 80, 0), "openai") for i in ids),
        )

    try:
        for store in stores.values():
            await store.apply(batch(1))  # warm-up: keys, script cache, connections
            await store.read(wanted)
        names = list(stores)
        for seq in range(2, runs + 2):
            for name in names if seq % 2 else names[::-1]:
                store, figs = stores[name], figures[name]
                b = batch(seq)
                _script_seconds(servers)
                start = time.perf_counter()
                synced = await store.apply(b)
                figs.apply.append(time.perf_counter() - start)
                figs.server.append(_script_seconds(servers))
                assert len(synced) == configs
                assert synced[0].window_counts[0] == seq
                assert synced[-1].lifetime[2] == sum(120 + s for s in range(1, seq + 1))
                start = time.perf_counter()
                read = await store.read(wanted)
                figs.read.append(time.perf_counter() - start)
                assert read == synced
        return figures
    finally:
        for store in stores.values():
            await store.aclose()


def _report(title: str, figures: dict[str, _Figures], target_ms: float) -> None:
    def ms(values: list[float]) -> str:
        return (
            f"{statistics.median(values) * 1000:.0f} ms "
            f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"
        )

    print(title, flush=True)
    for name, figs in figures.items():
        median = statistics.median(figs.apply) * 1000
        verdict = "ok" if median < target_ms else "OVER TARGET"
        print(
            f"  {name:8} apply {ms(figs.apply)}, servers in scripts "
            f"{statistics.median(figs.server) * 1000:.0f} ms; target < {target_ms:.0f} ms: "
            f"{verdict}; read {ms(figs.read)}"
        )
    if "baseline" in figures:
        new, old = figures["new"], figures["baseline"]
        for what, a, b in (("apply", new.apply, old.apply), ("read", new.read, old.read)):
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            print(
                f"  ratio new / baseline, {what}: median {statistics.median(ratios):.3f} "
                f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
            )
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    args = parser.parse_args()
    baseline = None if args.baseline == "none" else _baseline_module(args.baseline)
    with RedisServer() as server:
        single = asyncio.run(_measure(server.url, [server], args.configs, args.runs, baseline))
    _report(f"Redis, apply and read of {args.configs:,} configs", single, 100)
    with RedisClusterServers() as cluster:
        clustered = asyncio.run(
            _measure(cluster.url, list(cluster.nodes), args.configs, args.runs, baseline)
        )
    _report(f"Redis Cluster (3 masters), apply and read of {args.configs:,}", clustered, 200)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
