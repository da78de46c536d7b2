"""How many reads a manager makes of its store when it starts and when it closes (the cost of
``otel-llm-quota status`` on a large store: benchmarks/bench_status.py), and that reading less
still gives every config its right totals."""

from __future__ import annotations

from collections.abc import Sequence

from otel_llm_quota import LLMProviderManager
from otel_llm_quota.stores import ConfigSync, MemoryStore
from otel_llm_quota.testing import FakeClock


class CountingStore(MemoryStore):
    """A MemoryStore that keeps the ``(config_id, window_start)`` pairs of every ``read``."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[tuple[str, int]]] = []

    async def read(self, wanted: Sequence[tuple[str, int]]) -> list[ConfigSync]:
        self.reads.append(list(wanted))
        return await super().read(wanted)


def written(store: CountingStore, clock: FakeClock) -> None:
    """Three configs: one of the default period (month), one daily, one that never resets."""
    writer = LLMProviderManager(store=store, clock=clock, flush_interval_seconds=3600)
    try:
        writer.set_quota_limit_sync("monthly", 1000)
        writer.set_quota_limit_sync("daily", 1000, period="day")
        writer.set_quota_limit_sync("forever", 1000, period=None)
        for cid, tokens in (("monthly", 10), ("daily", 20), ("forever", 30)):
            writer.record_usage(cid, input_tokens=tokens)
    finally:
        writer.close()


def test_a_new_process_reads_default_period_configs_once(clock: FakeClock) -> None:
    store = CountingStore()
    written(store, clock)
    store.reads.clear()
    reader = LLMProviderManager(store=store, clock=clock, flush_interval_seconds=3600)
    try:
        totals = {info.config_id: info.total_tokens for info in reader.ledger.get_all()}
        # First read: every new config at the window the default period has now; then again
        # only those whose period (read from the store's record) gives another window.
        assert [sorted(cid for cid, _ in read) for read in store.reads] == [
            ["daily", "forever", "monthly"],
            ["daily", "forever"],
        ]
    finally:
        reader.close()
    assert totals == {"monthly": 10, "daily": 20, "forever": 30}


def test_closing_sends_what_is_pending_without_reading_the_fleet(clock: FakeClock) -> None:
    store = CountingStore()
    written(store, clock)
    manager = LLMProviderManager(store=store, clock=clock, flush_interval_seconds=3600)
    manager.record_usage("daily", input_tokens=5)
    store.reads.clear()
    manager.close()
    assert store.reads == []  # nobody is left to look at refreshed totals
    other = LLMProviderManager(store=store, clock=clock, flush_interval_seconds=3600)
    try:
        quota = other.ledger.get("daily")
        assert quota is not None
        assert quota.total_tokens == 25  # the final flush did send
    finally:
        other.close()
