"""One contract for every store backend: what a flush, a read, a reset, a delete and an alert
compare-and-set must do, whatever keeps the data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_backends import BACKENDS

from otel_llm_quota.stores import (
    AlertRecord,
    ConfigRecord,
    Delta,
    FlushBatch,
    QuotaStore,
    Window,
)

W = Window(1_700_000_000, 0, 7200)
ONE = (1, 0, 2, 0, 0, 0, 0)


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QuotaStore]:
    made = BACKENDS[request.param](request, tmp_path)
    yield made
    await made.aclose()


def batch(writer: str, seq: int, *deltas: Delta) -> FlushBatch:
    return FlushBatch(writer, seq, deltas)


async def test_apply_adds_and_returns_fleet_totals(store: QuotaStore) -> None:
    [a] = await store.apply(batch("w1", 1, Delta("a", W, (1, 0, 10, 5, 0, 0, 0), "openai")))
    assert a.exists
    assert a.window_counts == (1, 0, 10, 5, 0, 0, 0)
    assert a.lifetime == (1, 0, 10, 5, 0, 0, 0)
    assert a.provider == "openai"
    assert a.epoch == 0
    [a] = await store.apply(batch("w2", 1, Delta("a", W, (0, 1, 3, 0, 2, 0, 0))))
    assert a.window_counts == (1, 1, 13, 5, 2, 0, 0)
    assert a.lifetime == (1, 1, 13, 5, 2, 0, 0)
    assert await store.config_ids() == ["a"]


async def test_a_replayed_batch_counts_once(store: QuotaStore) -> None:
    b = batch("w1", 7, Delta("a", W, (1, 0, 10, 0, 0, 0, 0)), Delta("b", W, (2, 0, 20, 0, 0, 0, 0)))
    first = await store.apply(b)
    again = await store.apply(b)  # the reply was lost: the flusher retries with the same id
    assert [s.window_counts for s in again] == [s.window_counts for s in first]
    assert again[1].window_counts == (2, 0, 20, 0, 0, 0, 0)
    # An older seq of the same writer is a replay too; another writer's seq is independent.
    await store.apply(batch("w1", 6, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
    [a] = await store.apply(batch("w2", 1, Delta("a", W, (1, 0, 1, 0, 0, 0, 0))))
    assert a.window_counts == (2, 0, 11, 0, 0, 0, 0)
    [a] = await store.apply(batch("w1", 8, Delta("a", W, (1, 0, 1, 0, 0, 0, 0))))
    assert a.window_counts == (3, 0, 12, 0, 0, 0, 0)


async def test_windows_are_separate_and_lifetime_spans_them(store: QuotaStore) -> None:
    nxt = Window(W.start + 3600, 0, 7200)
    await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
    [a] = await store.apply(batch("w", 2, Delta("a", nxt, (1, 0, 4, 0, 0, 0, 0))))
    assert a.window_counts == (1, 0, 4, 0, 0, 0, 0)
    assert a.lifetime == (2, 0, 14, 0, 0, 0, 0)
    [old, new, unknown] = await store.read([("a", W.start), ("a", nxt.start), ("zz", W.start)])
    assert old.window_counts == (1, 0, 10, 0, 0, 0, 0)
    assert new.window_counts == (1, 0, 4, 0, 0, 0, 0)
    assert not unknown.exists
    assert unknown.window_counts == (0, 0, 0, 0, 0, 0, 0)


async def test_config_records_last_write_wins(store: QuotaStore) -> None:
    r1 = ConfigRecord("a", "openai", 1000, (50.0, 80.0), "day", "Europe/Paris", 1.0)
    r2 = ConfigRecord("a", "openai", 2000, (90.0,), "month", "UTC", 2.0)
    await store.put_config(r1)
    [a] = await store.read([("a", W.start)])
    assert a.exists
    assert a.record == r1
    assert a.provider == "openai"
    await store.put_config(r2)
    [a] = await store.read([("a", W.start)])
    assert a.record == r2
    nolimit = ConfigRecord("b", None, None, (80.0,), None, "UTC", 3.0)
    await store.put_config(nolimit)
    [b] = await store.read([("b", 0)])
    assert b.record == nolimit
    assert sorted(await store.config_ids()) == ["a", "b"]


async def test_reset_starts_an_empty_window(store: QuotaStore) -> None:
    await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
    assert await store.reset("a") == 1
    [a] = await store.read([("a", W.start)])
    assert a.epoch == 1
    assert a.window_counts == (0, 0, 0, 0, 0, 0, 0)
    assert a.lifetime == (1, 0, 10, 0, 0, 0, 0)
    [a] = await store.apply(
        batch("w", 2, Delta("a", Window(W.start, 1, 7200), (1, 0, 3, 0, 0, 0, 0)))
    )
    assert a.window_counts == (1, 0, 3, 0, 0, 0, 0)
    assert a.lifetime == (2, 0, 13, 0, 0, 0, 0)
    # Usage recorded before the writer saw the reset still lands in the old window.
    await store.apply(batch("w", 3, Delta("a", W, (1, 0, 5, 0, 0, 0, 0))))
    [a] = await store.read([("a", W.start)])
    assert a.window_counts == (1, 0, 3, 0, 0, 0, 0)
    assert a.lifetime == (3, 0, 18, 0, 0, 0, 0)
    assert await store.reset("a") == 2


async def test_delete_removes_everything(store: QuotaStore) -> None:
    await store.put_config(ConfigRecord("a", "x", 10, (80.0,), "month", "UTC", 1.0))
    await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
    await store.compare_and_set_alert("a", 0, "{}")
    assert await store.delete("a") is True
    assert await store.delete("a") is False
    [a] = await store.read([("a", W.start)])
    assert not a.exists
    assert a.record is None
    assert a.alert is None
    assert a.lifetime == (0,) * 7
    assert await store.config_ids() == []
    # Recreated from scratch by later usage (the writer's idempotency marks are gone too).
    [a] = await store.apply(batch("w", 1, Delta("a", W, (1, 0, 2, 0, 0, 0, 0))))
    assert a.window_counts == (1, 0, 2, 0, 0, 0, 0)


async def test_delete_leaves_a_tombstone_that_later_usage_lifts(store: QuotaStore) -> None:
    await store.put_config(ConfigRecord("a", "x", 10, (80.0,), "month", "UTC", 1.0))
    await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0)), Delta("b", W, ONE)))
    assert await store.delete("a") is True
    [a, b, never] = await store.read([("a", W.start), ("b", W.start), ("never", W.start)])
    assert not a.exists
    assert a.deleted  # deleted: processes that still count it drop it
    assert b.exists
    assert not b.deleted
    assert not never.exists
    assert not never.deleted  # neither known nor deleted: lost (processes send it again)
    # Usage after the delete creates the config afresh and lifts the tombstone.
    [a] = await store.apply(batch("w", 2, Delta("a", W, ONE)))
    assert a.exists
    assert not a.deleted
    assert a.window_counts == ONE
    assert a.lifetime == ONE
    [a] = await store.read([("a", W.start)])
    assert a.exists
    assert not a.deleted
    assert await store.delete("a") is True  # and a second delete leaves a tombstone again
    [a] = await store.read([("a", W.start)])
    assert a.deleted


async def test_a_config_recreated_by_its_settings_is_not_deleted(store: QuotaStore) -> None:
    await store.apply(batch("w", 1, Delta("a", W, ONE)))
    assert await store.delete("a") is True
    record = ConfigRecord("a", "x", 10, (80.0,), "month", "UTC", 1.0)
    await store.put_config(record)
    [a] = await store.read([("a", W.start)])
    assert a.exists
    assert not a.deleted
    assert a.record == record
    assert a.lifetime == (0,) * 7


async def test_compare_and_set_on_no_record_with_a_version_loses(store: QuotaStore) -> None:
    # A replica that still holds version 3 of a config deleted meanwhile: it loses, and the
    # current record it is shown is the empty one, so its next try (version 0) can win.
    won, rec = await store.compare_and_set_alert("a", 3, '{"x":1}')
    assert not won
    assert rec == AlertRecord(0, "")
    won, rec = await store.compare_and_set_alert("a", 0, '{"x":1}')
    assert won
    assert rec == AlertRecord(1, '{"x":1}')


async def test_alert_compare_and_set(store: QuotaStore) -> None:
    won, rec = await store.compare_and_set_alert("a", 0, '{"x":1}')
    assert won
    assert rec.version == 1
    assert rec.data == '{"x":1}'
    won, rec = await store.compare_and_set_alert("a", 0, '{"x":2}')  # a stale writer loses
    assert not won
    assert rec.version == 1
    assert rec.data == '{"x":1}'
    won, rec = await store.compare_and_set_alert("a", 1, '{"x":3}')
    assert won
    assert rec.version == 2
    [a] = await store.read([("a", W.start)])
    assert a.alert == rec


async def test_concurrent_compare_and_set_has_one_winner(store: QuotaStore) -> None:
    results = await asyncio.gather(
        *(store.compare_and_set_alert("a", 0, f'{{"by":{i}}}') for i in range(20))
    )
    assert sum(won for won, _ in results) == 1


async def test_instance_id_is_stable(store: QuotaStore) -> None:
    first = await store.instance_id()
    assert first
    assert await store.instance_id() == first


async def test_counts_are_exact_integers(store: QuotaStore) -> None:
    big = 2**52 + 1
    await store.apply(batch("w", 1, Delta("a", W, (1, 0, big, 0, 0, big, 0))))
    [a] = await store.apply(batch("w", 2, Delta("a", W, (1, 0, big, 0, 0, big, 0))))
    assert a.window_counts[2] == 2 * big
    assert a.window_counts[5] == 2 * big  # micro-USD: exact integers too
    assert a.lifetime[5] == 2 * big


async def test_cost_and_unpriced_counts_are_kept_per_window_and_lifetime(
    store: QuotaStore,
) -> None:
    # (successes, failures, input, output, other, cost in micro-USD, unpriced requests)
    await store.apply(batch("w1", 1, Delta("a", W, (2, 0, 30, 10, 0, 1_234_567, 1))))
    [a] = await store.apply(batch("w2", 1, Delta("a", W, (1, 0, 5, 5, 0, 3, 0))))
    assert a.window_counts == (3, 0, 35, 15, 0, 1_234_570, 1)
    [a] = await store.apply(batch("w1", 1, Delta("a", W, (2, 0, 30, 10, 0, 1_234_567, 1))))
    assert a.window_counts == (3, 0, 35, 15, 0, 1_234_570, 1)  # a replay adds nothing
    nxt = Window(W.start + 3600, 0, W.ttl_seconds)
    [a] = await store.apply(batch("w1", 2, Delta("a", nxt, (1, 0, 1, 1, 0, 7, 2))))
    assert a.window_counts == (1, 0, 1, 1, 0, 7, 2)
    assert a.lifetime == (4, 0, 36, 16, 0, 1_234_577, 3)
    [read] = await store.read([("a", W.start)])
    assert read.window_counts == (3, 0, 35, 15, 0, 1_234_570, 1)


async def test_config_record_keeps_the_cost_limit(store: QuotaStore) -> None:
    record = ConfigRecord(
        "a", "openai", None, (80.0,), "month", "UTC", 1.0, 50_000_000, (50.0, 90.0)
    )
    await store.put_config(record)
    [a] = await store.read([("a", W.start)])
    assert a.record is not None
    assert a.record.cost_limit == 50_000_000
    assert a.record.cost_thresholds == (50.0, 90.0)
    assert a.record.limit is None


async def test_url_has_no_password(store: QuotaStore) -> None:
    assert "secret" not in store.url
    assert "secret" not in repr(store)


async def test_a_deleted_config_is_told_apart_from_a_lost_one(store: QuotaStore) -> None:
    await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
    await store.delete("a")
    [a, never] = await store.read([("a", W.start), ("never", W.start)])
    assert not a.exists
    assert a.deleted
    assert not never.exists
    assert not never.deleted
    [a] = await store.apply(batch("w", 2, Delta("a", W, (1, 0, 2, 0, 0, 0, 0))))  # back by usage
    assert a.exists
    assert not a.deleted
    assert a.window_counts == (1, 0, 2, 0, 0, 0, 0)


async def test_compare_and_set_with_no_record_and_a_stale_version_loses(store: QuotaStore) -> None:
    won, record = await store.compare_and_set_alert("nothing", 3, "{}")
    assert not won
    assert record.version == 0
