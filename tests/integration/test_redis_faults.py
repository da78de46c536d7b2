"""A manager on a real Redis through its faults: unreachable at start-up, stopped mid-run and
started again (with its data, or empty), a flush applied whose reply never came (a paused
server, a proxy that drops replies). Nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from _redis import RedisServer, ReplyDroppingProxy

from otel_llm_quota import LLMProviderManager

pytestmark = pytest.mark.integration


def fleet_tokens(server: RedisServer, config_id: str) -> int:
    """Lifetime tokens of ``config_id`` read through a fresh manager (the store's view)."""
    manager = LLMProviderManager(store=server.url, store_timeout_seconds=10)
    try:
        quota = manager.ledger.get(config_id)
        assert quota is not None
        return quota.lifetime_input_tokens + quota.lifetime_output_tokens
    finally:
        manager.close()


def test_unreachable_at_start_then_recovered(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory(persist=True)
    server.stop()  # the port is known and nothing listens on it
    with caplog.at_level(logging.WARNING):
        manager = LLMProviderManager(
            store=server.url, flush_interval_seconds=0.2, store_timeout_seconds=0.5
        )
    try:
        manager.set_quota_limit_sync("x", 1000)
        for _ in range(5):
            manager.record_usage("x", input_tokens=7)
        assert not manager.flush(2)
        quota = manager.ledger.get("x")
        assert quota is not None
        assert quota.total_tokens == 35  # counting went on in memory
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failed) == 1  # one warning, not one per retry
        assert "store" in failed[0].getMessage()
        server.restart()
        assert manager.flush(30)
        assert fleet_tokens(server, "x") == 35
        quota = manager.ledger.get("x")
        assert quota is not None
        assert quota.last_sync is not None
    finally:
        manager.close()


@pytest.mark.parametrize("empty", [False, True], ids=["same-data", "restarted-empty"])
def test_redis_stopped_mid_run_and_started_again(
    redis_server_factory: Callable[..., RedisServer], empty: bool
) -> None:
    server = redis_server_factory(persist=True)
    a = LLMProviderManager(store=server.url, flush_interval_seconds=0.2)
    b = LLMProviderManager(store=server.url, flush_interval_seconds=0.2)
    try:
        a.set_quota_limit_sync("x", 1_000_000)
        for _ in range(100):
            a.record_usage("x", input_tokens=1)
            b.record_usage("x", input_tokens=2)
        assert a.flush(10)
        assert b.flush(10)
        server.kill()
        for _ in range(50):
            a.record_usage("x", input_tokens=1)
            b.record_usage("x", input_tokens=2)
        assert not a.flush(2)
        server.restart(empty=empty)
        for m in (a, b, a, b):
            assert m.flush(30)
        # With its data: everything. Emptied: each live process re-sent its own share of the
        # current period, so the period total is exact again (lifetime before it is gone).
        for m in (a, b):
            quota = m.ledger.get("x")
            assert quota is not None
            assert quota.total_tokens == 150 + 300
            assert quota.quota_limit == 1_000_000
        assert fleet_tokens(server, "x") == 450
    finally:
        a.close()
        b.close()


def test_a_flush_held_by_a_paused_redis_past_the_timeout_counts_once(
    redis_server: RedisServer, redis_url: str
) -> None:
    # CLIENT PAUSE (of writes) longer than the client's timeout: the flush script waits in
    # Redis and the client gives up; the flusher retries the batch with the same idempotency key
    # until Redis answers. (Redis drops a held command whose client hung up, so here the first
    # try is not applied; a command applied whose reply was lost is the proxy test below.)
    url = redis_url + "?socket_timeout=0.3"
    manager = LLMProviderManager(store=url, flush_interval_seconds=3600)
    try:
        manager.record_usage("p", input_tokens=5)
        assert manager.flush(10)
        manager.record_usage("p", input_tokens=11)
        with redis_server.client() as admin:  # writes wait 1 s; reads go on
            admin.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
        assert manager.flush(10)  # timed out (maybe applied) during the pause, then retried
        assert manager.store_sync is not None
        assert manager.store_sync.errors["apply"] >= 1
        assert manager.flush(10)
        quota = manager.ledger.get("p")
        assert quota is not None
        assert quota.total_tokens == 16
    finally:
        manager.close()
    assert fleet_tokens(redis_server, "p") == 16


def test_a_reply_lost_in_the_network_is_retried_and_counted_once(
    reply_dropping_proxy: ReplyDroppingProxy, redis_server: RedisServer
) -> None:
    manager = LLMProviderManager(
        store=reply_dropping_proxy.url() + "?socket_timeout=0.3", flush_interval_seconds=3600
    )
    try:
        manager.record_usage("d", input_tokens=3)
        assert manager.flush(10)
        manager.record_usage("d", input_tokens=4)
        reply_dropping_proxy.set_mode("drop_next_script_reply")  # the flush script's reply
        assert manager.flush(10)  # timed out once (applied), retried with the same key
        assert manager.store_sync is not None
        assert manager.store_sync.errors["apply"] == 1
        assert manager.flush(10)
        quota = manager.ledger.get("d")
        assert quota is not None
        assert quota.total_tokens == 7
    finally:
        manager.close()
    assert fleet_tokens(redis_server, "d") == 7


def test_the_key_prefix_comes_from_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_llm_quota.stores import open_store

    monkeypatch.setenv("OTEL_LLM_QUOTA_STORE_KEY_PREFIX", "app2:")
    assert open_store(redis_url).key_prefix == "app2:"  # type: ignore[attr-defined]
    assert open_store(redis_url, key_prefix="x:").key_prefix == "x:"  # type: ignore[attr-defined]


async def test_concurrent_passes_on_redis_send_each_notification_at_most_once(
    redis_url: str,
) -> None:
    """check_quotas from six threads at once while usage climbs through ten thresholds: no
    notification twice, and every config's last threshold notified (passes of one manager
    are serialised in fleet mode; without that, claims overtook each other here)."""
    import collections
    import threading

    got: collections.Counter[tuple[str, float]] = collections.Counter()
    lock = threading.Lock()

    def handler(config_id: str, quota: object) -> None:
        with lock:
            got[(config_id, quota.alert_threshold)] += 1  # type: ignore[attr-defined]

    manager = LLMProviderManager(store=redis_url, flush_interval_seconds=0.05)
    manager.add_alert_handler(handler)
    ids = [f"c{i}" for i in range(30)]
    try:
        for cid in ids:
            await manager.set_quota_limit(cid, 100, thresholds=tuple(range(10, 101, 10)))
        assert await manager.aflush()
        stop = threading.Event()

        def passes() -> None:
            async def run() -> None:
                while not stop.is_set():
                    await manager.check_quotas()

            asyncio.run(run())

        threads = [threading.Thread(target=passes) for _ in range(6)]
        for t in threads:
            t.start()
        for _ in range(10):
            for cid in ids:
                manager.record_usage(cid, input_tokens=10)
            await asyncio.sleep(0.05)  # pacing the load; nothing waits on it
        stop.set()
        for t in threads:
            t.join()
        await manager.check_quotas()  # whatever the threads had not looked at yet
    finally:
        await manager.aclose()
    assert [key for key, n in got.items() if n > 1] == []
    assert sorted(cid for cid, t in got if t == 100.0) == sorted(ids)
