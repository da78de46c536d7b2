"""Real processes sharing a real store (SQLite file, Redis, Redis Cluster): the fleet promises of
the stores issue, each with a test that fails if it is false.

Each process is tests/integration/apps/store_worker.py, driven over stdin/stdout; every wait is
on a line the process prints once something happened, never on time.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_llm_quota.stores import open_store

from ._fleet import Worker, read_alerts

pytestmark = pytest.mark.integration

BACKENDS = ["sqlite", "redis", "redis-cluster"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fleet.db"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("redis_cluster_url"))


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.close()


def spawn(workers: list[Worker], url: str, *args: str) -> Worker:
    worker = Worker(url, *args)
    workers.append(worker)
    return worker


def store_totals(url: str, config_id: str, window_start: int) -> tuple[int, int]:
    """(tokens in the window, lifetime tokens) read from the store itself."""

    async def read() -> tuple[int, int]:
        store = open_store(url)
        try:
            [sync] = await store.read([(config_id, window_start)])
        finally:
            await store.aclose()
        # input, output and other tokens (the counts after them are cost and unpriced requests)
        return sum(sync.window_counts[2:5]), sum(sync.lifetime[2:5])

    return asyncio.run(read())


def test_four_processes_exact_totals_and_one_alert_only_the_fleet_crosses(
    store_url: str, workers: list[Worker], tmp_path: Path
) -> None:
    alerts = tmp_path / "alerts.jsonl"
    fleet = [
        spawn(workers, store_url, "--monitor", "0.2", "--alerts", str(alerts)) for _ in range(4)
    ]
    fleet[0].ask("limit q 250000 60", "ok")  # 60% = 150,000: no single process gets there
    for w in fleet:
        w.ask("flush", "flushed True")
    for w in fleet:
        w.send("record q 50000 1")
    for w in fleet:
        w.expect("recorded 50000")
    for w in fleet:
        w.ask("wait-firing q", "firing")
    for _ in range(2):  # every process's usage in the store, then read by every process
        for w in fleet:
            w.ask("flush", "flushed True")
    for w in fleet:
        assert w.status("q")[0] == 200_000
        assert w.ask("check", "checked") == "checked 0"
    for w in fleet:
        w.exit()
    firing = [a for a in read_alerts(alerts) if a["state"] == "firing"]
    assert len(firing) == 1, read_alerts(alerts)
    assert firing[0]["threshold"] == 60.0
    assert firing[0]["total"] >= 150_000
    check = spawn(workers, store_url)
    assert check.status("q")[:3] == (200_000, 250_000, "firing")


def test_a_process_that_starts_later_has_totals_limit_alerts_and_does_not_resend(
    store_url: str, workers: list[Worker], tmp_path: Path
) -> None:
    alerts = tmp_path / "alerts.jsonl"
    a = spawn(workers, store_url, "--monitor", "0.2", "--alerts", str(alerts))
    a.ask("limit app 2000 80", "ok")
    a.ask("record app 1700 1", "recorded")
    a.ask("wait-firing app", "firing")
    a.exit()
    assert len(read_alerts(alerts)) == 1
    b = spawn(workers, store_url, "--monitor", "0.2", "--alerts", str(alerts))
    assert b.status("app") == (1700, 2000, "firing", 1700)  # before any flush of its own
    assert b.ask("check", "checked") == "checked 0"
    b.ask("record app 10 1", "recorded")
    b.ask("flush", "flushed True")
    assert b.ask("check", "checked") == "checked 0"
    b.exit()
    assert len(read_alerts(alerts)) == 1


def test_sigterm_loses_nothing(store_url: str, workers: list[Worker]) -> None:
    w = spawn(workers, store_url, "--flush-interval", "30")  # nothing flushes before the end
    w.ask("limit t 10000000 80", "ok")
    w.ask("record t 12345 3", "recorded")
    assert w.kill(signal.SIGTERM) == 143
    check = spawn(workers, store_url)
    assert check.status("t")[0] == 3 * 12345


def test_sigkill_loses_at_most_about_one_flush_interval(
    store_url: str, workers: list[Worker]
) -> None:
    interval, pace = 0.5, 20_000.0
    w = spawn(
        workers,
        store_url,
        "--flush-interval",
        str(interval),
        "--progress",
        "1000",
        "--pace",
        str(pace),
    )
    w.ask("limit k 1000000000 80", "ok")
    w.send("record k 10000000 1")
    last = 0
    while last < 3 * pace * interval:  # a few flushes in
        last = int(w.expect("progress").split()[1])
    assert w.kill() == -signal.SIGKILL
    check = spawn(workers, store_url)
    stored = check.status("k")[0]
    # At kill time the process had recorded at most ~1000 more than it last reported.
    lost = last - stored
    assert stored <= last + 1000 + pace * 0.2
    assert lost <= pace * interval * 2, f"lost {lost} records (> 2 flush intervals)"


def test_period_boundary_crossed_while_four_processes_record(
    store_url: str, workers: list[Worker]
) -> None:
    fleet = [spawn(workers, store_url, "--pace", "2000") for _ in range(4)]
    fleet[0].ask("limit h 1000000000 80 hour", "ok")
    for w in fleet:
        w.ask("flush", "flushed True")
    # Every process's clock is moved so that the next hour boundary comes 2 s from now.
    now = time.time()
    boundary = (int(now // 3600) + 1) * 3600
    for w in fleet:
        w.ask(f"offset {boundary - (now + 2.0)}", "ok")
    end = boundary + 2.0
    for w in fleet:
        w.send(f"record-until h 1 {end} {boundary}")
    before = after = 0
    for w in fleet:
        words = w.expect("recorded-until").split()
        before += int(words[1])
        after += int(words[2])
    assert before > 0
    assert after > 0
    for _ in range(3):
        for w in fleet:
            w.ask("flush", "flushed True")
    for w in fleet:
        w.exit()
    old_window, lifetime = store_totals(store_url, "h", int(boundary - 3600))
    new_window, _ = store_totals(store_url, "h", int(boundary))
    assert (old_window, new_window) == (before, after)
    assert lifetime == before + after
