"""E-mail alerts through SMTP (aiosmtplib), as plain text with an HTML alternative."""

from __future__ import annotations

import html
import logging
import ssl
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Final, Literal

from otel_llm_quota import environment_variables as env
from otel_llm_quota._env import env_str
from otel_llm_quota._models import Alert
from otel_llm_quota._validation import check_positive_seconds
from otel_llm_quota.handlers._base import AlertDeliveryError, Secret, check_str, setting
from otel_llm_quota.handlers._payload import alert_details, summary

__all__ = ["EmailAlertHandler", "build_message"]

_logger = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]
_SECURITY: Final[tuple[str, ...]] = ("starttls", "tls", "none")
_DEFAULT_PORTS: Final[dict[str, int]] = {"starttls": 587, "tls": 465, "none": 25}
_DEFAULT_TIMEOUT_SECONDS: Final = 8.0
"""The whole SMTP exchange; below the manager's default 10 s handler limit."""

_ROWS: Final = (
    ("Config", "config_id"),
    ("Provider", "provider"),
    ("State", "state"),
    ("Reason", "reason"),
    ("Threshold (%)", "threshold_percent"),
    ("Usage (tokens)", "usage_tokens"),
    ("Limit (tokens)", "limit_tokens"),
    ("Remaining (tokens)", "remaining_tokens"),
    ("Utilization", "utilization"),
    ("Period", "period"),
    ("Period end", "period_end"),
    ("Started", "started_at"),
    ("Ended", "ended_at"),
    ("Fingerprint", "fingerprint"),
    ("Trace id", "trace_id"),
)


def _env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env_str(name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        _logger.warning("%s=%r is not one of %s; using %s", name, raw, choices, default)
        return default
    return raw.lower()


def _env_port(name: str, default: int) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        _logger.warning("%s=%r is not a TCP port; using %s", name, raw, default)
        return default
    return int(raw)


def build_message(
    alert: Alert, *, sender: str, recipients: Iterable[str], subject_prefix: str = "[LLM quota]"
) -> EmailMessage:
    """The ``multipart/alternative`` message for ``alert``: a text part and an HTML part."""
    details = alert_details(alert)
    rows = [(label, details[key]) for label, key in _ROWS if details[key] is not None]
    state = "FIRING" if alert.is_firing else "RESOLVED"
    title = summary(alert)
    width = max(len(label) for label, _ in rows)
    text = "\n".join(
        [title, "", *(f"{label:<{width}}  {value}" for label, value in rows), "", "otel-llm-quota"]
    )
    cells = "".join(
        f"<tr><th align='left'>{html.escape(label)}</th><td>{html.escape(str(value))}</td></tr>"
        for label, value in rows
    )
    body_html = (
        "<html><body>"
        f"<h2>{html.escape(title)}</h2>"
        f"<table cellpadding='4'>{cells}</table>"
        "<p style='color:#888'>otel-llm-quota</p>"
        "</body></html>"
    )
    msg = EmailMessage()
    msg["Subject"] = f"{subject_prefix} {state}: {title}".strip()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="otel-llm-quota")
    msg["X-LLM-Quota-Fingerprint"] = alert.fingerprint
    msg.set_content(text)
    msg.add_alternative(body_html, subtype="html")
    return msg


