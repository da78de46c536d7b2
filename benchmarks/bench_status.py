"""``otel-llm-quota status`` on a store of 10,000 configs (issue 9: under 1 s to first output).

Each sample is a real ``python -m otel_llm_quota status --store URL`` subprocess, its output a
pipe read as it comes: the time to its first byte, to its first config row, and to its end; and
``status --json`` to its end. Baselines measured in the same rounds (interleaved, so machine
noise weighs on every case alike; medians):

- **start-up**: ``python -c "import otel_llm_quota.cli"``: the interpreter and the command's
  imports, what no store size changes;
- **bare read**: a fresh interpreter that opens the store and reads every config once
  (``store.config_ids()`` then ``store.read()``), printing the count: what any reader of the
  store pays.

The store is written first by a manager (10,000 configs, one in two with a weekly limit and
thresholds, every one with usage). SQLite in a temporary directory; one Redis started with the
tests' helper (tests/_redis.py; needs ``redis-server``: ``make system-deps``), skipped when it is
not installed unless ``--store`` names the stores.

``--before DIR`` adds the command of another checkout (a ``git archive`` of an older commit), run
in the same rounds on the same store.

    .venv/bin/python benchmarks/bench_status.py [--configs 10000] [--runs 5]
        [--store sqlite|redis ...] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from otel_llm_quota import LLMProviderManager  # noqa: E402

TARGET_SECONDS = 1.0

_BARE_READ = """
import asyncio, sys
from otel_llm_quota.stores import open_store
async def main():
    store = open_store(sys.argv[1])
    ids = await store.config_ids()
    syncs = await store.read([(cid, 0) for cid in ids])
    await store.aclose()
    print(len(syncs))
asyncio.run(main())
"""


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FORCE_COLOR"))}
    env["COLUMNS"] = "160"
    return env


def write_store(url: str, configs: int) -> None:
    """``configs`` configs as apps would leave them: half with a weekly limit, all with usage."""
    manager = LLMProviderManager(store=url, flush_interval_seconds=3600, max_configs=2 * configs)
    try:
        for i in range(configs):
            cid = f"cfg-{i:05d}"
            if i % 2 == 0:
                manager.set_quota_limit_sync(cid, 100_000 + i, thresholds=(50, 90), period="week")
            manager.record_usage(
                cid, provider="openai", input_tokens=(i * 37) % 120_000, output_tokens=5
            )
        assert manager.flush(300), "the store did not take the configs"
    finally:
        manager.close()


def streamed(args: list[str], row_prefix: bytes, cwd: Path = ROOT) -> tuple[float, float, float]:
    """(seconds to the first byte of stdout, to the first line starting (after blanks) with
    ``row_prefix``, to the end) of one subprocess run in ``cwd`` (its package comes first)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=_environment(), cwd=cwd)
    assert proc.stdout is not None
    first_byte = first_row = None
    for line in iter(proc.stdout.readline, b""):
        now = time.perf_counter()
        if first_byte is None:
            first_byte = now
        if first_row is None and line.lstrip().startswith(row_prefix):
            first_row = now
    proc.wait()
    end = time.perf_counter()
    assert proc.returncode == 0, args
    assert first_byte is not None, "nothing printed"
    assert first_row is not None, "no config row printed"
    return first_byte - start, first_row - start, end - start


def total(args: list[str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, env=_environment(), cwd=cwd, check=True)
    return time.perf_counter() - start


def bench(url: str, runs: int, before: Path | None = None) -> dict[str, float]:
    python = sys.executable
    status = [python, "-m", "otel_llm_quota", "status", "--store", url]
    cases = {
        "start-up": lambda: total([python, "-c", "import otel_llm_quota.cli"]),
        "bare read": lambda: total([python, "-c", _BARE_READ, url]),
        "status --json": lambda: total([*status, "--json"]),
    }
    if before is not None:
        cases["before: status --json"] = lambda: total([*status, "--json"], before)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    table: dict[str, list[float]] = {"first byte": [], "first row": [], "table end": []}
    if before is not None:
        table.update({"before: first row": [], "before: table end": []})
    for case in cases.values():  # warm-up: the OS caches the files, .pyc are written
        case()
    streamed(status, b"cfg-")
    for _ in range(runs):
        for name, case in cases.items():
            samples[name].append(case())
        byte, row, end = streamed(status, b"cfg-")
        table["first byte"].append(byte)
        table["first row"].append(row)
        table["table end"].append(end)
        if before is not None:
            _, row, end = streamed(status, b"cfg-", before)
            table["before: first row"].append(row)
            table["before: table end"].append(end)
    samples.update(table)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="samples per case (default 5)")
    parser.add_argument("--store", action="append", choices=("sqlite", "redis"))
    parser.add_argument(
        "--before", type=Path, help="another checkout (git archive) to measure in the same rounds"
    )
    args = parser.parse_args()
    kinds = args.store or ["sqlite"] + (["redis"] if shutil.which("redis-server") else [])
    status = 0
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        for kind in kinds:
            server = None
            if kind == "redis":
                from _redis import RedisServer

                server = RedisServer().start()
                url = server.url
            else:
                url = f"sqlite:///{Path(tmp) / 'quota.db'}"
            try:
                write_store(url, args.configs)
                figures = bench(url, args.runs, args.before)
            finally:
                if server is not None:
                    server.stop()
            start_up, bare = figures["start-up"], figures["bare read"]
            print(f"{kind}, {args.configs:,} configs, medians of {args.runs} interleaved runs:")
            for name, seconds in figures.items():
                ratios = ""
                if name not in ("start-up", "bare read"):
                    ratios = f"   {seconds / start_up:5.2f}x start-up   {seconds / bare:5.2f}x read"
                print(f"  {name:<16} {seconds * 1000:8.0f} ms{ratios}")
            if figures["first row"] > TARGET_SECONDS:
                print(f"  first row over the {TARGET_SECONDS:.0f} s target")
                status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
