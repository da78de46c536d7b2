"""A store wrapper that fails on demand, for the fault tests of the flusher and the claims."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from otel_llm_quota.stores import (
    AlertRecord,
    ConfigRecord,
    ConfigSync,
    FlushBatch,
    QuotaStore,
    StoreError,
)


class FaultyStore:
    """Delegates to ``inner``; ``down`` makes every call fail before reaching it, and
    ``lose_replies`` makes ``apply`` fail *after* the inner store applied the batch (an
    ambiguous failure: the reply was lost)."""

    def __init__(self, inner: QuotaStore) -> None:
        self.inner = inner
        self.down = False
        self.lose_replies = 0
        self.calls: list[str] = []
        self.raise_in_read: BaseException | None = None
        """Raised once by the next ``read`` (then cleared)."""
        self.hold_cas: str | None = None
        """A config id whose next compare-and-set waits for ``release_cas`` (latency); ``held``
        is set once it waits."""
        self.held = threading.Event()
        self.release_cas = threading.Event()

    @property
    def url(self) -> str:
        return "faulty+" + self.inner.url

    @property
    def shared(self) -> bool:
        return True

    def _gate(self, op: str) -> None:
        self.calls.append(op)
        if self.down:
            raise StoreError(f"{self.url}: {op}: connection refused (test)")

    async def instance_id(self) -> str:
        self._gate("instance_id")
        return await self.inner.instance_id()

    async def apply(self, batch: FlushBatch) -> list[ConfigSync]:
        self._gate("apply")
        result = await self.inner.apply(batch)
        if self.lose_replies:
            self.lose_replies -= 1
            raise StoreError(f"{self.url}: apply: timed out (test; applied)")
        return result

    async def read(self, wanted: Sequence[tuple[str, int]]) -> list[ConfigSync]:
        self._gate("read")
        error, self.raise_in_read = self.raise_in_read, None
        if error is not None:
            raise error
        return await self.inner.read(wanted)

    async def config_ids(self) -> list[str]:
        self._gate("config_ids")
        return await self.inner.config_ids()

    async def put_config(self, record: ConfigRecord) -> None:
        self._gate("put_config")
        await self.inner.put_config(record)

    async def reset(self, config_id: str) -> int:
        self._gate("reset")
        return await self.inner.reset(config_id)

    async def delete(self, config_id: str) -> bool:
        self._gate("delete")
        return await self.inner.delete(config_id)

    async def compare_and_set_alert(
        self, config_id: str, expected_version: int, data: str
    ) -> tuple[bool, AlertRecord]:
        self._gate("compare_and_set_alert")
        if config_id == self.hold_cas:
            self.hold_cas = None
            self.held.set()
            await asyncio.to_thread(self.release_cas.wait)
        return await self.inner.compare_and_set_alert(config_id, expected_version, data)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
