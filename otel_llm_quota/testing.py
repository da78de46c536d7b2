"""Helpers for testing code that uses otel-llm-quota (and for our own tests).

* ``FakeClock``: a clock you move by hand, so periods, cooldowns and resets are tested without
  sleeping: ``LLMProviderManager(clock=clock)``.
* ``RecordingAlertHandler``: an alert handler that keeps every ``Alert`` it receives, and lets a
  test wait until a given number arrived.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

from otel_llm_quota._models import Alert, AlertState

__all__ = ["FakeClock", "RecordingAlertHandler"]


class FakeClock:
    """A thread-safe manual clock. Call it to read the time (POSIX seconds).

    Args:
        start: the initial time, as a datetime (naive means UTC) or POSIX seconds.
    """

    def __init__(self, start: datetime | float = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)):
        self._lock = threading.Lock()
        self._now = self._to_ts(start)

    @staticmethod
    def _to_ts(value: datetime | float) -> float:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            return value.timestamp()
        return float(value)

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward (never backwards) and return the new time."""
        delta = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if delta < 0:
            raise ValueError("a FakeClock only moves forward")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime | float) -> None:
        """Jump to ``when`` (not before the current time)."""
        target = self._to_ts(when)
        with self._lock:
            if target < self._now:
                raise ValueError("a FakeClock only moves forward")
            self._now = target

    @property
    def datetime(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self(), timezone.utc)


class RecordingAlertHandler:
    """An ``AlertHandler`` that records every alert it receives (thread-safe)."""

    name = "recording"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alerts: list[Alert] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def handle_alert(self, alert: Alert) -> None:
        """Record ``alert``."""
        with self._lock:
            self._alerts.append(alert)
            count = len(self._alerts)
            ready = [fut for n, fut in self._waiters if n <= count]
            self._waiters = [(n, fut) for n, fut in self._waiters if n > count]
        for fut in ready:
            loop = fut.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_set_done, fut)

    @property
    def alerts(self) -> list[Alert]:
        """Every alert received so far, in order (a copy)."""
        with self._lock:
            return list(self._alerts)

    @property
    def firing(self) -> list[Alert]:
        """The firing notifications received so far."""
        return [a for a in self.alerts if a.state is AlertState.FIRING]

    @property
    def resolved(self) -> list[Alert]:
        """The resolved notifications received so far."""
        return [a for a in self.alerts if a.state is AlertState.RESOLVED]

    def clear(self) -> None:
        """Forget the alerts received so far."""
        with self._lock:
            self._alerts.clear()

    async def wait_for(self, count: int, timeout_seconds: float = 10.0) -> list[Alert]:
        """Wait until at least ``count`` alerts were received; return them.

        Raises ``TimeoutError`` if they did not arrive within ``timeout_seconds``.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if len(self._alerts) >= count:
                return list(self._alerts)
            self._waiters.append((count, fut))
        await asyncio.wait_for(fut, timeout_seconds)
        return self.alerts


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
