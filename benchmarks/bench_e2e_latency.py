"""End-to-end latency through the quota service (issue 11): from an app's export of a GenAI span
to the Collector until its usage is visible in the store, as ``otel-llm-quota status`` reads it.

Run: ``.venv/bin/python benchmarks/bench_e2e_latency.py [--samples 100] [--runs 3]
[--store sqlite|redis] [--batch-timeout 1s]``. Needs the Collector built by ``make collector``
(and ``redis-server`` for ``--store redis``).

The real parts, on 127.0.0.1: the Collector running the shipped otelcol-config.yaml with
otelcol-quota-service.yaml as they are (default batch settings of the quota pipeline: 200 ms),
``otel-llm-quota serve`` with its default flush interval (1 s), and a reader that does what
``status`` does: an ``LLMProviderManager`` on the same store, whose ``flush()`` reads the
fleet's totals. Each sample ends one span with one input token under a
``SimpleSpanProcessor`` (the SDK's OTLP/HTTP exporter sends it to the Collector inside
``end()``), then polls the store every 5 ms until the total has grown by one. A random pause
(0 to 1 s) between samples spreads them over the batch and flush timers' phases, as real
traffic is. Prints p50/p90/p99/max of each run and the medians of the runs' figures; the bound
the timers set is 200 ms + 1 s (the batch timeout plus the flush interval), plus the work.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from otel_llm_quota import LLMProviderManager  # noqa: E402

COLLECTOR = ROOT / ".tools" / "otelcol-llm-quota" / "otelcol-llm-quota"
CONFIG_DIR = ROOT / "collector-config"
CONFIG_ID = "latency"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Sink(BaseHTTPRequestHandler):
    """The user's tracing backend: takes every export, keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def wait_http(url: str, proc: subprocess.Popen[bytes], deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {deadline} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def one_run(
    store_url: str, samples: int, workdir: Path, batch_timeout: str | None = None
) -> list[float]:
    """Start the Collector and the service, take ``samples`` latencies, stop them.
    ``batch_timeout`` overrides the quota pipeline's batch timeout (an overlay of its own)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, name="backend-sink", daemon=True).start()
    serve_port, http, grpc, prom, health, telemetry = (free_port() for _ in range(6))
    collector_env = {
        **os.environ,
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{prom}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
        "OTELCOL_TELEMETRY_PORT": str(telemetry),
        "OTELCOL_LOG_LEVEL": "warn",
        "OTELCOL_QUOTA_SERVICE_ENDPOINT": f"http://127.0.0.1:{serve_port}",
        "OTELCOL_TRACES_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
    }
    config = workdir / "quota-service.yaml"
    config.write_text(f"quotas:\n  - {{config_id: {CONFIG_ID}, limit: 1000000000}}\n")
    configs = [CONFIG_DIR / "otelcol-config.yaml", CONFIG_DIR / "otelcol-quota-service.yaml"]
    if batch_timeout is not None:
        configs.append(workdir / "batch-timeout.yaml")
        configs[-1].write_text(
            f"processors:\n  batch/quota_service:\n    timeout: {batch_timeout}\n"
        )
    with (workdir / "otelcol.log").open("wb") as log:
        collector = subprocess.Popen(
            [str(COLLECTOR), *(f"--config={c}" for c in configs)],
            env=collector_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    with (workdir / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [
                *(sys.executable, "-m", "otel_llm_quota", "serve", "--port", str(serve_port)),
                *("--store", store_url, "--config", str(config), "--no-metrics"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    reader = None
    provider = None
    try:
        wait_http(f"http://127.0.0.1:{health}/", collector)
        wait_http(f"http://127.0.0.1:{serve_port}/healthz", serve)
        reader = LLMProviderManager(store=store_url, flush_interval_seconds=3600)
        provider = TracerProvider(resource=Resource.create({"service.name": "latency-app"}))
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("bench")

        def total() -> int:
            assert reader is not None
            reader.flush()
            quota = reader.ledger.get(CONFIG_ID)
            return 0 if quota is None else quota.total_tokens

        seen = total()
        delays: list[float] = []
        rng = random.Random(11)
        for i in range(samples + 3):  # the first three warm up
            time.sleep(rng.uniform(0, 1))
            span = tracer.start_span("chat gpt-4o")
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.response.id": f"resp-{time.time_ns()}",
                    "gen_ai.usage.input_tokens": 1,
                    "llm.quota.config_id": CONFIG_ID,
                }
            )
            start = time.perf_counter()
            span.end()  # exported to the Collector here
            deadline = start + 30
            while (now_total := total()) <= seen:
                if time.perf_counter() > deadline:
                    raise RuntimeError("a span's usage never became visible")
                time.sleep(0.005)
            delay = time.perf_counter() - start
            seen = now_total
            if i >= 3:
                delays.append(delay)
        return delays
    finally:
        if provider is not None:
            provider.shutdown()
        if reader is not None:
            reader.close()
        stop(serve)
        stop(collector)
        sink.shutdown()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument(
        "--batch-timeout",
        metavar="DURATION",
        help="the quota pipeline's batch timeout (e.g. 1s); default: the shipped file's",
    )
    args = parser.parse_args()
    if not COLLECTOR.exists():
        print(f"no Collector at {COLLECTOR}: run `make collector`", file=sys.stderr)
        return 1
    figures: dict[str, list[float]] = {"p50": [], "p90": [], "p99": [], "max": []}
    redis = None
    if args.store == "redis":
        from _redis import RedisServer  # tests/_redis.py

        redis = RedisServer()
        redis.__enter__()
    try:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                if redis is not None:
                    redis.flushall()
                    url = redis.url
                else:
                    url = f"sqlite:///{tmp}/quota.db"
                delays = one_run(url, args.samples, Path(tmp), args.batch_timeout)
            row = {
                "p50": statistics.median(delays),
                "p90": percentile(delays, 0.90),
                "p99": percentile(delays, 0.99),
                "max": max(delays),
            }
            for key, value in row.items():
                figures[key].append(value)
            shown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in row.items())
            label = f"{args.store}, batch timeout {args.batch_timeout or 'shipped'}"
            print(f"run {run + 1} ({label}, {len(delays)} spans): {shown}", flush=True)
    finally:
        if redis is not None:
            redis.__exit__(None, None, None)
    medians = ", ".join(f"{k} {statistics.median(v) * 1000:.0f} ms" for k, v in figures.items())
    print(f"median of {args.runs} runs: {medians}  (target: p99 < 2000 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
