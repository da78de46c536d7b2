"""``MemoryStore``: the store contract kept in this process's memory.

Several managers given the same ``MemoryStore`` object behave like a fleet sharing one Redis:
the same flushes, claims and alert records, with no server. That makes it the reference
implementation of the contract (``tests/test_store_contract.py``) and the store for testing
fleet behaviour in a user's own tests. Nothing survives the process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from otel_llm_quota.stores._base import (
    TOMBSTONE_SECONDS,
    ZERO,
    AlertRecord,
    ConfigRecord,
    ConfigSync,
    Counts,
    FlushBatch,
    add_counts,
)

__all__ = ["MemoryStore"]


@dataclass
class _Entry:
    provider: str | None = None
    record: ConfigRecord | None = None
    epoch: int = 0
    windows: dict[str, Counts] = field(default_factory=dict)
    lifetime: Counts = ZERO
    alert: AlertRecord | None = None
    applied: dict[str, int] = field(default_factory=dict)
    """writer -> last applied seq (the idempotency marks)."""


class MemoryStore:
    """An in-process store (see module doc). Safe to share between managers and threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._instance = uuid.uuid4().hex
        self._tombstones: dict[str, float] = {}  # deleted config -> until (monotonic)
        self.applied_batches = 0
        """Deltas applied (not counting replays): for tests."""

    @property
    def url(self) -> str:
        """``memory://``."""
        return "memory://"

    @property
    def shared(self) -> bool:
        """True: other managers in this process may share it."""
        return True

    async def instance_id(self) -> str:
        """Fixed for the object's life."""
        return self._instance

    def _sync(self, config_id: str, start: int | None) -> ConfigSync:
        entry = self._entries.get(config_id)
        if entry is None:
            until = self._tombstones.get(config_id)
            deleted = until is not None and until > time.monotonic()
            return ConfigSync(config_id, False, 0, None, ZERO, ZERO, None, None, deleted)
        counts = ZERO if start is None else entry.windows.get(f"{start}:{entry.epoch}", ZERO)
        return ConfigSync(
            config_id,
            True,
            entry.epoch,
            entry.provider,
            counts,
            entry.lifetime,
            entry.record,
            entry.alert,
        )

    async def apply(self, batch: FlushBatch) -> list[ConfigSync]:
        """Add the deltas once per (writer, seq, config); return the fleet state of each."""
        out: list[ConfigSync] = []
        with self._lock:
            for delta in batch.deltas:
                entry = self._entries.get(delta.config_id) or self._create(delta.config_id)
                if entry.applied.get(batch.writer, -1) < batch.seq:
                    entry.applied[batch.writer] = batch.seq
                    key = delta.window.key
                    entry.windows[key] = add_counts(entry.windows.get(key, ZERO), delta.counts)
                    entry.lifetime = add_counts(entry.lifetime, delta.counts)
                    self.applied_batches += 1
                if entry.provider is None and delta.provider is not None:
                    entry.provider = delta.provider
                out.append(self._sync(delta.config_id, delta.window.start))
        return out

    async def read(self, wanted: Sequence[tuple[str, int]]) -> list[ConfigSync]:
        """The fleet state of each (config, window start)."""
        with self._lock:
            return [self._sync(config_id, start) for config_id, start in wanted]

    async def config_ids(self) -> list[str]:
        """Every known configuration."""
        with self._lock:
            return list(self._entries)

    async def put_config(self, record: ConfigRecord) -> None:
        """Create or replace a configuration's settings."""
        with self._lock:
            entry = self._entries.get(record.config_id) or self._create(record.config_id)
            entry.record = record
            if record.provider is not None:
                entry.provider = record.provider

    async def reset(self, config_id: str) -> int:
        """Start a new epoch (empty window)."""
        with self._lock:
            entry = self._entries.get(config_id) or self._create(config_id)
            entry.epoch += 1
            return entry.epoch

    async def delete(self, config_id: str) -> bool:
        """Forget a configuration, leaving a tombstone."""
        with self._lock:
            found = self._entries.pop(config_id, None) is not None
            if found:
                self._tombstones[config_id] = time.monotonic() + TOMBSTONE_SECONDS
            return found

    def _create(self, config_id: str) -> _Entry:
        # Under the lock.
        self._tombstones.pop(config_id, None)
        entry = self._entries[config_id] = _Entry()
        return entry

    async def compare_and_set_alert(
        self, config_id: str, expected_version: int, data: str
    ) -> tuple[bool, AlertRecord]:
        """Replace the alert record if its version is ``expected_version``."""
        with self._lock:
            entry = self._entries.get(config_id)
            current = None if entry is None else entry.alert
            version = 0 if current is None else current.version
            if version != expected_version:
                return False, current if current is not None else AlertRecord(0, "")
            if entry is None:
                entry = self._create(config_id)
            entry.alert = AlertRecord(version + 1, data)
            return True, entry.alert

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryStore(configs={len(self._entries)})"
