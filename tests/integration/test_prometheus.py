"""The Prometheus endpoint, scraped by a real Prometheus server (Debian ``prometheus``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from otel_llm_quota import LLMProviderManager, PrometheusEndpoint, start_prometheus_server

from ._peers import running_prometheus, wait_for_values
from .conftest import require_binary, require_module

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
    config = CONFIG.format(target=f"127.0.0.1:{endpoint.port}")
    async with running_prometheus(binary, config, tmp_path) as url:
        yield Prometheus(url)


async def wait_for(
    client: httpx.AsyncClient, prom: Prometheus, promql: str, expected: dict[str, float]
) -> None:
    await wait_for_values(client, prom.url, promql, expected)


async def test_prometheus_scrapes_usage_limit_and_utilization_of_two_configs(
    manager: LLMProviderManager, endpoint: PrometheusEndpoint, prometheus: Prometheus
) -> None:
    await manager.set_quota_limit("openai-prod", 1000, provider="openai")
    await manager.set_quota_limit("anthropic-dev", 4000, provider="anthropic")
    manager.record_usage("openai-prod", input_tokens=200, output_tokens=50)
    manager.record_usage("anthropic-dev", input_tokens=3000)
    import httpx

    async with httpx.AsyncClient(timeout=5) as client:
        await wait_for(
            client, prometheus, "llm_quota_usage", {"openai-prod": 250, "anthropic-dev": 3000}
        )
        await wait_for(
            client, prometheus, "llm_quota_limit", {"openai-prod": 1000, "anthropic-dev": 4000}
        )
        await wait_for(
            client,
            prometheus,
            "llm_quota_utilization",
            {"openai-prod": 0.25, "anthropic-dev": 0.75},
        )
        await wait_for(
            client,
            prometheus,
            'llm_quota_tokens_total{gen_ai_token_type="input",gen_ai_provider_name="openai"}',
            {"openai-prod": 200},
        )
        # Values are read at scrape time: new usage shows up without any recording step.
        manager.record_usage("openai-prod", input_tokens=650)
        await wait_for(
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
