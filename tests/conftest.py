"""Shared fixtures: a fake clock and a manager bound to it (no global providers are touched)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest

from otel_llm_quota import LLMProviderManager
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 14, 15, 9, 26, tzinfo=timezone.utc))


@pytest.fixture
def recorder() -> RecordingAlertHandler:
    return RecordingAlertHandler()


@pytest.fixture
async def manager(
    clock: FakeClock, recorder: RecordingAlertHandler
) -> AsyncIterator[LLMProviderManager]:
    async with LLMProviderManager(clock=clock, cooldown_seconds=3600) as mgr:
        mgr.add_alert_handler(recorder)
        yield mgr