class EmailAlertHandler:
    """Sends each alert by e-mail with aiosmtplib (needs the ``email`` extra).

    Every argument falls back to its environment variable:

    Args:
        hostname: SMTP server (``OTEL_LLM_QUOTA_SMTP_HOST``, default ``localhost``).
        port: SMTP port (``OTEL_LLM_QUOTA_SMTP_PORT``; default 587/465/25 by ``security``).
        security: ``"starttls"``, ``"tls"`` (implicit TLS) or ``"none"``
            (``OTEL_LLM_QUOTA_SMTP_SECURITY``, default ``starttls``).
        username, password: SMTP AUTH (``OTEL_LLM_QUOTA_SMTP_USERNAME`` /
            ``OTEL_LLM_QUOTA_SMTP_PASSWORD``); the password is never shown.
        sender: From address (``OTEL_LLM_QUOTA_EMAIL_FROM``).
        recipients: To addresses, a list or a comma-separated string
            (``OTEL_LLM_QUOTA_EMAIL_TO``).
        tls_context: an ``ssl.SSLContext`` to verify the server with (default: the system CAs).
        timeout_seconds: limit of the whole SMTP exchange.
        subject_prefix: put before every subject.
        name: the handler's name in logs and metrics.
    """

    def __init__(
        self,
        *,
        hostname: str | None = None,
        port: int | None = None,
        security: Security | None = None,
        username: str | None = None,
        password: str | None = None,
        sender: str | None = None,
        recipients: Iterable[str] | str | None = None,
        tls_context: ssl.SSLContext | None = None,
        timeout_seconds: float = _DEFAULT_TIMEOUT_SECONDS,
        subject_prefix: str = "[LLM quota]",
        name: str = "email",
    ) -> None:
        if security is not None:
            if security not in _SECURITY:
                raise ValueError(f"security must be one of {_SECURITY!r}, got {security!r}")
            mode: str = security
        else:
            mode = _env_choice(env.OTEL_LLM_QUOTA_SMTP_SECURITY, _SECURITY, "starttls")
        self.security = mode
        self.hostname = setting(hostname, env.OTEL_LLM_QUOTA_SMTP_HOST, "hostname") or "localhost"
        if port is None:
            port = _env_port(env.OTEL_LLM_QUOTA_SMTP_PORT, _DEFAULT_PORTS[mode])
        if type(port) is not int or not 0 < port < 65536:
            raise ValueError(f"port must be an int in [1, 65535], got {port!r}")
        self.port = port
        self.username = setting(username, env.OTEL_LLM_QUOTA_SMTP_USERNAME, "username")
        secret = setting(password, env.OTEL_LLM_QUOTA_SMTP_PASSWORD, "password")
        self._password = None if secret is None else Secret(secret)
        from_address = setting(sender, env.OTEL_LLM_QUOTA_EMAIL_FROM, "sender")
        if from_address is None:
            raise ValueError(
                f"EmailAlertHandler needs a sender (argument or {env.OTEL_LLM_QUOTA_EMAIL_FROM})"
            )
        self.sender = from_address
        if recipients is None:
            recipients = setting(None, env.OTEL_LLM_QUOTA_EMAIL_TO, "recipients") or ""
        if isinstance(recipients, str):
            recipients = recipients.split(",")
        elif not isinstance(recipients, Iterable) or not all(
            isinstance(r, str) for r in recipients
        ):
            raise TypeError("recipients must be a str or a list of str")
        self.recipients = [r.strip() for r in recipients if r.strip()]
        if not self.recipients:
            raise ValueError(
                f"EmailAlertHandler needs recipients (argument or {env.OTEL_LLM_QUOTA_EMAIL_TO})"
            )
        self.timeout_seconds = check_positive_seconds("timeout_seconds", timeout_seconds)
        self.tls_context = tls_context
        self.subject_prefix = check_str("subject_prefix", subject_prefix)
        self.name = check_str("name", name)

    async def handle_alert(self, alert: Alert) -> None:
        """Send ``alert``; raise ``AlertDeliveryError`` on any SMTP or connection failure."""
        import aiosmtplib

        message = build_message(
            alert,
            sender=self.sender,
            recipients=self.recipients,
            subject_prefix=self.subject_prefix,
        )
        try:
            await aiosmtplib.send(
                message,
                sender=self.sender,
                recipients=self.recipients,
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=None if self._password is None else self._password.reveal(),
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                tls_context=self.tls_context,
                timeout=self.timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            code = getattr(exc, "code", None)
            cause = type(exc).__name__ + (f" {code}" if code else "")
            raise AlertDeliveryError(
                f"{self.name}: sending to {self.hostname}:{self.port} failed: {cause}"
            ) from None

    def __repr__(self) -> str:
        return (
            f"EmailAlertHandler(name={self.name!r}, hostname={self.hostname!r}, "
            f"port={self.port}, security={self.security!r}, username={self.username!r}, "
            f"password={'***' if self._password else None}, recipients={self.recipients!r})"
        )
