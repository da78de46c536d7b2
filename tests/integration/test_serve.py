"""``otel-llm-quota serve`` as a real process: the SDK's real OTLP/HTTP exporter sending to it,
hostile requests against it, and two replicas sharing one Redis store.

Every wait is on something the process tells (its ``listening on`` line, ``/healthz``), polled
with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import gzip
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import require_module

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
TIMEOUT_SECONDS = 60.0
PROTOBUF = "application/x-protobuf"


class Serve:
    """One ``otel-llm-quota serve --port 0`` process."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_LLM_QUOTA_")}
        full_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), str(APPS), os.environ.get("PYTHONPATH")])
        )
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_llm_quota", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()
        try:
            line = self.lines.get(timeout=TIMEOUT_SECONDS)
        except queue.Empty:
            line = None
        if line is None or not line.startswith("listening on "):
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve did not start: {line!r} {''.join(self.stderr)[-2000:]}")
        self.url = line.split()[-1]

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.lines.put(line.strip())
            else:
                self.stderr.append(line)
        if is_stdout:
            self.lines.put(None)

    def post(self, body: bytes, content_type: str = PROTOBUF, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.url + "/v1/traces",
            data=body,
            headers={"Content-Type": content_type, **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def healthz(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/healthz", timeout=TIMEOUT_SECONDS) as response:
            return dict(json.loads(response.read()))

    def tokens(self) -> int:
        """Sum of ``llm_quota_tokens_total`` over every series of ``/metrics``."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url + "/metrics", timeout=TIMEOUT_SECONDS) as response:
            text = response.read().decode()
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "llm_quota_tokens_total"
            )
        )

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def wait_until(self, what: str, check: Any) -> None:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not check():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{what}: not reached; {''.join(self.stderr)[-2000:]}")
            time.sleep(0.05)  # polling the process's own report, with a deadline


@pytest.fixture
def servers() -> Iterator[list[Serve]]:
    made: list[Serve] = []
    yield made
    for server in made:
        if server.proc.poll() is None:
            server.stop()


def exporter_provider(url: str, **exporter_options: Any) -> Any:
    """A TracerProvider exporting to ``url`` through the SDK's real OTLP/HTTP exporter."""
    require_module("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "serve-test"}))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", **exporter_options)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=20_000, max_export_batch_size=512)
    )
    return provider


def llm_span(tracer: Any, n: int, inp: int, out: int, context: Any = None, **extra: Any) -> Any:
    return tracer.start_span(
        "chat gpt-4o",
        context=context,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.id": f"chatcmpl-{n}",
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            **extra,
        },
    )


