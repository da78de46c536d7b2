"""Fleet benchmarks (stores issue), against real stores started here on 127.0.0.1.

Run: ``.venv/bin/python benchmarks/bench_fleet.py [--only flush|visibility|sustained]``.
Needs ``redis-server`` and ``redis-cli`` (``make system-deps``) for the Redis parts.

1. **flush**: one ``manager.flush()`` with 10,000 dirty configs (take the deltas, apply them,
   fold the fleet totals back, refresh) per store; median of 5. Targets: Redis < 100 ms, Redis
   Cluster < 200 ms, SQLite < 200 ms.
2. **visibility**: process A records one token at a time; process B watches its own status;
   the delay from A's record to B seeing it, over 1,000 samples, flush interval 0.1 s. Target:
   p99 under 2 flush intervals.
3. **sustained**: 4 processes offering 250,000 records/s each for 10 s into one Redis: exact
   totals, and the Redis commands/s and CPU that cost (merging per config keeps it at about one
   script per config per flush, not per record).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from otel_llm_quota import LLMProviderManager  # noqa: E402

CONFIGS = 10_000


def bench_flush(url: str, runs: int = 5) -> tuple[float, float]:
    """(median seconds of a flush of 10,000 dirty configs, of a refresh-only flush)."""
    manager = LLMProviderManager(store=url, flush_interval_seconds=3600, max_configs=2 * CONFIGS)
    try:
        ids = [f"cfg-{i:05d}" for i in range(CONFIGS)]
        for cid in ids:
            manager.record_usage(cid, provider="openai", input_tokens=1)
        assert manager.flush(120)  # creates them all
        dirty: list[float] = []
        idle: list[float] = []
        for _ in range(runs):
            for cid in ids:
                manager.record_usage(cid, input_tokens=3, output_tokens=1)
            start = time.perf_counter()
            assert manager.flush(120)
            dirty.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert manager.flush(120)
            idle.append(time.perf_counter() - start)
        quota = manager.ledger.get(ids[-1])
        assert quota is not None
        assert quota.total_tokens == 1 + 4 * runs, quota
        return statistics.median(dirty), statistics.median(idle)
    finally:
        manager.close()


def recorder_main(args: argparse.Namespace) -> None:
    """--role recorder: record paced usage into one config, print how many when done."""
    manager = LLMProviderManager(store=args.url, flush_interval_seconds=args.interval)
    record = manager.record_usage
    sent = 0
    start = time.monotonic()
    end = start + args.seconds
    chunk = 1000
    while True:
        now = time.monotonic()
        if now >= end:
            break
        target = (now - start) * args.rate
        if sent < target:
            for _ in range(chunk):
                record("sustained", input_tokens=1)
            sent += chunk
        else:
            time.sleep(min((sent - target) / args.rate, 0.01))  # pacing the offered load
    manager.close()  # final flush
    print(json.dumps({"sent": sent}), flush=True)


def watcher_main(args: argparse.Namespace) -> None:
    """--role watcher: print the wall time at which each new total is first seen."""
    manager = LLMProviderManager(store=args.url, flush_interval_seconds=args.interval)
    last = -1
    print("ready", flush=True)
    seen = 0
    while seen < args.samples:
        quota = manager.ledger.get("visibility")
        total = 0 if quota is None else quota.total_tokens
        if total != last:
            if last >= 0:
                print(f"{total} {time.time():.6f}", flush=True)
                seen += 1
            last = total
        time.sleep(0.0005)  # a status poll loop; the latency measured is far above it
    manager.close()


def bench_visibility(url: str, samples: int, interval: float) -> list[float]:
    watcher = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "watcher",
            "--url",
            url,
            "--samples",
            str(samples),
            "--interval",
            str(interval),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout is not None
    assert watcher.stdout.readline().strip() == "ready"
    manager = LLMProviderManager(store=url, flush_interval_seconds=interval)
    delays: list[float] = []
    try:
        for i in range(samples):
            at = time.time()
            manager.record_usage("visibility", input_tokens=1)
            total, seen_at = watcher.stdout.readline().split()
            delays.append(float(seen_at) - at)
            del total, i
    finally:
        manager.close()
        watcher.wait(60)
    return delays


def bench_sustained(server: object, url: str, processes: int, rate: float, seconds: float) -> None:
    client = server.client()  # type: ignore[attr-defined]
    before = client.info("stats")["total_commands_processed"]
    cpu0 = client.info("cpu")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "recorder",
                "--url",
                url,
                "--rate",
                str(rate),
                "--seconds",
                str(seconds),
                "--interval",
                "1.0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    sent = 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        sent += json.loads(out.strip().splitlines()[-1])["sent"]
    after = client.info("stats")["total_commands_processed"]
    cpu1 = client.info("cpu")
    used = (cpu1["used_cpu_sys"] + cpu1["used_cpu_user"]) - (
        cpu0["used_cpu_sys"] + cpu0["used_cpu_user"]
    )
    check = LLMProviderManager(store=url)
    quota = check.ledger.get("sustained")
    check.close()
    stored = 0 if quota is None else quota.total_tokens
    print(
        f"sustained: {processes} processes x {rate:,.0f} records/s offered for {seconds:.0f} s: "
        f"{sent:,} recorded ({sent / seconds:,.0f}/s achieved), {stored:,} in the store "
        f"({'exact' if stored == sent else 'MISMATCH'}); Redis: "
        f"{(after - before) / seconds:,.1f} commands/s, {used / seconds * 100:.1f}% of a core"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="main")
    parser.add_argument("--url", default="")
    parser.add_argument("--rate", type=float, default=250_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    if args.role == "recorder":
        recorder_main(args)
        return
    if args.role == "watcher":
        watcher_main(args)
        return

    from _redis import RedisClusterServers, RedisServer

    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        cluster = RedisClusterServers()
        cluster.start()
        try:
            if args.only in ("", "flush"):
                for name, url in (
                    ("SQLite", f"sqlite:///{tmp}/bench.db"),
                    ("Redis", server.url),
                    ("Redis Cluster (3 masters)", cluster.url),
                ):
                    dirty, idle = bench_flush(url)
                    print(
                        f"flush of {CONFIGS:,} dirty configs, {name}: {dirty * 1000:.0f} ms "
                        f"(a refresh with nothing dirty: {idle * 1000:.0f} ms)"
                    )
            if args.only in ("", "visibility"):
                server.flushall()
                delays = sorted(bench_visibility(server.url, args.samples, args.interval))
                p50 = delays[len(delays) // 2]
                p99 = delays[int(len(delays) * 0.99) - 1]
                print(
                    f"visibility A -> B over Redis, flush interval {args.interval} s, "
                    f"{len(delays)} samples: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                    f"= {p99 / args.interval:.2f} intervals (target < 2), "
                    f"max {delays[-1] * 1000:.0f} ms"
                )
            if args.only in ("", "sustained"):
                server.flushall()
                bench_sustained(server, server.url, 4, args.rate, args.seconds)
        finally:
            cluster.cleanup()


if __name__ == "__main__":
    main()
