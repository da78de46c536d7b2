"""One ``RedisStore.apply`` of a flush with 10,000 dirty configs, on one Redis and on a 3-master
Redis Cluster (targets: < 100 ms and < 200 ms, absolute; median of 5 flushes after a warm-up).

Starts its own servers on 127.0.0.1 with the tests' helpers (tests/_redis.py; needs
redis-server and redis-cli: ``make system-deps``). Each timed flush is a new batch (a new seq)
of the same 10,000 configs, so every delta is applied, as in a steady flusher; the first (warm-up)
flush creates the keys and loads the script. Besides the wall time of ``apply`` it prints the
time the servers spent in the scripts (``INFO commandstats``), the rest being the client's
(redis-py packing commands and parsing replies, asyncio) and the network.

    .venv/bin/python benchmarks/bench_redis_store.py [--configs 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _redis import RedisClusterServers, RedisServer

from otel_llm_quota.stores import Delta, FlushBatch, Window
from otel_llm_quota.stores._redis import RedisStore

WINDOW = Window(1_700_000_000, 0, 2 * 86400)


def _script_seconds(servers: list[RedisServer]) -> float:
    """Seconds the servers spent running EVALSHA since the last call (then reset)."""
    total = 0.0
    for server in servers:
        with server.client() as client:
            stats = client.info("commandstats")
            total += stats.get("cmdstat_evalsha", {}).get("usec", 0) / 1e6
            client.config_resetstat()
    return total


async def _measure(
    url: str, servers: list[RedisServer], configs: int, runs: int
) -> tuple[float, float, float, float]:
    store = RedisStore(url)
    try:
        ids = [f"tenant-{n}/openai-gpt-4o" for n in range(configs)]

        def batch(seq: int) -> FlushBatch:
            return FlushBatch(
                "bench-writer",
                seq,
                tuple(Delta(i, WINDOW, (1, 0, 120 + seq, 80, 0), "openai") for i in ids),
            )

        await store.apply(batch(1))  # warm-up: keys, script cache, connections
        samples, server = [], []
        for seq in range(2, runs + 2):
            b = batch(seq)
            _script_seconds(servers)
            start = time.perf_counter()
            synced = await store.apply(b)
            samples.append(time.perf_counter() - start)
            server.append(_script_seconds(servers))
            assert len(synced) == configs
            assert synced[0].window_counts[0] == seq
        return (
            statistics.median(samples),
            min(samples),
            max(samples),
            statistics.median(server),
        )
    finally:
        await store.aclose()


def _row(name: str, figures: tuple[float, float, float, float], target_ms: float) -> str:
    median, low, high, server = (f * 1000 for f in figures)
    verdict = "ok" if median < target_ms else "OVER TARGET"
    return (
        f"{name}: median {median:.0f} ms (min {low:.0f}, max {high:.0f}), of which the "
        f"servers ran scripts for {server:.0f} ms; target < {target_ms:.0f} ms: {verdict}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with RedisServer() as server:
        single = asyncio.run(_measure(server.url, [server], args.configs, args.runs))
    print(_row(f"Redis, apply of {args.configs:,} configs", single, 100), flush=True)
    with RedisClusterServers() as cluster:
        clustered = asyncio.run(_measure(cluster.url, list(cluster.nodes), args.configs, args.runs))
    print(_row(f"Redis Cluster (3 masters), apply of {args.configs:,}", clustered, 200))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
