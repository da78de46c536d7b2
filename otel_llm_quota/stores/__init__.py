"""Quota stores: where quota state is kept when it must outlive a process or be shared.

``store=None`` (the default) keeps everything in the process, as before. Otherwise the manager
keeps its ledger as the hot-path copy and a flusher thread synchronises it with the store:

* ``MemoryStore()`` / ``"memory://"``: shared by the managers of one process (tests, examples);
* ``"sqlite:///quota.db"`` (relative) or ``"sqlite:////var/lib/app/quota.db"`` (absolute):
  one machine, several processes (``SQLiteStore``);
* ``"redis://[user:pass@]host:6379/0"``, ``"rediss://..."``, ``"unix:///path/redis.sock"``,
  ``"redis+cluster://host:port"``: a fleet (``RedisStore``; needs the ``redis`` extra).

``open_store(url)`` turns a URL into a store; ``redact_url`` is the safe form of a URL for logs.
``RedisStore`` (for ``RedisStore(client=...)`` with a ready redis-py client) is imported on first
access, so that this package imports without redis-py.
"""

from typing import TYPE_CHECKING, Any

from otel_llm_quota.stores._base import (
    AlertRecord,
    ConfigRecord,
    ConfigSync,
    Counts,
    Delta,
    FlushBatch,
    QuotaStore,
    StoreError,
    Window,
)
from otel_llm_quota.stores._memory import MemoryStore
from otel_llm_quota.stores._url import open_store, redact_url

if TYPE_CHECKING:
    from otel_llm_quota.stores._redis import RedisStore as RedisStore

__all__ = [
    "AlertRecord",
    "ConfigRecord",
    "ConfigSync",
    "Counts",
    "Delta",
    "FlushBatch",
    "MemoryStore",
    "QuotaStore",
    "StoreError",
    "Window",
    "open_store",
    "redact_url",
]


def __getattr__(name: str) -> Any:
    # RedisStore needs the optional redis-py: imported when first asked for, and left out of
    # __all__ so that ``from otel_llm_quota.stores import *`` works without it.
    if name == "RedisStore":
        from otel_llm_quota.stores._redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
