"""Slack incoming webhook, formatted with Block Kit."""

from __future__ import annotations

import json
from typing import Any

from otel_llm_quota import environment_variables as env
from otel_llm_quota._models import Alert
from otel_llm_quota.handlers._base import check_str, register_secret_url, setting
from otel_llm_quota.handlers._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    HttpPoster,
    check_retry_settings,
)
from otel_llm_quota.handlers._payload import format_percent, is_critical, rfc3339, summary

__all__ = ["SlackAlertHandler", "slack_message"]

_HEADER_MAX = 150  # Slack's limit for a header block's text


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``) as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(
    alert: Alert, *, channel: str | None = None, username: str | None = None
) -> dict[str, Any]:
    """The Block Kit message for ``alert``: a header, the facts as fields, and a context line.

    ``text`` is the plain fallback shown in notifications.
    """
    quota = alert.quota
    usage = quota.usage_percent
    if alert.forecast is not None and alert.is_firing:  # the pace, not a threshold crossed
        title = f":chart_with_upwards_trend: {summary(alert)}"
    elif alert.is_firing:
        emoji = ":rotating_light:" if is_critical(alert) else ":warning:"
        level = format_percent(alert.threshold_percent)
        title = f"{emoji} LLM quota {alert.config_id} crossed {level}%"
    else:
        title = f":white_check_mark: LLM quota {alert.config_id} resolved"
    limit = "no limit" if quota.quota_limit is None else f"{quota.quota_limit:,}"
    fields = [
        f"*Config*\n{_escape(alert.config_id)}",
        f"*Provider*\n{_escape(quota.provider or 'unknown')}",
        f"*Usage*\n{quota.total_tokens:,} of {limit} tokens"
        + ("" if usage is None else f" ({usage:.1f}%)"),
        f"*Threshold*\n{', '.join(format_percent(t) + '%' for t in alert.thresholds)}",
        f"*State*\n{alert.state.value} ({alert.reason.value})",
    ]
    if quota.reset_at is not None:
        fields.append(f"*Period ends*\n{rfc3339(quota.reset_at)}")
    context = f"otel-llm-quota · fingerprint `{alert.fingerprint}`"
    if alert.span is not None:
        context += f" · trace `{alert.span.trace_id:032x}`"
    message: dict[str, Any] = {
        "text": _escape(summary(alert)),  # the notification fallback is mrkdwn too
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": title[:_HEADER_MAX], "emoji": True},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _escape(summary(alert))}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }
    if channel:
        message["channel"] = channel
    if username:
        message["username"] = username
    return message


class SlackAlertHandler:
    """Posts each alert to a Slack incoming webhook as a Block Kit message.

    Args:
        webhook_url: the incoming-webhook URL; default ``OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL``.
            It is a secret (anyone holding it can post): never logged or shown.
        channel, username: optional overrides (honoured by legacy webhooks only).
        timeout_seconds, max_attempts, backoff_seconds: retry policy (5xx, timeouts and
            connection errors are retried, 4xx are not).
        name: the handler's name in logs and metrics.
    """

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        channel: str | None = None,
        username: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        verify: object = True,
        name: str = "slack",
    ) -> None:
        url = setting(webhook_url, env.OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL, "webhook_url")
        if url is None:
            raise ValueError(
                "SlackAlertHandler needs a webhook_url (argument or "
                f"{env.OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL})"
            )
        timeout, attempts, backoff = check_retry_settings(
            timeout_seconds, max_attempts, backoff_seconds
        )
        register_secret_url(url)
        self.name = check_str("name", name)
        self.channel = check_str("channel", channel, optional=True)
        self.username = check_str("username", username, optional=True)
        self._poster = HttpPoster(
            url,
            handler=name,
            timeout_seconds=timeout,
            max_attempts=attempts,
            backoff_seconds=backoff,
            verify=verify,
        )

    async def handle_alert(self, alert: Alert) -> None:
        """Send ``alert``; raise ``AlertDeliveryError`` when every attempt failed."""
        message = slack_message(alert, channel=self.channel, username=self.username)
        body = json.dumps(message).encode("utf-8")
        await self._poster.post(
            body, {"Content-Type": "application/json", "User-Agent": "otel-llm-quota"}
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._poster.aclose()

    def __repr__(self) -> str:
        return f"SlackAlertHandler(name={self.name!r}, webhook_url={self._poster.redacted_url!r})"
