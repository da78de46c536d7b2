"""Several managers sharing one store behave as one fleet: exact totals, one alert per
notification, state that survives a restart, fleet-wide resets and deletes, and faults
(outages, lost replies, an emptied store, a claimer that died) that lose and double nothing.

The managers here share a ``MemoryStore`` (the reference implementation of the store contract);
the same scenarios run against SQLite and Redis across real processes in tests/integration.
Synchronisation is explicit: ``aflush()`` returns once a sync with the store succeeded, and
``check_quotas()`` runs a monitor pass, so no test waits on time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable

import pytest
from faulty_store import FaultyStore

from otel_llm_quota import AlertReason, AlertState, LLMProviderManager
from otel_llm_quota._alerting import evaluate_ledger
from otel_llm_quota._claims import encode
from otel_llm_quota.stores import MemoryStore, QuotaStore
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

Fleet = Callable[..., LLMProviderManager]


@pytest.fixture
async def fleet(clock: FakeClock) -> AsyncIterator[Fleet]:
    made: list[LLMProviderManager] = []

    def make(store: QuotaStore, **kwargs: object) -> LLMProviderManager:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("flush_interval_seconds", 60.0)  # the tests flush explicitly
        manager = LLMProviderManager(store=store, **kwargs)  # type: ignore[arg-type]
        made.append(manager)
        return manager

    yield make
    for manager in made:
        await manager.aclose()


async def sync_all(*managers: LLMProviderManager, rounds: int = 2) -> None:
    """Every manager's usage reaches the store, then every manager reads it (a flush carries
    one delta per config: after a period boundary, the old window's first, so one more)."""
    for _ in range(rounds):
        for manager in managers:
            assert await manager.aflush()


async def window_start(manager: LLMProviderManager, config_id: str) -> int:
    quota = await manager.get_quota_usage(config_id)
    assert quota is not None
    assert quota.period_start is not None
    return int(quota.period_start.timestamp())


def recorder(manager: LLMProviderManager) -> RecordingAlertHandler:
    handler = RecordingAlertHandler()
    manager.add_alert_handler(handler)
    return handler


async def test_fleet_totals_and_one_alert_that_no_single_process_crosses(fleet: Fleet) -> None:
    store = MemoryStore()
    managers = [fleet(store) for _ in range(4)]
    handlers = [recorder(m) for m in managers]
    await managers[0].set_quota_limit("team", 1000, thresholds=(50, 90))
    await sync_all(*managers)
    for m in managers:
        for _ in range(3):
            m.record_usage("team", input_tokens=50, output_tokens=10)  # 180 per process
    for m in managers:  # each alone is at 18%: no alert
        assert await m.check_quotas() == []
    await sync_all(*managers)
    results = [await m.check_quotas() for m in managers]
    firing = [a for found in results for a in found]
    assert [(a.threshold_percent, a.state) for a in firing] == [(50.0, AlertState.FIRING)]
    assert sum(len(h.alerts) for h in handlers) == 1
    for m in managers:  # every replica shows the fleet's totals and the alert firing
        quota = await m.get_quota_usage("team")
        assert quota is not None
        assert quota.total_tokens == 720
        assert quota.total_requests == 12
        assert quota.input_tokens == 600
        assert quota.alert_state is AlertState.FIRING
        assert quota.last_sync is not None
    # The next threshold, crossed by one process's usage on top of the fleet's: once too.
    managers[2].record_usage("team", input_tokens=200)
    await sync_all(*managers)
    results = [await m.check_quotas() for m in managers]
    assert [a.threshold_percent for found in results for a in found] == [90.0]
    assert sum(len(h.alerts) for h in handlers) == 2


