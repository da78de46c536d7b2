"""No lost updates: many threads recording at once give exact totals."""

from __future__ import annotations

import threading

from otel_llm_quota import LLMProviderManager

THREADS = 8
CALLS = 100_000


def test_eight_threads_times_100k_calls_are_exact() -> None:
    manager = LLMProviderManager()
    manager.set_quota_limit_sync("shared", 10**12, thresholds=(50, 100))
    start = threading.Barrier(THREADS)

    def work(n: int) -> None:
        record = manager.record_usage
        own = f"own-{n}"
        start.wait()
        for i in range(CALLS):
            record("shared", input_tokens=1, output_tokens=2, success=i % 10 != 0)
            if i % 4 == 0:
                record(own, input_tokens=n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    info = manager.ledger.get("shared")
    assert info is not None
    assert info.total_requests == THREADS * CALLS
    assert info.failed_requests == THREADS * CALLS // 10
    assert (info.input_tokens, info.output_tokens) == (THREADS * CALLS, 2 * THREADS * CALLS)
    assert info.total_tokens == 3 * THREADS * CALLS
    for n in range(THREADS):
        own = manager.ledger.get(f"own-{n}")
        assert own is not None
        assert own.total_requests == CALLS // 4
        assert own.input_tokens == n * (CALLS // 4)


def test_racing_first_use_of_the_same_configs_loses_nothing() -> None:
    # Creating a config takes several steps (validation, period bounds): threads that meet on a
    # new id must end up counting into one state, not overwrite each other's.
    ids = [f"cfg-{i}" for i in range(3000)]
    manager = LLMProviderManager(max_configs=len(ids))  # above the default cap of 2,000
    start = threading.Barrier(THREADS)

    def work() -> None:
        start.wait()
        for config_id in ids:
            manager.record_usage(config_id, provider="openai", input_tokens=1)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    infos = manager.ledger.get_all()
    assert len(infos) == len(ids)
    assert {(i.total_requests, i.input_tokens) for i in infos} == {(THREADS, THREADS)}
