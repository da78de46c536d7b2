"""Webhook and Slack handlers against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import logging
import warnings
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from otel_llm_quota import LLMProviderManager
from otel_llm_quota.handlers import SIGNATURE_HEADER, SlackAlertHandler, WebhookAlertHandler
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

from ._peers import RecordingServer, poll, require_http_peers
from .conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _http_peers() -> None:
    require_http_peers()


@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    srv = await RecordingServer().start()
    yield srv
    await srv.stop()


async def cross(manager: LLMProviderManager, config_id: str = "a", tokens: int = 95) -> None:
    """Make ``config_id`` (limit 100, thresholds 50/90, daily) cross a threshold; run a pass."""
    if config_id not in manager.ledger:
        await manager.set_quota_limit(
            config_id, 100, thresholds=(50, 90), period="day", provider="openai"
        )
    manager.record_usage(config_id, input_tokens=tokens)
    await manager.check_quotas()


async def test_webhook_posts_alertmanager_shaped_json_signed_with_hmac(
    manager: LLMProviderManager, clock: FakeClock, server: RecordingServer
) -> None:
    handler = WebhookAlertHandler(f"{server.url}/hook", secret="k3y", labels={"env": "prod"})
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
        clock.advance(timedelta(days=1))
        await manager.check_quotas()
    finally:
        await handler.aclose()

    firing, resolved = server.requests
    assert firing.method == "POST"
    assert firing.path == "/hook"
    assert firing.headers["Content-Type"] == "application/json"
    expected = "sha256=" + hmac.new(b"k3y", firing.body, hashlib.sha256).hexdigest()
    assert firing.headers[SIGNATURE_HEADER] == expected
    body = firing.json()
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "otel-llm-quota"
    assert body["groupLabels"] == {"alertname": "LLMQuotaThreshold", "config_id": "a"}
    top = body["alerts"][0]
    assert top["status"] == "firing"
    assert top["labels"] == {
        "alertname": "LLMQuotaThreshold",
        "config_id": "a",
        "threshold": "90",
        "severity": "warning",
        "provider": "openai",
        "env": "prod",
    }
    assert top["annotations"]["usage_tokens"] == "95"
    assert top["annotations"]["limit_tokens"] == "100"
    assert top["annotations"]["utilization"] == "0.9500"
    assert top["startsAt"] == "2026-03-14T15:09:26.000Z"
    assert body["details"]["utilization"] == 0.95
    done = resolved.json()
    assert done["status"] == "resolved"
    assert [a["labels"]["threshold"] for a in done["alerts"]] == ["90", "50"]
    assert [a["fingerprint"] for a in done["alerts"]] == [a["fingerprint"] for a in body["alerts"]]
    assert done["alerts"][0]["endsAt"] == "2026-03-15T15:09:26.000Z"
    assert manager.handler_failures == {}


async def test_webhook_without_secret_is_unsigned(
    manager: LLMProviderManager, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_LLM_QUOTA_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("OTEL_LLM_QUOTA_WEBHOOK_URL", f"{server.url}/from-env")
    handler = WebhookAlertHandler()
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    (request,) = server.requests
    assert request.path == "/from-env"
    assert SIGNATURE_HEADER not in request.headers


async def test_webhook_retries_5xx_until_success(
    manager: LLMProviderManager, server: RecordingServer
) -> None:
    server.statuses = [500, 503]
    handler = WebhookAlertHandler(server.url, max_attempts=3, backoff_seconds=0.01)
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    assert len(server.requests) == 3
    assert server.requests[0].body == server.requests[2].body
    assert manager.handler_failures == {}


async def test_webhook_gives_up_after_max_attempts(
    manager: LLMProviderManager, server: RecordingServer
) -> None:
    server.statuses = [502, 502, 502]
    handler = WebhookAlertHandler(server.url, max_attempts=3, backoff_seconds=0.01)
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    assert len(server.requests) == 3
    assert manager.handler_failures == {"webhook": 1}


async def test_webhook_does_not_retry_4xx(
    manager: LLMProviderManager,
    server: RecordingServer,
    recorder: RecordingAlertHandler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.statuses = [400]
    secret_path = "/hook/T0KEN-in-path"
    handler = WebhookAlertHandler(f"{server.url}{secret_path}", max_attempts=5)
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    assert len(server.requests) == 1
    assert manager.handler_failures == {"webhook": 1}
    assert len(recorder.alerts) == 1  # the other handler got its alert regardless
    assert "HTTP 400" in caplog.text
    assert "T0KEN-in-path" not in caplog.text


async def test_webhook_retries_connection_errors(manager: LLMProviderManager) -> None:
    handler = WebhookAlertHandler(
        f"http://127.0.0.1:{free_port()}/", max_attempts=2, backoff_seconds=0.01
    )
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    assert manager.handler_failures == {"webhook": 1}


async def test_hung_server_times_out_and_the_monitor_carries_on(
    clock: FakeClock, server: RecordingServer
) -> None:
    server.hang = True
    recorder = RecordingAlertHandler()
    handler = WebhookAlertHandler(server.url, timeout_seconds=30, max_attempts=1)
    async with LLMProviderManager(clock=clock, handler_timeout_seconds=0.5) as manager:
        manager.add_alert_handler(handler)
        manager.add_alert_handler(recorder)
        await manager.set_quota_limit("a", 100, thresholds=(90,))
        await manager.set_quota_limit("b", 100, thresholds=(90,))
        await manager.start_monitoring(interval=3600)
        try:
            manager.record_usage("a", input_tokens=95)
            await recorder.wait_for(1)
            await server.arrived.wait()
            manager.record_usage("b", input_tokens=95)
            # b's pass runs only once a's pass is over: its hung call was abandoned by then.
            alerts = await recorder.wait_for(2)
            assert manager.handler_timeouts["webhook"] >= 1

            async def both_abandoned() -> bool | None:
                return True if manager.handler_timeouts.get("webhook") == 2 else None

            await poll(both_abandoned, deadline_seconds=10, what="the second time-out")
            await manager.stop_monitoring()
        finally:
            await handler.aclose()

    assert [a.config_id for a in alerts] == ["a", "b"]
    assert manager.handler_timeouts == {"webhook": 2}
    assert manager.handler_failures == {"webhook": 2}


async def test_handler_own_timeout_fails_the_delivery(
    manager: LLMProviderManager, server: RecordingServer
) -> None:
    server.hang = True
    handler = WebhookAlertHandler(server.url, timeout_seconds=0.2, max_attempts=2)
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    assert len(server.requests) == 2
    assert manager.handler_failures == {"webhook": 1}
    assert manager.handler_timeouts == {}


async def test_slack_posts_block_kit_and_never_logs_the_webhook_url(
    manager: LLMProviderManager, server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_path = "/services/T000/B000/XyZsEcReT"
    handler = SlackAlertHandler(f"{server.url}{token_path}", channel="#quota")
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    (request,) = server.requests
    assert request.path == token_path
    message = request.json()
    assert message["channel"] == "#quota"
    assert message["text"] == "LLM quota a crossed 90% (95.0% used)"
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "context"]
    assert any(r.name == "httpx" for r in caplog.records)  # httpx did log the request...
    assert "XyZsEcReT" not in caplog.text  # ...without the secret part of the URL
    assert "XyZsEcReT" not in repr(handler)


async def test_slack_failure_message_is_redacted(
    manager: LLMProviderManager, server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.statuses = [404]
    handler = SlackAlertHandler(f"{server.url}/services/T/B/hiddenToken")
    manager.add_alert_handler(handler)
    try:
        await cross(manager)
    finally:
        await handler.aclose()

    assert manager.handler_failures == {"slack": 1}
    assert "slack: delivery to http://127.0.0.1" in caplog.text
    assert "hiddenToken" not in caplog.text


async def test_a_handler_used_from_many_event_loops_leaks_no_socket(
    manager: LLMProviderManager, server: RecordingServer
) -> None:
    # A handler moves between loops (asyncio.run each time, a monitor thread...): each delivery
    # must close its own connection, leaving no unclosed transport behind.
    recorder = RecordingAlertHandler()
    manager.add_alert_handler(recorder)
    await cross(manager)
    [alert] = recorder.alerts
    handler = WebhookAlertHandler(server.url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(5):  # each in a fresh thread with a fresh event loop
            await asyncio.to_thread(asyncio.run, handler.handle_alert(alert))
        gc.collect()
    assert len(server.requests) == 5
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
