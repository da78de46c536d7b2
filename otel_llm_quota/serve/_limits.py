"""The service's limits and the request-body checks that enforce them (sizes, gzip, types).

A body is refused before it costs memory beyond the limits: ``Content-Length`` above
``max_body_bytes`` is refused before it is read (aiohttp refuses a chunked body that grows past
it), and gzip is inflated incrementally with ``zlib`` up to ``max_decompressed_bytes`` + 1
bytes, so a gzip bomb is refused after that much output, never expanded in full.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from otel_llm_quota import environment_variables as env
from otel_llm_quota._env import env_positive_int

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONCURRENT_REQUESTS",
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "BodyError",
    "Limits",
    "decompress",
]


DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 8
"""Export requests read or counted at once; more get 503 with ``Retry-After``. Memory is bounded
by about this many times (max body + max decompressed size + the decoded message)."""
RETRY_AFTER_SECONDS: Final = 1


class BodyError(Exception):
    """A request body the service refuses: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Request limits of the service (flag, else environment variable, else default)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_decompressed_bytes", "max_concurrent_requests"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @classmethod
    def from_env(
        cls,
        max_body_bytes: int | None = None,
        max_decompressed_bytes: int | None = None,
        max_concurrent_requests: int | None = None,
    ) -> Limits:
        """Given values win, else the ``OTEL_LLM_QUOTA_SERVE_MAX_*`` variables, else defaults."""
        return cls(
            _pick(max_body_bytes, env.OTEL_LLM_QUOTA_SERVE_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES),
            _pick(
                max_decompressed_bytes,
                env.OTEL_LLM_QUOTA_SERVE_MAX_DECOMPRESSED_BYTES,
                DEFAULT_MAX_DECOMPRESSED_BYTES,
            ),
            _pick(
                max_concurrent_requests,
                env.OTEL_LLM_QUOTA_SERVE_MAX_CONCURRENT_REQUESTS,
                DEFAULT_MAX_CONCURRENT_REQUESTS,
            ),
        )


def _pick(given: int | None, name: str, default: int) -> int:
    """The argument, else the variable ``name`` (a positive int), else ``default``."""
    return given if given is not None else env_positive_int(name, default)


def decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """``body`` decoded per its ``Content-Encoding`` (``gzip`` or none), at most ``max_bytes``.

    Raises ``BodyError``: 413 when the output would exceed ``max_bytes``, 400 for corrupt or
    truncated gzip data, 415 for another encoding.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(body) > max_bytes:
            raise BodyError(413, f"body larger than {max_bytes} bytes")
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BodyError(415, f"unsupported Content-Encoding {encoding[:40]!r} (use gzip)")
    parts: list[bytes] = []
    left = max_bytes + 1
    data = body
    try:
        while data:  # one gzip member after another (concatenated members are valid gzip)
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, left)
            left -= len(chunk)
            parts.append(chunk)
            if left <= 0 or inflater.unconsumed_tail:
                raise BodyError(413, f"decompressed body larger than {max_bytes} bytes")
            if not inflater.eof:
                raise BodyError(400, "truncated gzip data")
            data = inflater.unused_data
    except zlib.error:
        raise BodyError(400, "corrupt gzip data") from None
    return b"".join(parts)
