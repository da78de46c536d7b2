"""HTTP delivery shared by the webhook, Slack and Alertmanager handlers: an ``httpx.AsyncClient``
per delivery, a per-attempt timeout, and retries with exponential backoff.

Retried: 5xx answers, timeouts and connection errors. Not retried: 4xx answers (the request itself
is wrong; sending it again cannot help). Failures raise ``AlertDeliveryError`` with the redacted
URL, never the URL itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from otel_llm_quota._validation import check_positive_seconds
from otel_llm_quota.handlers._base import AlertDeliveryError, Secret, redact_url

if TYPE_CHECKING:  # pragma: no cover - typing only
    import httpx

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_BACKOFF_SECONDS", "DEFAULT_TIMEOUT_SECONDS", "HttpPoster"]

_logger = logging.getLogger("otel_llm_quota.handlers")

DEFAULT_TIMEOUT_SECONDS: Final = 2.5
"""Per attempt. Three attempts with the default backoff (0.5 s, then 1 s) take at most 9 s: they
fit in the manager's default 10 s handler limit."""
DEFAULT_ATTEMPTS: Final = 3
DEFAULT_BACKOFF_SECONDS: Final = 0.5
_MAX_BACKOFF_SECONDS: Final = 30.0


def check_retry_settings(
    timeout_seconds: float, max_attempts: int, backoff_seconds: float
) -> tuple[float, int, float]:
    """Validate the retry arguments of a handler (raises ValueError naming the bad one)."""
    timeout_seconds = check_positive_seconds("timeout_seconds", timeout_seconds)
    if type(max_attempts) is not int or max_attempts < 1:
        raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    if isinstance(backoff_seconds, bool) or not isinstance(backoff_seconds, (int, float)):
        raise TypeError(f"backoff_seconds must be a number, not {type(backoff_seconds).__name__}")
    if not backoff_seconds >= 0:
        raise ValueError(f"backoff_seconds must be >= 0, got {backoff_seconds!r}")
    return float(timeout_seconds), max_attempts, float(backoff_seconds)


class HttpPoster:
    """Posts bodies to one URL with retries. The URL is kept as a ``Secret``.

    Args:
        url: destination (secret: only its redacted form is ever shown).
        handler: the handler's name, for messages.
        timeout_seconds: limit of one attempt (connect, send and read).
        max_attempts: attempts in all (1 = no retry).
        backoff_seconds: wait before the second attempt; doubles each retry (at most 30 s).
        verify: TLS verification for httpx (``True``, ``False`` or an ``ssl.SSLContext``).
    """

    def __init__(
        self,
        url: str,
        *,
        handler: str,
        timeout_seconds: float,
        max_attempts: int,
        backoff_seconds: float,
        verify: object = True,
    ) -> None:
        self._url = Secret(url)
        self.redacted_url = redact_url(url)
        self._handler = handler
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._verify = verify

    async def post(self, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``content``; return the 2xx response or raise ``AlertDeliveryError``."""
        import httpx

        # A client per delivery: alerts are rare (a cooldown apart), and a pooled client would be
        # bound to the event loop it was first used on, leaking its sockets whenever the handler
        # moves to another loop (a monitor thread, a new asyncio.run) or the process forks.
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_seconds),
            verify=self._verify,  # type: ignore[arg-type]  # checked by httpx itself
            follow_redirects=False,
        ) as client:
            return await self._post_with_retries(client, content, headers)

    async def _post_with_retries(
        self, client: httpx.AsyncClient, content: bytes, headers: Mapping[str, str]
    ) -> httpx.Response:
        import httpx

        delay = self.backoff_seconds
        cause = "no attempt"
        for attempt in range(1, self.max_attempts + 1):
            retryable = True
            try:
                response = await client.post(
                    self._url.reveal(), content=content, headers=dict(headers)
                )
            except httpx.TimeoutException:
                cause = f"timed out after {self.timeout_seconds:g}s"
            except httpx.TransportError as exc:
                cause = f"connection failed ({type(exc).__name__})"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                cause = f"HTTP {status}"
                retryable = status >= 500
            if not retryable or attempt == self.max_attempts:
                break
            _logger.info(
                "%s: delivery to %s failed (%s), attempt %d of %d; retrying in %.3gs",
                self._handler,
                self.redacted_url,
                cause,
                attempt,
                self.max_attempts,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_SECONDS)
        raise AlertDeliveryError(
            f"{self._handler}: delivery to {self.redacted_url} failed: {cause} "
            f"(attempt {attempt} of {self.max_attempts})"
        ) from None

    async def aclose(self) -> None:
        """Nothing to release: each delivery opens and closes its own client."""
