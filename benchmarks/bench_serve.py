"""Ingest speed of ``otel-llm-quota serve``: LLM spans per second per service process.

    .venv/bin/python benchmarks/bench_serve.py [--rounds 9] [--batches 40] [--runs 3]

A real ``otel-llm-quota serve`` process (no store, metrics on) is sent OTLP/HTTP protobuf
requests of 512 LLM spans (the attributes openai-v2 sets on a chat span, each span with its own
response id) by a loopback client in this process (``http.client``, one keep-alive connection).
Measured, in interleaved rounds (medians; each ratio is the median of the rounds' ratios):

* **service CPU per span**: the service process's CPU time (user + system, from
  ``/proc/PID/stat``) over the spans it counted; ``1 / that`` is spans per second on one core.
  The wall-clock rate is shown too (the client shares the machine's cores).
* **decode-only per span**, in this process: ``ExportTraceServiceRequest.FromString`` of the
  same bodies and a walk reading every span's ids, end time, status and every attribute's key
  and value: the least any receiver does with ``opentelemetry-proto``.
* **decode + count per span**, in this process: the same bodies through ``OtlpIngest`` (what the
  service does per request, without HTTP).

Targets (issue 11): at least 20,000 spans/s on one core; service CPU per span at most 2x
decode-only.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otel_llm_quota import LLMProviderManager, QuotaSpanProcessor  # noqa: E402
from otel_llm_quota.serve import OtlpIngest  # noqa: E402

BATCH = 512
_TAG = b"QZX"  # in every trace id and response id: replaced per round so no span repeats
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def build_body(batch_index: int) -> bytes:
    """One request of BATCH spans, as an openai-v2 chat span looks (12 attributes)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, value in (("service.name", "bench-app"), ("telemetry.sdk.language", "python")):
        resource_spans.resource.attributes.add(key=key).value.string_value = value
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai_v2"
    scope_spans.scope.version = "2.4b0"
    for i in range(BATCH):
        n = batch_index * BATCH + i
        span = scope_spans.spans.add(
            trace_id=_TAG + b"\x00" + n.to_bytes(12, "big"),
            span_id=(n + 1).to_bytes(8, "big"),
            name="chat gpt-4o",
            kind=3,
            start_time_unix_nano=1_764_000_000_000_000_000 + n * 1000,
            end_time_unix_nano=1_764_000_000_000_000_000 + n * 1000 + 900,
        )
        attrs = span.attributes
        for key, value in (
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.system", "openai"),
            ("gen_ai.request.model", "gpt-4o"),
            ("gen_ai.response.model", "gpt-4o-2024-08-06"),
            ("gen_ai.response.id", f"chatcmpl-{_TAG.decode()}0{n:012d}"),
            ("server.address", "api.openai.com"),
            ("gen_ai.openai.response.service_tier", "default"),
        ):
            attrs.add(key=key).value.string_value = value
        for key, number in (
            ("gen_ai.usage.input_tokens", 100 + i % 50),
            ("gen_ai.usage.output_tokens", 20 + i % 7),
            ("server.port", 443),
        ):
            attrs.add(key=key).value.int_value = number
        attrs.add(key="gen_ai.request.temperature").value.double_value = 0.2
        reasons = attrs.add(key="gen_ai.response.finish_reasons").value.array_value
        reasons.values.add().string_value = "stop"
    return bytes(request.SerializeToString())


def retag(bodies: list[bytes], round_number: int) -> list[bytes]:
    """The same bodies with new trace ids and response ids (same lengths)."""
    new = _TAG[:2] + bytes([ord("a") + round_number % 26])
    return [body.replace(_TAG, new) for body in bodies]


def decode_only(bodies: list[bytes]) -> int:
    seen = 0
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.trace_id, span.span_id, span.parent_span_id  # noqa: B018
                    span.end_time_unix_nano, span.status.code  # noqa: B018
                    for kv in span.attributes:
                        kv.key, kv.value.WhichOneof("value")
                    seen += 1
    return seen


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


class Server:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_LLM_QUOTA_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_llm_quota", "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on http://"):
            raise RuntimeError(f"serve did not start: {line!r}")
        host, port = line.rsplit("/", 1)[-1].rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port))

    def post(self, body: bytes) -> None:
        self.connection.request(
            "POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"}
        )
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200 or answer:
            raise RuntimeError(f"serve answered {response.status} {answer!r}")

    def close(self) -> None:
        self.connection.close()
        self.proc.terminate()
        self.proc.wait(30)


def run_once(batches: int, rounds: int) -> dict[str, float]:
    template = [build_body(b) for b in range(batches)]
    spans = batches * BATCH
    server = Server()
    manager = LLMProviderManager(store=False, metrics=False)
    ingest = OtlpIngest(QuotaSpanProcessor(manager))
    samples: dict[str, list[float]] = {
        "cpu": [],
        "wall": [],
        "decode": [],
        "ingest": [],
        "ratio": [],
        "ingest_ratio": [],
    }
    try:
        for body in retag(template, 25)[:5]:  # warm-up (the tag of round 25 is not used below)
            server.post(body)
        ingest.ingest(ExportTraceServiceRequest.FromString(template[0]))
        gc.collect()
        for round_number in range(rounds):
            bodies = retag(template, round_number)
            cpu = process_cpu_seconds(server.proc.pid)
            start = time.perf_counter()
            for body in bodies:
                server.post(body)
            samples["wall"].append((time.perf_counter() - start) / spans)
            samples["cpu"].append((process_cpu_seconds(server.proc.pid) - cpu) / spans)

            start = time.process_time()
            assert decode_only(bodies) == spans
            samples["decode"].append((time.process_time() - start) / spans)

            start = time.process_time()
            for body in bodies:
                ingest.ingest(ExportTraceServiceRequest.FromString(body))
            samples["ingest"].append((time.process_time() - start) / spans)
            # Ratios per round (each against the decode of the same round), then their median:
            # the load of the shared machine drifts between rounds more than within one.
            samples["ratio"].append(samples["cpu"][-1] / samples["decode"][-1])
            samples["ingest_ratio"].append(samples["ingest"][-1] / samples["decode"][-1])
        counted = ingest.processor.stats
        assert counted.duplicate_spans == 0, counted
    finally:
        server.close()
        manager.close()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="requests of 512 spans per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    failed = False
    print(f"{'run':>3}  {'measure':<52} {'value':>12}  target")
    for run in range(1, args.runs + 1):
        r = run_once(args.batches, args.rounds)
        rate = 1 / r["cpu"]
        ratio = r["ratio"]
        rows = [
            ("service CPU per span (us)", f"{r['cpu'] * 1e6:.2f}", None),
            ("service spans/s on one core (1 / CPU per span)", f"{rate:,.0f}", rate >= 20_000),
            ("service spans/s wall clock (client on the same host)", f"{1 / r['wall']:,.0f}", None),
            ("decode-only per span, opentelemetry-proto (us)", f"{r['decode'] * 1e6:.2f}", None),
            ("decode + count per span, OtlpIngest (us)", f"{r['ingest'] * 1e6:.2f}", None),
            ("ratio decode + count / decode-only", f"{r['ingest_ratio']:.2f}x", None),
            ("ratio service CPU / decode-only", f"{ratio:.2f}x", ratio <= 2.0),
        ]
        for name, value, ok in rows:
            mark = ""
            if ok is not None:
                failed |= not ok
                target = ">= 20,000" if "on one core" in name else "<= 2.00x"
                mark = f"{target} {'ok' if ok else 'MISSED'}"
            print(f"{run:>3}  {name:<52} {value:>12}  {mark}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