def store_status(url: str) -> dict[str, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "otel_llm_quota", "status", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    return {row["config_id"]: row for row in json.loads(result.stdout)}


def test_real_exporter_spans_are_counted_exactly_and_flushed_on_sigterm(
    servers: list[Serve], tmp_path: Path
) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.trace import set_span_in_context

    store = f"sqlite:///{tmp_path}/quota.db"
    server = Serve("--store", store)
    servers.append(server)
    provider = exporter_provider(server.url, compression=Compression.Gzip)
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    expected = 0
    for n in range(1500):
        # An outer span repeating the usage of its child: the innermost counts, once.
        outer = llm_span(tracer, -n - 1, 10 + n % 7, 3)
        inner = llm_span(tracer, n, 10 + n % 7, 3, context=set_span_in_context(outer))
        inner.end()
        outer.end()
        tracer.start_span("GET /", attributes={"http.method": "GET"}).end()
        expected += 13 + n % 7
    assert provider.force_flush(int(TIMEOUT_SECONDS * 1000))
    provider.shutdown()
    health = server.healthz()
    assert health["status"] == "ok"
    assert health["spans"] == 4500
    assert (health["rejected_spans"], health["refused_requests"]) == (0, 0)
    assert server.tokens() == expected
    assert server.stop() == 0  # SIGTERM: a graceful stop
    status = store_status(store)
    assert status["openai"]["total_tokens"] == expected
    assert status["openai"]["total_requests"] == 1500


def _pb_request(specs: list[dict[str, Any]], first_id: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "hostile"
    for n, attrs in enumerate(specs, first_id):
        span = scope_spans.spans.add(
            trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name="chat"
        )
        span.end_time_unix_nano = 1_764_000_000_000_000_000 + n
        for key, value in attrs.items():
            kv = span.attributes.add(key=key)
            if isinstance(value, str):
                kv.value.string_value = value
            else:
                kv.value.int_value = value
    return bytes(request.SerializeToString())


def _gzip_bomb(decompressed_bytes: int) -> bytes:
    """A gzip stream of ``decompressed_bytes`` zeros, built without holding them."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * (1 << 20)
    parts = [deflate.compress(chunk) for _ in range(decompressed_bytes // len(chunk))]
    parts.append(deflate.flush())
    return b"".join(parts)


RSS_BOUND_BYTES = 256 << 20
"""What the service may hold after all the hostile input (measured: about 115 MiB): its default
limits (16 MiB body, 64 MiB decompressed, 8 requests at once) and caps (2,000 configs, 100,000
remembered span ids) keep it there; a bomb inflated in full would be 1 GiB."""


def test_hostile_input_is_answered_per_otlp_and_memory_stays_bounded(
    servers: list[Serve],
) -> None:
    server = Serve()
    servers.append(server)
    valid = 0
    llm = {"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 5}
    good = _pb_request([{**llm, "gen_ai.usage.output_tokens": 1}], first_id=1)
    assert server.post(b"\x0a\xff\xff\xff\xff\x0f garbage")[0] == 400  # malformed protobuf
    assert server.post(good, "text/plain")[0] == 415  # wrong content type
    assert server.post(good[:-3])[0] == 400  # truncated
    assert server.post(good, **{"Content-Encoding": "zstd"})[0] == 415
    bomb = _gzip_bomb(1 << 30)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 2 << 20
    assert server.post(bomb, **{"Content-Encoding": "gzip"})[0] == 413
    truncated_gzip = gzip.compress(good)[:-8]
    assert server.post(truncated_gzip, **{"Content-Encoding": "gzip"})[0] == 400
    assert server.post(b"\x00" * (17 << 20))[0] == 413  # over the 16 MiB body limit
    assert server.post(good)[0] == 200
    valid += 6

    big = "x" * (10 << 20)  # 10 MB attribute values: content, ids, provider
    for n, extra in enumerate(
        [
            {"gen_ai.prompt": big},
            {"gen_ai.response.id": big},
            {"llm.quota.config_id": big},
            {"gen_ai.provider.name": big},
            {"gen_ai.request.model": big},
        ],
        10,
    ):
        status, _ = server.post(_pb_request([{**llm, **extra}], first_id=n))
        assert status == 200
        valid += 5

    next_id = 100
    for start in range(0, 100_000, 5_000):  # 100,000 distinct config ids
        specs = [{**llm, "llm.quota.config_id": f"tenant-{i}"} for i in range(start, start + 5_000)]
        assert server.post(_pb_request(specs, first_id=next_id))[0] == 200
        next_id += len(specs)
        valid += 5 * len(specs)

    health = server.healthz()
    assert health["status"] == "ok"
    assert health["configs"] <= 2_001  # max_configs (default 2,000) plus the overflow config
    assert health["rejected_spans"] == 0
    assert server.tokens() == valid
    assert server.rss_bytes() < RSS_BOUND_BYTES
    assert server.stop() == 0


def test_two_replicas_on_one_redis_store_count_exact_totals_and_send_one_alert(
    servers: list[Serve], redis_url: str, tmp_path: Path
) -> None:
    alerts = tmp_path / "alerts.jsonl"
    config = tmp_path / "quotas.json"
    config.write_text(
        json.dumps(
            {
                "monitor": {"interval_seconds": 0.2},
                "quotas": [{"config_id": "openai", "limit": 10_000, "thresholds": [50]}],
                "handlers": [{"type": "alert_file:make_handler", "path": str(alerts)}],
            }
        )
    )
    env = {"OTEL_LLM_QUOTA_FLUSH_INTERVAL_SECONDS": "0.2"}
    fleet = [Serve("--store", redis_url, "--config", str(config), env=env) for _ in range(2)]
    servers.extend(fleet)
    # 3,000 tokens each: 30% alone, 60% together, so only the fleet's total crosses 50%.
    for index, server in enumerate(fleet):
        provider = exporter_provider(server.url)
        tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
        for n in range(30):
            llm_span(tracer, index * 1000 + n, 80, 20).end()
        assert provider.force_flush(int(TIMEOUT_SECONDS * 1000))
        provider.shutdown()
    for server in fleet:
        server.wait_until("alert firing", lambda s=server: s.healthz()["firing_alerts"] == 1)
    lines = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [(a["config_id"], a["threshold"], a["state"]) for a in lines] == [
        ("openai", 50.0, "firing")
    ]
    for server in fleet:
        assert server.stop() == 0
    status = store_status(redis_url)
    assert status["openai"]["total_tokens"] == 6_000
    assert status["openai"]["total_requests"] == 60


def test_the_logging_handler_and_the_library_log_reach_stderr(
    servers: list[Serve], tmp_path: Path
) -> None:
    # A service's log is where the `logging` alert handler writes: the CLI must not silence it
    # for `serve` as it does for the one-shot commands.
    server = Serve(
        "--store",
        f"sqlite:///{tmp_path}/quota.db",
        env={"OTEL_LLM_QUOTA_LIMITS": "openai=700", "OTEL_LLM_QUOTA_ALERT_HANDLERS": "logging"},
    )
    servers.append(server)
    body = _pb_request(
        [
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 400,
                "gen_ai.usage.output_tokens": 200,
            }
        ],
        first_id=1,
    )
    assert server.post(body)[0] == 200
    server.wait_until(
        "the alert's log line",
        lambda: any("LLM quota openai crossed 80%" in line for line in server.stderr),
    )
    assert server.stop() == 0