async def test_a_restarted_process_has_totals_limit_and_alert_state(
    fleet: Fleet, clock: FakeClock
) -> None:
    store = MemoryStore()
    a = fleet(store, cooldown_seconds=3600)
    ha = recorder(a)
    await a.set_quota_limit("app", 2000, 80)
    a.record_usage("app", input_tokens=1500)
    assert [x.reason for x in await a.check_quotas()] == []  # 75%
    a.record_usage("app", input_tokens=200)  # 85%
    assert [x.reason for x in await a.check_quotas()] == [AlertReason.THRESHOLD_CROSSED]
    await a.aclose()  # the final flush
    assert len(ha.alerts) == 1

    clock.advance(600)  # within the cooldown
    b = fleet(store, cooldown_seconds=3600)
    hb = recorder(b)
    quota = await b.get_quota_usage("app")  # before any explicit sync: loaded at start-up
    assert quota is not None
    assert quota.total_tokens == 1700
    assert quota.quota_limit == 2000
    assert quota.alert_state is AlertState.FIRING
    assert await b.check_quotas() == []  # A told the handlers 10 minutes ago: no re-send
    clock.advance(3000)  # the cooldown has passed: the repeat is B's to send, once
    found = await b.check_quotas()
    assert [x.reason for x in found] == [AlertReason.REPEAT]
    assert len(hb.alerts) == 1


async def test_the_second_run_of_an_app_alerts(fleet: Fleet) -> None:
    """The issue's new-user story: two runs of 1,500 tokens against a 2,000-token limit."""
    store = MemoryStore()
    first = fleet(store)
    await first.set_quota_limit("app", 2000, 80)
    first.record_usage("app", input_tokens=1500)
    assert await first.check_quotas() == []
    await first.aclose()
    second = fleet(store)
    handler = recorder(second)
    second.record_usage("app", input_tokens=1500)
    found = await second.check_quotas()
    assert [(a.threshold_percent, a.quota.total_tokens) for a in found] == [(80.0, 3000)]
    assert len(handler.alerts) == 1


async def test_limits_set_anywhere_apply_everywhere_last_write_wins(fleet: Fleet) -> None:
    store = MemoryStore()
    a, b = fleet(store), fleet(store)
    await a.set_quota_limit("x", 1000, thresholds=(50,), period="day")
    await sync_all(a, b)
    quota = await b.get_quota_usage("x")
    assert quota is not None
    assert (quota.quota_limit, quota.thresholds, quota.period) == (1000, (50.0,), "day")
    await b.set_quota_limit("x", 5000, thresholds=(90,), period="day")
    await sync_all(a, b)
    quota = await a.get_quota_usage("x")
    assert quota is not None
    assert (quota.quota_limit, quota.thresholds) == (5000, (90.0,))


async def test_reset_is_fleet_wide_and_resolved_once(fleet: Fleet) -> None:
    store = MemoryStore()
    a, b = fleet(store), fleet(store)
    ha, hb = recorder(a), recorder(b)
    await a.set_quota_limit("x", 100, 50)
    a.record_usage("x", input_tokens=80)
    await sync_all(a, b)
    assert len(await a.check_quotas()) + len(await b.check_quotas()) == 1
    await b.reset_quota_cache("x")
    a.record_usage("x", input_tokens=5)  # recorded before A learns of the reset
    await sync_all(a, b)
    resolved = [*(await a.check_quotas()), *(await b.check_quotas())]
    assert [(r.state, r.reason) for r in resolved] == [
        (AlertState.RESOLVED, AlertReason.PERIOD_RESET)
    ]
    for m in (a, b):
        quota = await m.get_quota_usage("x")
        assert quota is not None
        assert quota.alert_state is None
        # The 5 tokens A counted before it saw the reset belong to the window before it.
        assert quota.total_tokens == 0
        assert quota.lifetime_input_tokens == 85
    assert len(ha.alerts) + len(hb.alerts) == 2


