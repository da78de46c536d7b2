"""Store URLs: ``open_store`` picks the implementation, ``redact_url`` hides the password."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from otel_llm_quota.environment_variables import OTEL_LLM_QUOTA_STORE_KEY_PREFIX
from otel_llm_quota.stores._base import QuotaStore
from otel_llm_quota.stores._memory import MemoryStore

__all__ = ["open_store", "redact_url"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})


def redact_url(url: str) -> str:
    """``url`` with its password (and any query string, which may hold key paths) replaced by
    ``***``: the only form of a store URL that appears in logs, reprs and errors. Something
    that is not a URL at all is not echoed (it may be a secret pasted in the wrong place)."""
    if not isinstance(url, str) or "://" not in url:
        return "<not a URL>"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def open_store(url: str, **options: Any) -> QuotaStore:
    """The store for ``url`` (see ``otel_llm_quota.stores``); ``options`` go to its class.

    Raises ValueError for a URL of no known scheme (naming the redacted URL), and ImportError
    with the ``pip install`` line when the store's optional dependency is missing.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"store must be a URL such as 'sqlite:///quota.db', not {url!r}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        from otel_llm_quota.stores._sqlite import SQLiteStore

        return SQLiteStore.from_url(url, **options)
    if scheme in _REDIS_SCHEMES:
        try:
            from otel_llm_quota.stores._redis import RedisStore
        except ImportError as exc:  # redis-py missing
            raise ImportError(
                "the Redis store needs redis-py: pip install 'otel-llm-quota[redis]'"
            ) from exc
        if "key_prefix" not in options:
            prefix = os.environ.get(OTEL_LLM_QUOTA_STORE_KEY_PREFIX, "").strip()
            if prefix:
                options = {**options, "key_prefix": prefix}
        return RedisStore.from_url(url, **options)
    raise ValueError(
        f"unknown store URL {redact_url(url)!r}: use memory://, sqlite:///path, redis://, "
        "rediss://, unix:// or redis+cluster://"
    )
