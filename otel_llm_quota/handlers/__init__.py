"""Built-in alert handlers: register any of them with ``manager.add_alert_handler(handler)``.

Each is a plain handler object with ``handle_alert(alert)`` and a ``name``; those that hold a
connection pool have ``aclose()``. Optional dependencies are imported when a handler first sends:
``httpx`` for the webhook, Slack and Alertmanager handlers (extras ``webhook``, ``slack``,
``alertmanager``), ``aiosmtplib`` for e-mail (extra ``email``).

A failed delivery raises ``AlertDeliveryError`` to the manager's dispatcher, which logs and counts
it (``manager.handler_failures``, metric ``llm.quota.handler.failures``); it never reaches the
application. Secrets (webhook URLs, HMAC keys, SMTP passwords) come from arguments or environment
variables and never appear in logs, exception messages or reprs.
"""

from otel_llm_quota.handlers._alertmanager import AlertmanagerAlertHandler
from otel_llm_quota.handlers._base import AlertDeliveryError
from otel_llm_quota.handlers._email import EmailAlertHandler, build_message
from otel_llm_quota.handlers._logging import LoggingAlertHandler
from otel_llm_quota.handlers._otel_log import OTelLogEventHandler
from otel_llm_quota.handlers._payload import alert_details, webhook_payload
from otel_llm_quota.handlers._slack import SlackAlertHandler, slack_message
from otel_llm_quota.handlers._webhook import SIGNATURE_HEADER, WebhookAlertHandler, sign

__all__ = [
    "AlertDeliveryError",
    "AlertmanagerAlertHandler",
    "EmailAlertHandler",
    "LoggingAlertHandler",
    "OTelLogEventHandler",
    "SIGNATURE_HEADER",
    "SlackAlertHandler",
    "WebhookAlertHandler",
    "alert_details",
    "build_message",
    "sign",
    "slack_message",
    "webhook_payload",
]
