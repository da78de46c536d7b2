"""The Alertmanager handler against a real Alertmanager (Debian ``prometheus-alertmanager``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from otel_llm_quota import LLMProviderManager
from otel_llm_quota.handlers import AlertmanagerAlertHandler

from ._peers import (
    RecordingServer,
    poll,
    require_http_peers,
    start_process,
    stop_process,
    wait_ready,
)
from .conftest import free_port, require_binary

if TYPE_CHECKING:
    import httpx

pytestmark = pytest.mark.integration

CONFIG = """\
route:
  receiver: hook
  group_by: ['alertname', 'config_id']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: '{hook}/hook'
        send_resolved: true
"""


@pytest.fixture(autouse=True)
def _http_peers() -> None:
    require_http_peers()


@pytest.fixture
async def hook() -> AsyncIterator[RecordingServer]:
    """Where Alertmanager sends its notifications: how a resolution becomes observable."""
    srv = await RecordingServer().start()
    yield srv
    await srv.stop()


@pytest.fixture
async def alertmanager(tmp_path: Path, hook: RecordingServer) -> AsyncIterator[str]:
    binary = require_binary("prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(hook=hook.url))
    port = free_port()
    log = tmp_path / "alertmanager.log"
    proc = start_process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port
        ],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5) as client:
            await wait_ready(client, f"{url}/-/ready", proc, log)
        yield url
    finally:
        stop_process(proc)


async def list_alerts(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    response = await client.get(
        f"{url}/api/v2/alerts", params={"filter": 'alertname="LLMQuotaThreshold"'}
    )
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()
    return alerts


async def test_alert_is_listed_with_its_labels_then_resolved(
    alertmanager: str, hook: RecordingServer
) -> None:
    import httpx

    handler = AlertmanagerAlertHandler(
        alertmanager, labels={"team": "ml"}, generator_url="http://dashboards.example/quota"
    )
    expected_labels = {
        "alertname": "LLMQuotaThreshold",
        "config_id": "openai-prod",
        "provider": "openai",
        "threshold": "80",
        "severity": "warning",
        "team": "ml",
    }
    async with (
        LLMProviderManager() as manager,  # the real clock: Alertmanager compares with its own
        httpx.AsyncClient(timeout=5) as client,
    ):
        manager.add_alert_handler(handler)
        await manager.set_quota_limit("openai-prod", 1000, thresholds=(80,), provider="openai")
        await manager.set_quota_limit("idle", 1000, thresholds=(80,))
        manager.record_usage("openai-prod", input_tokens=850)
        await manager.check_quotas()

        async def listed() -> list[dict[str, Any]] | None:
            return await list_alerts(client, alertmanager) or None

        (alert,) = await poll(listed, deadline_seconds=15, what="the alert in Alertmanager")
        assert alert["labels"] == expected_labels
        assert alert["status"]["state"] == "active"
        assert alert["annotations"]["usage_tokens"] == "850"
        assert alert["annotations"]["summary"] == "LLM quota openai-prod crossed 80% (85.0% used)"
        assert alert["generatorURL"] == "http://dashboards.example/quota"

        async def notified(status: str) -> dict[str, Any] | None:
            for request in hook.requests:
                body: dict[str, Any] = request.json()
                if body["status"] == status:
                    return body
            return None

        # Alertmanager only notifies a resolution of an alert whose firing it notified.
        fired = await poll(
            lambda: notified("firing"), deadline_seconds=15, what="the firing notification"
        )
        assert fired["alerts"][0]["labels"] == expected_labels

        await manager.reset_quota_cache("openai-prod")
        (resolved,) = await manager.check_quotas()
        assert not resolved.is_firing

        async def gone() -> bool | None:
            return True if not await list_alerts(client, alertmanager) else None

        await poll(gone, deadline_seconds=15, what="the alert to leave the active list")

        notification = await poll(
            lambda: notified("resolved"), deadline_seconds=15, what="the resolved notification"
        )
        await handler.aclose()

    assert manager.handler_failures == {}
    (ended,) = notification["alerts"]
    assert ended["status"] == "resolved"
    assert ended["labels"] == expected_labels
    assert ended["endsAt"] >= ended["startsAt"]
