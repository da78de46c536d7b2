"""The e-mail handler against a real SMTP server (aiosmtpd) on loopback: plain, AUTH,
STARTTLS and implicit TLS, with certificates made at test time (trustme)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import pytest

from otel_llm_quota import LLMProviderManager
from otel_llm_quota.handlers import EmailAlertHandler
from otel_llm_quota.testing import RecordingAlertHandler

from .conftest import free_port, require_module

pytestmark = [
    pytest.mark.integration,
    # aiosmtpd 1.4.6 itself reads its own deprecated Session.login_data after AUTH.
    pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning"),
]

if TYPE_CHECKING:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

USER, PASSWORD = "quota-bot", "pa55-w0rd-xyz"


@dataclass
class Inbox:
    """What the SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str], bool, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.envelopes.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                bool(session.authenticated),
                server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        return "250 Message accepted for delivery"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=USER if ok else None)


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture
def tls() -> Tls:
    trustme = require_module("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return Tls(server_ctx, client_ctx)


def run_smtp(inbox: Inbox, **kwargs: Any) -> tuple[Controller, int]:
    require_module("aiosmtpd")
    require_module("aiosmtplib")
    from aiosmtpd.controller import Controller

    port = free_port()  # aiosmtpd's Controller cannot use port 0
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def plain_smtp(inbox: Inbox) -> Iterator[int]:
    controller, port = run_smtp(inbox, authenticator=authenticator, auth_require_tls=False)
    yield port
    controller.stop()


@pytest.fixture
def starttls_smtp(inbox: Inbox, tls: Tls) -> Iterator[int]:
    controller, port = run_smtp(
        inbox, authenticator=authenticator, tls_context=tls.server, require_starttls=True
    )
    yield port
    controller.stop()


@pytest.fixture
def implicit_tls_smtp(inbox: Inbox, tls: Tls) -> Iterator[int]:
    controller, port = run_smtp(
        inbox, authenticator=authenticator, ssl_context=tls.server, auth_require_tls=False
    )
    yield port
    controller.stop()


async def fire(manager: LLMProviderManager) -> None:
    await manager.set_quota_limit("openai-prod", 1000, thresholds=(90,), provider="openai")
    manager.record_usage("openai-prod", input_tokens=950)
    await manager.check_quotas()


async def test_plain_smtp_delivers_text_and_html(
    manager: LLMProviderManager, inbox: Inbox, plain_smtp: int
) -> None:
    manager.add_alert_handler(
        EmailAlertHandler(
            hostname="127.0.0.1",
            port=plain_smtp,
            security="none",
            sender="quota@example.com",
            recipients=["ops@example.com", "ml@example.com"],
        )
    )

    await fire(manager)

    assert manager.handler_failures == {}
    (msg,) = inbox.messages
    assert inbox.envelopes == [
        ("quota@example.com", ["ops@example.com", "ml@example.com"], False, False)
    ]
    assert msg["Subject"] == "[LLM quota] FIRING: LLM quota openai-prod crossed 90% (95.0% used)"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(preferencelist=("plain",))
    rich = msg.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    assert "Usage (tokens)      950" in plain.get_content()  # type: ignore[attr-defined]
    assert "<td>950</td>" in rich.get_content()  # type: ignore[attr-defined]


async def test_auth_over_starttls(
    manager: LLMProviderManager,
    inbox: Inbox,
    starttls_smtp: int,
    tls: Tls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("OTEL_LLM_QUOTA_SMTP_USERNAME", USER)
    manager.add_alert_handler(
        EmailAlertHandler(
            hostname="127.0.0.1",
            port=starttls_smtp,
            security="starttls",
            tls_context=tls.client,
            sender="quota@example.com",
            recipients="ops@example.com",
        )
    )

    await fire(manager)

    assert manager.handler_failures == {}
    assert inbox.envelopes == [("quota@example.com", ["ops@example.com"], True, True)]


async def test_auth_over_implicit_tls(
    manager: LLMProviderManager, inbox: Inbox, implicit_tls_smtp: int, tls: Tls
) -> None:
    manager.add_alert_handler(
        EmailAlertHandler(
            hostname="127.0.0.1",
            port=implicit_tls_smtp,
            security="tls",
            tls_context=tls.client,
            username=USER,
            password=PASSWORD,
            sender="quota@example.com",
            recipients="ops@example.com",
        )
    )

    await fire(manager)

    assert manager.handler_failures == {}
    assert inbox.envelopes == [("quota@example.com", ["ops@example.com"], True, True)]


async def test_wrong_password_fails_without_showing_it(
    manager: LLMProviderManager,
    inbox: Inbox,
    plain_smtp: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    handler = EmailAlertHandler(
        hostname="127.0.0.1",
        port=plain_smtp,
        security="none",
        username=USER,
        password="not-the-Passw0rd",
        sender="quota@example.com",
        recipients="ops@example.com",
    )
    manager.add_alert_handler(handler)

    await fire(manager)

    assert manager.handler_failures == {"email": 1}
    assert inbox.messages == []
    assert "SMTPAuthenticationError 535" in caplog.text
    assert "not-the-Passw0rd" not in caplog.text
    assert "not-the-Passw0rd" not in repr(handler)


async def test_starttls_required_but_refused_by_server_fails(
    manager: LLMProviderManager, inbox: Inbox, plain_smtp: int
) -> None:
    manager.add_alert_handler(
        EmailAlertHandler(
            hostname="127.0.0.1",
            port=plain_smtp,
            security="starttls",
            sender="quota@example.com",
            recipients="ops@example.com",
        )
    )

    await fire(manager)

    assert manager.handler_failures == {"email": 1}
    assert inbox.messages == []


async def test_an_id_with_control_characters_is_escaped_and_the_mail_is_sent(
    manager: LLMProviderManager, inbox: Inbox, plain_smtp: int
) -> None:
    # Ids from spans may hold newlines (the API refuses them): the alert mail must still go out.
    recorder = RecordingAlertHandler()
    manager.add_alert_handler(recorder)
    await fire(manager)
    (alert,) = recorder.alerts
    forged = "tenant\r\nBcc: evil@example.com\x00"
    alert = dataclasses.replace(
        alert, config_id=forged, quota=dataclasses.replace(alert.quota, config_id=forged)
    )
    handler = EmailAlertHandler(
        hostname="127.0.0.1",
        port=plain_smtp,
        security="none",
        sender="quota@example.com",
        recipients=["ops@example.com"],
    )
    await handler.handle_alert(alert)

    (msg,) = inbox.messages
    assert inbox.envelopes[0][1] == ["ops@example.com"]
    assert "Bcc" not in msg
    assert msg["Subject"] == (
        "[LLM quota] FIRING: LLM quota tenant\\r\\nBcc: evil@example.com\\x00 crossed 90% "
        "(95.0% used)"
    )
