"""Shared fixtures: a fake clock and a manager bound to it (no global providers are touched),
and real Redis servers on 127.0.0.1 for the store tests (helpers in tests/_redis.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone

import pytest
from _redis import (
    RedisClusterServers,
    RedisServer,
    ReplyDroppingProxy,
    redis_servers,
    require_redis,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

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


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def no_quota_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``OTEL_LLM_QUOTA_*`` variable of the environment for the test."""
    for name in list(os.environ):
        if name.startswith("OTEL_LLM_QUOTA_"):
            monkeypatch.delenv(name)


# Redis: one server and one 3-master cluster for the whole session, emptied before each test that
# asks for their URL; a factory for servers a test may stop, kill or restart. Missing redis-server,
# redis-cli or redis-py fails the test under CI=true and skips it elsewhere.


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A session-wide ``redis-server`` (no persistence). Do not stop or kill it: use
    ``redis_server_factory`` for that."""
    require_redis()
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session server, after ``FLUSHALL``."""
    if not redis_server.running:  # a test broke the shared server: give the next one a new one
        redis_server.restart(empty=True)
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """``factory(persist=False, password=None, username=None, unix_socket=False)`` starts a
    fresh server of the test's own; all are killed and removed at teardown."""
    require_redis()
    with redis_servers() as factory:
        yield factory


@pytest.fixture
def reply_dropping_proxy(redis_url: str, redis_server: RedisServer) -> Iterator[ReplyDroppingProxy]:
    """A ``ReplyDroppingProxy`` (mode ``forward``) in front of the emptied session server; its
    ``url()`` is the address to give the client under test."""
    with ReplyDroppingProxy((redis_server.host, redis_server.port)) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A session-wide Redis Cluster of 3 masters (no replicas), ``cluster_state:ok``."""
    require_redis()
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> str:
    """``redis+cluster://127.0.0.1:PORT`` of the session cluster, after FLUSHALL on every
    master."""
    redis_cluster.flushall()
    return redis_cluster.url
