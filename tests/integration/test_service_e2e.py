"""End to end through the quota service: apps with the real OpenTelemetry SDKs (Python, and
Node.js with the official JS SDK) export spans over OTLP/HTTP to the real Collector built by
``make collector``, running the shipped otelcol-config.yaml with otelcol-quota-service.yaml;
it sends the GenAI spans to ``otel-llm-quota serve`` (a real process), whose quota state in a
store is read back with ``otel-llm-quota status --json``, as a user would, and its own
``GET /metrics`` by a real Prometheus. The service's ``otel_log`` alert handler exports its
record over OTLP to the same Collector, read back from its file exporter
(otelcol-events-file.yaml). Two replicas on one Redis store: tests/integration/test_serve.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from ._peers import (
    RecordingServer,
    poll,
    require_http_peers,
    running_prometheus,
    running_server,
    wait_for_values,
)
from .conftest import free_port, require_binary, require_module
from .test_collector import started_collector
from .test_collector_events import attributes, log_records

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "otel_llm_quota"]
NODE_APP_DIR = Path(__file__).parent / "node"


def require_serve() -> None:
    require_module("aiohttp", "install the 'serve' extra")
    require_module("opentelemetry.proto", "install the 'serve' extra")
    require_module("opentelemetry.exporter.otlp.proto.http", "install the 'test' extra")


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    """The service's config file (the same format as OTEL_LLM_QUOTA_CONFIG_FILE)."""
    path = tmp_path / "quota-service.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def running_serve(
    tmp_path: Path,
    store: str,
    config: Path,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    name: str = "serve",
) -> AsyncIterator[str]:
    """``otel-llm-quota serve`` on 127.0.0.1 until the block ends (SIGTERM: a graceful stop with
    the final flush, monitor pass and log export); yields its base URL."""
    port = port if port is not None else free_port()
    args = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--store", store, "--config", str(config)]
    url = f"http://127.0.0.1:{port}"
    async with running_server(args, tmp_path / f"{name}.log", f"{url}/healthz", env=env or {}):
        yield url


