"""What every built-in handler shares: the delivery error, secrets that never print, and URLs
that are shown without their secret parts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Final, overload
from urllib.parse import urlsplit

from otel_llm_quota._env import env_str

__all__ = [
    "AlertDeliveryError",
    "Secret",
    "check_str",
    "check_str_mapping",
    "redact_url",
    "register_secret_url",
    "setting",
]

_REDACTED: Final = "***"


class AlertDeliveryError(Exception):
    """A built-in handler could not deliver an alert (after its retries).

    The manager's dispatcher logs and counts it (``manager.handler_failures``); it never reaches
    the application. Its message names the handler, the redacted destination and the cause, never
    a secret, and it is raised without the underlying exception attached (``from None``), because
    HTTP and SMTP exceptions quote the full URL.
    """


class Secret:
    """A string that never shows in ``repr``, ``str`` or f-strings; ``reveal()`` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_REDACTED!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


def setting(argument: object, env_var: str, name: str) -> str | None:
    """The argument if given (and not blank), else the environment variable, else None.

    ``name`` is the argument's name, for the TypeError raised when it is not a str (a config
    file's ``url: 12345``); the value itself is never shown, as it may hold a token.
    """
    if argument is not None:
        if not isinstance(argument, str):
            raise TypeError(f"{name} must be a str, not {type(argument).__name__}")
        argument = argument.strip()
        return argument or None
    return env_str(env_var)


def check_str_mapping(name: str, value: object) -> dict[str, str]:
    """``value`` (None for empty) as a dict of str to str, else TypeError naming ``name``.

    For headers and labels; the values are never shown (headers carry tokens).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of names to values, not {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(
                f"{name}: names and values must be str, got {type(key).__name__}: "
                f"{type(item).__name__}"
            )
    return dict(value)


@overload
def check_str(name: str, value: object) -> str: ...
@overload
def check_str(name: str, value: object, *, optional: bool) -> str | None: ...
def check_str(name: str, value: object, *, optional: bool = False) -> str | None:
    """``value`` if it is a str (or None when ``optional``), else TypeError naming ``name``."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        kind = "a str or None" if optional else "a str"
        raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")
    return value


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: enough to tell where alerts go, nothing of a token in the path,
    query or user info."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    tail = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme or '?'}://{host}{port}{tail}"


# httpx logs every request at INFO with its full URL ("HTTP Request: POST https://hooks.slack...").
# A filter on the "httpx" logger rewrites the URLs registered as secret to their redacted form.
_secret_urls: dict[str, str] = {}
_secret_lock = threading.Lock()
_filter_installed = False


class _RedactSecretUrls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _secret_urls
        if not secrets:
            return True
        if isinstance(record.args, tuple) and record.args:
            args = tuple(_redact_value(a, secrets) for a in record.args)
            record.args = args
        if isinstance(record.msg, str):
            record.msg = _redact_text(record.msg, secrets)
        return True


def _redact_text(text: str, secrets: dict[str, str]) -> str:
    for secret, shown in secrets.items():
        if secret in text:
            text = text.replace(secret, shown)
    return text


def _redact_value(value: object, secrets: dict[str, str]) -> object:
    text = str(value)
    redacted = _redact_text(text, secrets)
    return value if redacted == text else redacted


def register_secret_url(url: str) -> None:
    """Hide ``url`` from the ``httpx`` logger's request lines (installs the filter once)."""
    global _filter_installed, _secret_urls
    variants = {url}
    try:  # httpx logs its normalised form of the URL (percent-encoding)
        import httpx

        variants.add(str(httpx.URL(url)))
    except Exception:  # httpx missing or a URL it refuses: the raw form is all there is
        pass
    shown = redact_url(url)
    with _secret_lock:
        # Copy on write: the filter iterates the dict on other threads without the lock.
        # Longest first, so a URL is never half-replaced through a shorter variant.
        merged = {**_secret_urls, **dict.fromkeys(variants, shown)}
        _secret_urls = dict(sorted(merged.items(), key=lambda kv: -len(kv[0])))
        if not _filter_installed:
            logging.getLogger("httpx").addFilter(_RedactSecretUrls())
            _filter_installed = True
