"""Generic JSON webhook, with a body modelled on Alertmanager's webhook payload."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from otel_llm_quota import environment_variables as env
from otel_llm_quota._models import Alert
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
from otel_llm_quota.handlers._payload import webhook_payload

__all__ = ["SIGNATURE_HEADER", "WebhookAlertHandler", "sign"]

SIGNATURE_HEADER = "X-OTel-LLM-Quota-Signature"
"""Header carrying ``sha256=<hex HMAC-SHA256 of the raw body>`` when a secret is set."""


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=`` + hex HMAC-SHA256 with ``secret``.

    Receivers recompute it over the raw request body and compare with ``hmac.compare_digest``.
    """
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookAlertHandler:
    """POSTs each alert as JSON to a URL (``Content-Type: application/json``).

    The body is Alertmanager's webhook shape (``version``, ``status``, ``receiver``,
    ``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``alerts`` with ``labels``,
    ``annotations``, ``startsAt``, ``endsAt``, ``fingerprint``) plus ``details``. Each entry's
    ``fingerprint`` is stable per (config, threshold, period): the firing and resolved
    notifications of one alert carry the same one.

    Args:
        url: destination; default ``OTEL_LLM_QUOTA_WEBHOOK_URL``. Treated as a secret.
        secret: HMAC key for the ``X-OTel-LLM-Quota-Signature`` header; default
            ``OTEL_LLM_QUOTA_WEBHOOK_SECRET``; none: unsigned.
        headers: extra request headers (e.g. an ``Authorization``; their values are never shown).
        labels: extra labels on every alert (ours win on a clash).
        receiver: the ``receiver`` field of the body.
        timeout_seconds, max_attempts, backoff_seconds: retry policy (5xx, timeouts and
            connection errors are retried with exponential backoff, 4xx are not).
        verify: TLS verification (``True``, ``False``, or an ``ssl.SSLContext``).
        name: the handler's name in logs and metrics.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        receiver: str = "otel-llm-quota",
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        verify: object = True,
        name: str = "webhook",
    ) -> None:
        resolved_url = setting(url, env.OTEL_LLM_QUOTA_WEBHOOK_URL, "url")
        if resolved_url is None:
            raise ValueError(
                f"WebhookAlertHandler needs a url (argument or {env.OTEL_LLM_QUOTA_WEBHOOK_URL})"
            )
        key = setting(secret, env.OTEL_LLM_QUOTA_WEBHOOK_SECRET, "secret")
        timeout, attempts, backoff = check_retry_settings(
            timeout_seconds, max_attempts, backoff_seconds
        )
        header_values = check_str_mapping("headers", headers)
        label_values = check_str_mapping("labels", labels)
        register_secret_url(resolved_url)
        self.name = check_str("name", name)
        self.receiver = check_str("receiver", receiver)
        self.labels = label_values
        self._secret = None if key is None else Secret(key)
        self._headers = {k: Secret(v) for k, v in header_values.items()}
        self._poster = HttpPoster(
            resolved_url,
            handler=name,
            timeout_seconds=timeout,
            max_attempts=attempts,
            backoff_seconds=backoff,
            verify=verify,
        )

    @property
    def signed(self) -> bool:
        """Whether requests carry the HMAC signature header."""
        return self._secret is not None

    async def handle_alert(self, alert: Alert) -> None:
        """Send ``alert``; raise ``AlertDeliveryError`` when every attempt failed."""
        payload = webhook_payload(alert, receiver=self.receiver, extra_labels=self.labels)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {k: v.reveal() for k, v in self._headers.items()}
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = "otel-llm-quota"
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret.reveal(), body)
        await self._poster.post(body, headers)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._poster.aclose()

    def __repr__(self) -> str:
        return (
            f"WebhookAlertHandler(name={self.name!r}, url={self._poster.redacted_url!r}, "
            f"signed={self.signed})"
        )