def quota_status(store: str) -> dict[str, dict[str, Any]]:
    """``otel-llm-quota status --store STORE --json``, by config id."""
    result = subprocess.run(
        [*CLI, "status", "--store", store, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {status["config_id"]: status for status in json.loads(result.stdout)}


def tokens(status: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """(input, output, total) tokens of each config."""
    return {
        cid: (s["input_tokens"], s["output_tokens"], s["total_tokens"]) for cid, s in status.items()
    }


async def wait_for_tokens(
    store: str, expected: dict[str, tuple[int, int, int]], deadline_seconds: float = 60
) -> dict[str, dict[str, Any]]:
    """Poll ``status --json`` until every config holds ``expected``; the status then."""
    last: dict[str, dict[str, Any]] = {}

    async def matches() -> dict[str, dict[str, Any]] | None:
        nonlocal last
        last = await asyncio.to_thread(quota_status, store)
        return last if tokens(last) == expected else None

    try:
        return await poll(matches, deadline_seconds=deadline_seconds, what=f"totals {expected}")
    except AssertionError:
        raise AssertionError(f"expected {expected}, status has {tokens(last)}") from None


@pytest.fixture
async def backend() -> AsyncIterator[RecordingServer]:
    """The user's tracing backend (every span goes there too)."""
    require_http_peers()
    server = await RecordingServer().start()
    yield server
    await server.stop()


def python_app(otlp_http_url: str, service_name: str) -> TracerProvider:
    """An app's TracerProvider as a user sets it up: batched, the real OTLP/HTTP exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=f"{otlp_http_url}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def chat(
    provider: TracerProvider, model: str, attrs: dict[str, Any], input_tokens: int, output: int
) -> int:
    """A GenAI chat span under the app's own request span, as instrumentations write them;
    returns its trace id."""
    from opentelemetry.trace import SpanKind

    tracer = provider.get_tracer("chat-backend")
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT) as span,
    ):
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output,
                **attrs,
            }
        )
        trace_id: int = span.get_span_context().trace_id
    return trace_id


@asynccontextmanager
async def scraping_prometheus(tmp_path: Path, target: str) -> AsyncIterator[str]:
    """A real Prometheus scraping ``target`` (host:port, ``/metrics``) every second."""
    binary = require_binary("prometheus")
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    config = yaml.safe_dump(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "otel-llm-quota-serve", "static_configs": [{"targets": [target]}]}
            ],
        }
    )
    async with running_prometheus(binary, config, workdir) as url:
        yield url


# -- Python app -> Collector -> serve (SQLite), the alert event back through the Collector -------


async def test_python_app_through_the_collector_to_the_service(
    tmp_path: Path, backend: RecordingServer
) -> None:
    require_serve()
    import httpx

    store = f"sqlite:///{tmp_path}/quota.db"
    config = write_config(
        tmp_path,
        {
            "manager": {"cooldown_seconds": 3600},
            "monitor": {"interval_seconds": 0.2},
            "quotas": [
                {"config_id": "openai-prod", "limit": 1000, "thresholds": [80]},
                {"config_id": "anthropic-dev", "limit": 100000, "thresholds": [90]},
            ],
            # The app names openai-prod on its spans (llm.quota.config_id); anthropic spans
            # are routed by the service's rules.
            "rules": [{"config_id": "anthropic-dev", "match": {"provider": "anthropic"}}],
            "handlers": [{"type": "otel_log"}],
        },
    )
    events_file = tmp_path / "events" / "llm-quota-events.jsonl"
    serve_port = free_port()
    collector_env = {
        "OTELCOL_QUOTA_SERVICE_ENDPOINT": f"http://127.0.0.1:{serve_port}",
        "OTELCOL_TRACES_ENDPOINT": backend.url,
        "OTELCOL_EVENTS_FILE": str(events_file),
    }
    openai = {"gen_ai.provider.name": "openai", "llm.quota.config_id": "openai-prod"}
    anthropic = {"gen_ai.provider.name": "anthropic"}
    async with started_collector(
        tmp_path, "otelcol-quota-service.yaml", "otelcol-events-file.yaml", env=collector_env
    ) as collector:
        serve_env = {
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_url,
            "OTEL_SERVICE_NAME": "otel-llm-quota-serve",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
        }
        async with running_serve(tmp_path, store, config, port=serve_port, env=serve_env):
            app = python_app(collector.otlp_http_url, "chat-backend")
            try:
                chat(app, "gpt-4o", {**openai, "gen_ai.response.id": "r1"}, 500, 10)  # 510
                chat(app, "claude-sonnet-4", {**anthropic, "gen_ai.response.id": "r2"}, 3000, 200)
                assert app.force_flush(10_000)
                await wait_for_tokens(
                    store, {"openai-prod": (500, 10, 510), "anthropic-dev": (3000, 200, 3200)}
                )
                # 850 of 1000: crosses 80 %; then 870, still firing, no second alert.
                crossing = chat(app, "gpt-4o", {**openai, "gen_ai.response.id": "r3"}, 330, 10)
                chat(app, "gpt-4o", {**openai, "gen_ai.response.id": "r4"}, 20, 0)
                assert app.force_flush(10_000)
            finally:
                app.shutdown()
            status = await wait_for_tokens(
                store, {"openai-prod": (850, 20, 870), "anthropic-dev": (3000, 200, 3200)}
            )
            assert status["openai-prod"]["quota_limit"] == 1000
            # The service's own metrics, scraped by a real Prometheus (GET /metrics).
            async with (
                scraping_prometheus(tmp_path, f"127.0.0.1:{serve_port}") as prometheus,
                httpx.AsyncClient(timeout=5) as client,
            ):
                await wait_for_values(
                    client,
                    prometheus,
                    "llm_quota_usage",
                    {"openai-prod": 870, "anthropic-dev": 3200},
                )
                await wait_for_values(
                    client,
                    prometheus,
                    "llm_quota_limit",
                    {"openai-prod": 1000, "anthropic-dev": 100000},
                )

            async def alerted() -> list[dict[str, Any]] | None:
                return log_records(events_file) or None

            await poll(alerted, deadline_seconds=30, what="the alert in the file exporter")
        # serve stopped (final monitor pass, its logs exported); the Collector then flushes.
    status = await asyncio.to_thread(quota_status, store)
    assert tokens(status) == {"openai-prod": (850, 20, 870), "anthropic-dev": (3000, 200, 3200)}
    assert status["openai-prod"]["alert_state"] == "firing"
    assert status["anthropic-dev"]["alert_state"] is None

    (record,) = log_records(events_file)  # one alert, for the whole run
    assert record["eventName"] == "llm.quota.threshold"
    assert record["severityText"] == "WARN"
    assert record["severityNumber"] == 13  # SeverityNumber.WARN
    assert record["traceId"] == format(crossing, "032x")
    attrs = attributes(record)
    assert attrs["llm.quota.config_id"] == "openai-prod"
    assert attrs["llm.quota.alert.state"] == "firing"
    assert float(attrs["llm.quota.threshold"]) == 80
    assert int(attrs["llm.quota.usage"]) in {850, 870}  # the monitor may run between the two
    assert int(attrs["llm.quota.limit"]) == 1000


# -- Node.js app (official OpenTelemetry JS SDK) -> Collector -> serve ---------------------------


@pytest.fixture(scope="session")
def node_app() -> Path:
    """tests/integration/node/genai_app.js with its pinned packages installed (``npm ci`` from
    package-lock.json, again only when the lock file changed). Missing node/npm fails under
    CI=true."""
    node = require_binary("node", "install Node.js 18.19+ (`make system-deps`)")
    npm = require_binary("npm", "install npm (`make system-deps`)")
    lock = (NODE_APP_DIR / "package-lock.json").read_bytes()
    stamp = NODE_APP_DIR / "node_modules" / ".otel-llm-quota-lock-sha256"
    digest = hashlib.sha256(lock).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_APP_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}{result.stderr}"
        stamp.write_text(digest)
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major, minor = (int(p) for p in version.stdout.strip().lstrip("v").split(".")[:2])
    assert (major, minor) >= (18, 19), f"Node.js {version.stdout.strip()} is older than 18.19"
    return NODE_APP_DIR / "genai_app.js"


def run_node_app(
    script: Path, calls: list[dict[str, Any]], env: dict[str, str], workdir: Path
) -> list[str]:
    """Run the Node.js app with ``calls`` and only ``env`` (and PATH) as its environment; the
    trace ids it printed."""
    calls_file = workdir / "calls.json"
    calls_file.write_text(json.dumps(calls))
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, str(script), str(calls_file)],
        env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    trace_ids: list[str] = json.loads(result.stdout)["trace_ids"]
    return trace_ids


async def test_node_app_through_the_collector_to_the_service(
    tmp_path: Path, backend: RecordingServer, node_app: Path
) -> None:
    require_serve()
    store = f"sqlite:///{tmp_path}/quota.db"
    config = write_config(
        tmp_path,
        {
            "quotas": [
                {"config_id": "node-openai", "limit": 1_000_000},
                {"config_id": "node-anthropic", "limit": 1_000_000},
            ],
            # No otel-llm-quota in a Node.js app: the service routes by provider and service.
            "rules": [
                {
                    "config_id": "node-openai",
                    "match": {"provider": "openai", "service.name": "node-chat"},
                },
                {"config_id": "node-anthropic", "match": {"provider": "anthropic"}},
            ],
        },
    )
    serve_port = free_port()
    collector_env = {
        "OTELCOL_QUOTA_SERVICE_ENDPOINT": f"http://127.0.0.1:{serve_port}",
        "OTELCOL_TRACES_ENDPOINT": backend.url,
    }
    calls = [
        # instrumentation-openai writes the provider as gen_ai.system (older conventions)
        {
            "provider_key": "gen_ai.system",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "response_id": f"chatcmpl-{i}",
            "input_tokens": 100 + i,
            "output_tokens": 20 + i,
        }
        for i in range(5)
    ] + [
        {
            "provider_key": "gen_ai.provider.name",
            "provider": "anthropic",
            "model": "claude-haiku-4",
            "response_id": f"msg-{i}",
            "input_tokens": 1000 * (i + 1),
            "output_tokens": 7,
        }
        for i in range(3)
    ]
    async with (
        started_collector(tmp_path, "otelcol-quota-service.yaml", env=collector_env) as col,
        running_serve(tmp_path, store, config, port=serve_port),
    ):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": col.otlp_http_url,
            "OTEL_SERVICE_NAME": "node-chat",
        }
        trace_ids = await asyncio.to_thread(run_node_app, node_app, calls, env, tmp_path)
        assert len(set(trace_ids)) == len(calls)
        await wait_for_tokens(
            store,
            {
                "node-openai": (510, 110, 620),  # sum(100+i), sum(20+i) for i < 5
                "node-anthropic": (6000, 21, 6021),
            },
        )