async def test_delete_config_everywhere(fleet: Fleet) -> None:
    store = MemoryStore()
    a, b = fleet(store), fleet(store)
    await a.set_quota_limit("gone", 100)
    a.record_usage("gone", input_tokens=10)
    await sync_all(a, b)
    assert await b.get_quota_usage("gone") is not None
    assert await b.delete_config("gone") is True
    await sync_all(a, b)
    assert await a.get_quota_usage("gone") is None
    assert await store.config_ids() == []
    assert await b.delete_config("gone") is False


async def test_store_outage_at_start_and_mid_run_loses_and_doubles_nothing(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    faulty.down = True
    a = fleet(faulty, store_timeout_seconds=0.5)  # unreachable at start-up: the app starts
    other = fleet(inner)
    await a.set_quota_limit("x", 10_000)
    for _ in range(10):
        a.record_usage("x", input_tokens=7)
    assert not await a.aflush(timeout_seconds=2)  # still down
    quota = await a.get_quota_usage("x")
    assert quota is not None
    assert quota.total_tokens == 70  # counting goes on in memory
    warnings = [r for r in caplog.records if "store" in r.getMessage() and r.levelname == "WARNING"]
    assert len([r for r in warnings if "failed" in r.getMessage()]) == 1  # logged once
    assert a.store_sync is not None
    assert a.store_sync.errors["instance_id"] >= 2
    faulty.down = False
    await sync_all(a, other)
    for m in (a, other):
        quota = await m.get_quota_usage("x")
        assert quota is not None
        assert (quota.total_tokens, quota.quota_limit) == (70, 10_000)
    faulty.down = True  # down again mid-run
    a.record_usage("x", input_tokens=3)
    assert not await a.aflush(timeout_seconds=2)
    faulty.down = False
    await sync_all(a, other)
    quota = await other.get_quota_usage("x")
    assert quota is not None
    assert quota.total_tokens == 73


async def test_a_batch_whose_reply_was_lost_is_retried_and_counted_once(fleet: Fleet) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    a = fleet(faulty)
    a.record_usage("x", input_tokens=11)
    faulty.lose_replies = 2  # applied, and the reply lost, twice over
    assert await a.aflush(timeout_seconds=10)  # the third try is acknowledged
    assert faulty.calls.count("apply") == 3
    assert a.store_sync is not None
    assert a.store_sync.errors["apply"] == 2
    a.record_usage("x", input_tokens=1)
    await sync_all(a)
    [sync] = await inner.read([("x", 0)])
    assert sync.lifetime[2] == 12
    quota = await a.get_quota_usage("x")
    assert quota is not None
    assert quota.total_tokens == 12
    assert quota.lifetime_input_tokens == 12


async def test_an_emptied_store_is_rebuilt_from_each_process_share(fleet: Fleet) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    a, b = fleet(faulty), fleet(faulty)
    await a.set_quota_limit("x", 1000)
    a.record_usage("x", input_tokens=100)
    b.record_usage("x", input_tokens=30)
    await sync_all(a, b)
    faulty.inner = MemoryStore()  # a Redis restarted with --save '': everything is gone
    b.record_usage("x", input_tokens=1)
    await sync_all(a, b)
    [sync] = await faulty.inner.read([("x", await window_start(a, "x"))])
    assert sync.window_counts[2] == 131  # each re-sent its own share: not 2x, not 0
    assert sync.record is not None
    assert sync.record.limit == 1000
    for m in (a, b):
        quota = await m.get_quota_usage("x")
        assert quota is not None
        assert quota.total_tokens == 131


async def test_period_boundary_while_several_processes_record(
    fleet: Fleet, clock: FakeClock
) -> None:
    store = MemoryStore()
    managers = [fleet(store) for _ in range(4)]
    await managers[0].set_quota_limit("x", 10**9, period="hour")
    await sync_all(*managers)  # as at start-up: every process knows the limit and period
    recorded_before = recorded_after = 0
    for i, m in enumerate(managers):
        m.record_usage("x", input_tokens=10 + i)
        recorded_before += 10 + i
    await sync_all(managers[0], managers[1])  # half of them flushed before the boundary
    clock.advance(3600)
    for i, m in enumerate(managers):
        m.record_usage("x", input_tokens=100 + i)
        recorded_after += 100 + i
    await sync_all(*managers, rounds=3)
    for m in managers:
        quota = await m.get_quota_usage("x")
        assert quota is not None
        assert quota.total_tokens == recorded_after
        assert quota.lifetime_input_tokens == recorded_before + recorded_after
    start = await window_start(managers[0], "x")
    old, new = await store.read([("x", start - 3600), ("x", start)])
    assert (old.window_counts[2], new.window_counts[2]) == (recorded_before, recorded_after)


async def test_a_claim_whose_winner_died_is_delivered_by_another(
    fleet: Fleet, clock: FakeClock
) -> None:
    store = MemoryStore()
    a, b = fleet(store), fleet(store)
    hb = recorder(b)
    await a.set_quota_limit("x", 100, 50)
    a.record_usage("x", input_tokens=60)
    await sync_all(a, b)
    # A wins the claim but "dies" before its handlers are called: its pass is cut short
    # between the claim and the delivery.
    fleet_a = a._fleet
    assert fleet_a is not None
    result = evaluate_ledger(a.ledger, clock(), a.cooldown_seconds, True, encoder=encode)
    won = await fleet_a.claim(result.changes)
    assert [len(found) for _, found, _ in won] == [1]
    await sync_all(b)
    assert await b.check_quotas() == []  # A's lease still runs: B must not send it
    clock.advance(fleet_a.lease_seconds + 1)
    await sync_all(b)
    found = await b.check_quotas()
    assert [(x.state, x.threshold_percent) for x in found] == [(AlertState.FIRING, 50.0)]
    assert len(hb.alerts) == 1
    await sync_all(b)
    [sync] = await store.read([("x", 0)])
    assert sync.alert is not None
    assert json.loads(sync.alert.data)["p"] == []  # B confirmed the delivery
    assert await b.check_quotas() == []


async def test_metrics_gauges_are_fleet_wide_counters_are_own(fleet: Fleet) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_llm_quota import instrument_metrics

    inner = MemoryStore()
    faulty = FaultyStore(inner)
    a, b = fleet(faulty), fleet(inner)
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    providers = [MeterProvider(metric_readers=[r]) for r in readers]
    instruments = [
        instrument_metrics(m, meter_provider=p) for m, p in zip((a, b), providers, strict=True)
    ]
    try:
        await a.set_quota_limit("x", 1000)
        a.record_usage("x", input_tokens=300)
        b.record_usage("x", input_tokens=100)
        await sync_all(a, b)
        faulty.down = True
        a.record_usage("x", input_tokens=5)
        assert not await a.aflush(timeout_seconds=2)
        seen = [_by_name(r) for r in readers]
        for s in seen:  # the quota state: the fleet's (a's unflushed 5 included for a)
            assert s["llm.quota.limit"] == [1000]
        assert seen[0]["llm.quota.usage"] == [405]
        assert seen[1]["llm.quota.usage"] == [400]
        assert sum(seen[0]["llm.quota.tokens"]) == 305  # this process's own share
        assert sum(seen[1]["llm.quota.tokens"]) == 100
        assert seen[0]["llm.quota.store.pending"] == [1]
        assert sum(seen[0]["llm.quota.store.errors"]) >= 1
        assert len(seen[1]["llm.quota.store.flush.duration"]) == 1
    finally:
        for qm in instruments:
            qm.shutdown()
        for p in providers:
            p.shutdown()


def _by_name(reader: object) -> dict[str, list[float]]:
    data = reader.get_metrics_data()  # type: ignore[attr-defined]
    out: dict[str, list[float]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = [p.value for p in metric.data.data_points]
    return out


async def test_a_window_rolled_by_a_read_is_still_flushed(fleet: Fleet, clock: FakeClock) -> None:
    """The old window's unflushed usage reaches the store even when no usage comes after the
    boundary (the roll happened in a read or a monitor pass, not in record_usage)."""
    store = MemoryStore()
    a = fleet(store)
    await a.set_quota_limit("x", 1000, period="hour")
    await sync_all(a)
    start = await window_start(a, "x")
    a.record_usage("x", input_tokens=42)
    clock.advance(3600)
    assert (await a.get_quota_usage("x")).total_tokens == 0  # type: ignore[union-attr]
    await sync_all(a)
    [old] = await store.read([("x", start)])
    assert old.window_counts[2] == 42
    assert old.lifetime[2] == 42


async def test_the_final_flush_sends_both_windows_of_a_boundary(
    fleet: Fleet, clock: FakeClock
) -> None:
    store = MemoryStore()
    a = fleet(store)
    await a.set_quota_limit("x", 10**6, period="hour")
    await sync_all(a)
    start = await window_start(a, "x")
    a.record_usage("x", input_tokens=5)
    clock.advance(3600)
    a.record_usage("x", input_tokens=7)  # the old window's 5 and the new one's 7 are pending
    await a.aclose()  # one final flush, however many batches it takes
    old, new = await store.read([("x", start), ("x", start + 3600)])
    assert (old.window_counts[2], new.window_counts[2]) == (5, 7)


async def test_a_config_lost_by_the_store_is_rebuilt_a_deleted_one_is_dropped(
    fleet: Fleet,
) -> None:
    """One Redis Cluster node restarted empty loses the configs in its slots only: the store's
    instance id does not change, yet every process re-sends its share of those configs."""
    store = MemoryStore()
    a, b = fleet(store), fleet(store)
    await a.set_quota_limit("lost", 1000)
    await a.set_quota_limit("kept", 1000)
    for m, n in ((a, 100), (b, 30)):
        m.record_usage("lost", input_tokens=n)
        m.record_usage("kept", input_tokens=n)
    await sync_all(a, b)
    del store._entries["lost"]  # gone, without a tombstone: lost, not deleted
    await sync_all(a, b, rounds=3)  # seen lost, re-sent, read back
    for m in (a, b):
        for cid in ("lost", "kept"):
            quota = await m.get_quota_usage(cid)
            assert quota is not None
            assert (quota.total_tokens, quota.quota_limit) == (130, 1000)
    start = await window_start(a, "lost")
    lost, kept = await store.read([("lost", start), ("kept", start)])
    assert (lost.window_counts[2], kept.window_counts[2]) == (130, 130)  # not 2x where kept


async def test_a_replica_behind_the_fleet_does_not_resolve_its_alert(fleet: Fleet) -> None:
    """B has A's alert record but not yet the usage that fired it: usage never went down, so
    nobody may send a resolved notification (nor fire again)."""
    store = MemoryStore()
    a, b = fleet(store), fleet(store)
    ha, hb = recorder(a), recorder(b)
    await a.set_quota_limit("c", 100)
    await sync_all(a, b)
    a.record_usage("c", input_tokens=90)
    assert [x.state for x in await a.check_quotas()] == [AlertState.FIRING]
    await b.aflush()  # B reads A's alert record; A's usage is not in the store yet
    assert await b.check_quotas() == []
    await sync_all(a, b)
    assert await b.check_quotas() == []
    assert await a.check_quotas() == []
    assert [x.state for x in ha.alerts + hb.alerts] == [AlertState.FIRING]
    for m in (a, b):
        quota = await m.get_quota_usage("c")
        assert quota is not None
        assert (quota.alert_state, quota.total_tokens) == (AlertState.FIRING, 90)


async def test_a_claim_overtaken_by_another_replica_is_not_sent_twice(fleet: Fleet) -> None:
    """A's pass changes two configs; while its claim of the first is in flight, B claims and
    sends both, and A's flusher adopts B's records. A must send neither."""
    store = MemoryStore()
    slow = FaultyStore(store)
    a, b = fleet(slow), fleet(store)
    ha, hb = recorder(a), recorder(b)
    for cid in ("c1", "c2"):
        await a.set_quota_limit(cid, 100)
        a.record_usage(cid, input_tokens=90)
    await sync_all(a, b)
    slow.hold_cas = "c1"
    pass_a = asyncio.create_task(a.check_quotas())
    await asyncio.to_thread(slow.held.wait)  # A's claim of c1 is in flight
    assert sorted(x.config_id for x in await b.check_quotas()) == ["c1", "c2"]
    await a.aflush()  # A's periodic sync adopts B's records
    slow.release_cas.set()
    assert await pass_a == []
    assert len(ha.alerts) == 0
    assert sorted(x.config_id for x in hb.alerts) == ["c1", "c2"]


async def test_concurrent_passes_of_one_manager_send_each_notification_once(
    fleet: Fleet,
) -> None:
    store = MemoryStore()
    a = fleet(store)
    handler = recorder(a)
    ids = [f"c{i}" for i in range(20)]
    for cid in ids:
        await a.set_quota_limit(cid, 100, thresholds=(50, 90))
    await sync_all(a)

    def passes() -> None:
        for _ in range(5):
            asyncio.run(a.check_quotas())

    for tokens in (60, 35):  # 60%: fires 50; 95%: fires 90
        for cid in ids:
            a.record_usage(cid, input_tokens=tokens)
        threads = [threading.Thread(target=passes) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    sent = [(x.config_id, x.threshold_percent) for x in handler.alerts]
    assert sorted(sent) == sorted((cid, t) for cid in ids for t in (50.0, 90.0))


async def test_an_emptied_store_after_a_reset_gets_the_right_window(fleet: Fleet) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    a, b = fleet(faulty), fleet(faulty)
    await a.set_quota_limit("x", 1000)
    await a.reset_quota_cache("x")  # epoch 1
    await sync_all(a, b)  # both in the reset's window
    a.record_usage("x", input_tokens=100)
    b.record_usage("x", input_tokens=200)
    await sync_all(a, b)
    faulty.inner = MemoryStore()  # restarted empty: epoch 0 again
    await sync_all(a, b, rounds=3)
    a.record_usage("x", input_tokens=20)
    await sync_all(a, b)
    for m in (a, b):
        quota = await m.get_quota_usage("x")
        assert quota is not None
        assert quota.total_tokens == 320
    late = fleet(faulty)
    quota = await late.get_quota_usage("x")
    assert quota is not None
    assert quota.total_tokens == 320


async def test_a_delete_racing_with_unflushed_usage_leaves_one_view(fleet: Fleet) -> None:
    store = MemoryStore()
    a, b = fleet(store), fleet(store)
    await a.set_quota_limit("c", 1000)
    await sync_all(a, b)
    b.record_usage("c", input_tokens=500)
    await sync_all(a, b)
    b.record_usage("c", input_tokens=1)  # pending in B when A deletes
    assert await a.delete_config("c")
    await sync_all(b, a, rounds=3)
    for m in (a, b):
        quota = await m.get_quota_usage("c")
        assert quota is not None
        assert (quota.total_tokens, quota.quota_limit) == (1, None)


async def test_the_flusher_survives_a_store_raising_cancelled_error(fleet: Fleet) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    a = fleet(faulty)
    a.record_usage("c", input_tokens=5)
    assert await a.aflush()
    faulty.raise_in_read = asyncio.CancelledError()  # in the next refresh of "c"
    assert await a.aflush(timeout_seconds=10)  # the failed sync is retried
    assert a.store_sync is not None
    assert a.store_sync.running
    assert a.store_sync.errors["read"] == 1
    a.record_usage("c", input_tokens=7)
    await a.aclose()
    [sync] = await inner.read([("c", 0)])
    assert sync.lifetime[2] == 12
