"""Prometheus Alertmanager: alerts posted to ``/api/v2/alerts``, so users get its grouping,
inhibition, silences and routing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from otel_llm_quota import environment_variables as env
from otel_llm_quota._models import Alert
from otel_llm_quota._validation import check_positive_seconds
from otel_llm_quota.handlers._base import (
    Secret,
    check_str,
    check_str_mapping,
    register_secret_url,
    setting,
)
from otel_llm_quota.handlers._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    HttpPoster,
    check_retry_settings,
)
from otel_llm_quota.handlers._payload import alert_entries

__all__ = ["AlertmanagerAlertHandler"]

_API_PATH = "/api/v2/alerts"
_REPEAT_GRACE = timedelta(minutes=5)
"""How long after the monitor's next re-post a firing alert may lapse (delivery may lag)."""


class AlertmanagerAlertHandler:
    """Posts alerts to Alertmanager's API v2.

    A firing notification posts one alert per active threshold (labels ``alertname``,
    ``config_id``, ``threshold``, ``severity``, ``provider`` and your ``labels``); a resolved one
    re-posts the same labels with ``endsAt``, which Alertmanager takes as the end of the alert.

    Alertmanager ends an alert at its ``endsAt``, or ``resolve_timeout`` (5 min) after the last
    post when none is given. The monitor re-sends a firing alert only every cooldown (default
    1 h), so firing alerts are posted with ``endsAt`` = the alert's ``repeat_at`` (when the
    monitor will post it again, or the period end, when it resolves) plus 5 minutes: an alert
    that is still firing never lapses, and one whose sender died lapses soon after. With
    ``alert_ttl_seconds``, ``endsAt`` = now + TTL instead (choose it above the cooldown).

    Args:
        url: Alertmanager's base URL (``http://alertmanager:9093``); default
            ``OTEL_LLM_QUOTA_ALERTMANAGER_URL``. ``/api/v2/alerts`` is appended.
        labels: extra labels on every alert (ours win on a clash).
        generator_url: the ``generatorURL`` of the alerts (a dashboard, say).
        alert_ttl_seconds: see above.
        headers: extra request headers (e.g. ``Authorization``; values are never shown).
        timeout_seconds, max_attempts, backoff_seconds: retry policy.
        name: the handler's name in logs and metrics.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        generator_url: str | None = None,
        alert_ttl_seconds: float | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        verify: object = True,
        name: str = "alertmanager",
    ) -> None:
        base = setting(url, env.OTEL_LLM_QUOTA_ALERTMANAGER_URL, "url")
        if base is None:
            raise ValueError(
                "AlertmanagerAlertHandler needs a url (argument or "
                f"{env.OTEL_LLM_QUOTA_ALERTMANAGER_URL})"
            )
        if alert_ttl_seconds is not None:
            alert_ttl_seconds = check_positive_seconds("alert_ttl_seconds", alert_ttl_seconds)
        header_values = check_str_mapping("headers", headers)
        label_values = check_str_mapping("labels", labels)
        timeout, attempts, backoff = check_retry_settings(
            timeout_seconds, max_attempts, backoff_seconds
        )
        endpoint = base.rstrip("/")
        if not endpoint.endswith(_API_PATH):
            endpoint += _API_PATH
        register_secret_url(endpoint)
        self.name = check_str("name", name)
        self.labels = label_values
        self.generator_url = check_str("generator_url", generator_url, optional=True)
        self.alert_ttl_seconds = alert_ttl_seconds
        self._headers = {k: Secret(v) for k, v in header_values.items()}
        self._poster = HttpPoster(
            endpoint,
            handler=name,
            timeout_seconds=timeout,
            max_attempts=attempts,
            backoff_seconds=backoff,
            verify=verify,
        )

    def _firing_ends_at(self, alert: Alert) -> datetime:
        if self.alert_ttl_seconds is not None:
            return datetime.now(timezone.utc) + timedelta(seconds=self.alert_ttl_seconds)
        if alert.repeat_at is not None:
            # The monitor re-posts a firing alert at repeat_at: it never lapses while firing,
            # and lapses soon after if its sender died.
            return alert.repeat_at + _REPEAT_GRACE
        return datetime.now(timezone.utc) + _REPEAT_GRACE

    def alerts_for(self, alert: Alert) -> list[dict[str, object]]:
        """The JSON list posted for ``alert`` (one entry per threshold it covers)."""
        return alert_entries(
            alert,
            extra_labels=self.labels,
            generator_url=self.generator_url,
            firing_ends_at=self._firing_ends_at(alert) if alert.is_firing else None,
        )

    async def handle_alert(self, alert: Alert) -> None:
        """Post ``alert``; raise ``AlertDeliveryError`` when every attempt failed."""
        body = json.dumps(self.alerts_for(alert)).encode("utf-8")
        headers = {k: v.reveal() for k, v in self._headers.items()}
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = "otel-llm-quota"
        await self._poster.post(body, headers)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._poster.aclose()

    def __repr__(self) -> str:
        return f"AlertmanagerAlertHandler(name={self.name!r}, url={self._poster.redacted_url!r})"
