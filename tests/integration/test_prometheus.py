"""The Prometheus endpoint, scraped by a real Prometheus server (Debian ``prometheus``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from otel_llm_quota import LLMProviderManager, PrometheusEndpoint, start_prometheus_server

from ._peers import poll, start_process, stop_process, wait_ready
from .conftest import free_port, require_binary, require_module

if TYPE_CHECKING:
    import httpx

pytestmark = pytest.mark.integration

CONFIG = """\
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: quota
    static_configs: [{{targets: ['{target}']}}]
"""


@dataclass
class Prometheus:
    url: str


@pytest.fixture
def endpoint(manager: LLMProviderManager) -> Iterator[PrometheusEndpoint]:
    require_module("opentelemetry.exporter.prometheus", "install the 'prometheus' extra")
    require_module("httpx")
    ep = start_prometheus_server(manager, port=0, host="127.0.0.1")
    yield ep
    ep.shutdown()


@pytest.fixture
async def prometheus(tmp_path: Path, endpoint: PrometheusEndpoint) -> AsyncIterator[Prometheus]:
    binary = require_binary("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.format(target=f"127.0.0.1:{endpoint.port}"))
    port = free_port()
    log = tmp_path / "prometheus.log"
    proc = start_process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5) as client:
            await wait_ready(client, f"{url}/-/ready", proc, log)
        yield Prometheus(url)
    finally:
        stop_process(proc)


async def query(client: httpx.AsyncClient, prom: Prometheus, promql: str) -> dict[str, float]:
    """``llm_quota_config_id`` -> value of each series of an instant query."""
    response = await client.get(f"{prom.url}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success"
    return {
        series["metric"]["llm_quota_config_id"]: float(series["value"][1])
        for series in body["data"]["result"]
    }


async def wait_for_values(
    client: httpx.AsyncClient, prom: Prometheus, promql: str, expected: dict[str, float]
) -> None:
    """Poll Prometheus until ``promql`` holds ``expected`` (the first scrape takes ~5 s)."""

    async def matches() -> bool | None:
        return True if await query(client, prom, promql) == expected else None

    try:
        await poll(matches, deadline_seconds=30, what=f"{promql} == {expected}")
    except AssertionError:
        raise AssertionError(
            f"{promql}: expected {expected}, Prometheus has {await query(client, prom, promql)}"
        ) from None


async def test_prometheus_scrapes_usage_limit_and_utilization_of_two_configs(
    manager: LLMProviderManager, endpoint: PrometheusEndpoint, prometheus: Prometheus
) -> None:
    await manager.set_quota_limit("openai-prod", 1000, provider="openai")
    await manager.set_quota_limit("anthropic-dev", 4000, provider="anthropic")
    manager.record_usage("openai-prod", input_tokens=200, output_tokens=50)
    manager.record_usage("anthropic-dev", input_tokens=3000)
    import httpx

    async with httpx.AsyncClient(timeout=5) as client:
        await wait_for_values(
            client, prometheus, "llm_quota_usage", {"openai-prod": 250, "anthropic-dev": 3000}
        )
        await wait_for_values(
            client, prometheus, "llm_quota_limit", {"openai-prod": 1000, "anthropic-dev": 4000}
        )
        await wait_for_values(
            client,
            prometheus,
            "llm_quota_utilization",
            {"openai-prod": 0.25, "anthropic-dev": 0.75},
        )
        await wait_for_values(
            client,
            prometheus,
            'llm_quota_tokens_total{gen_ai_token_type="input",gen_ai_provider_name="openai"}',
            {"openai-prod": 200},
        )
        # Values are read at scrape time: new usage shows up without any recording step.
        manager.record_usage("openai-prod", input_tokens=650)
        await wait_for_values(
            client,
            prometheus,
            "llm_quota_utilization",
            {"openai-prod": 0.9, "anthropic-dev": 0.75},
        )
        (target,) = (await client.get(f"{prometheus.url}/api/v1/targets")).json()["data"][
            "activeTargets"
        ]
    assert target["health"] == "up"
    assert target["scrapeUrl"] == endpoint.url
