"""Nested budgets: a config's usage also counts toward its parent, the parent's parent, ...

Each level keeps its own limit, period and alerts; one request updates every level exactly once,
in memory and through every store backend (one delta per config and flush, the stores'
idempotency marks per config still hold), and the parent link is shared through the store.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from faulty_store import FaultyStore
from rich.console import Console
from store_backends import BACKENDS

from otel_llm_quota import AlertState, ConfigError, LLMProviderManager, load_config
from otel_llm_quota._ledger import QuotaLedger
from otel_llm_quota.cli import cli
from otel_llm_quota.cli._status import render
from otel_llm_quota.stores import QuotaStore
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler


def _tokens(ledger: QuotaLedger) -> dict[str, int]:
    return {info.config_id: info.total_tokens for info in ledger.get_all()}


def _chain(ledger: QuotaLedger) -> None:
    ledger.set_limit("org", 10_000, thresholds=(50,))
    ledger.set_limit("team-search", None, parent="org")
    ledger.set_limit("key-1", 5_000, thresholds=(80,), parent="team-search")
    ledger.set_limit("key-2", 5_000, thresholds=(80,), parent="team-search")


def test_one_call_counts_once_at_every_level(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock)
    _chain(ledger)
    ledger.record_usage("key-1", input_tokens=100, output_tokens=20, total_tokens=130)
    ledger.record_usage("key-2", input_tokens=7, success=False)
    assert _tokens(ledger) == {"org": 137, "team-search": 137, "key-1": 130, "key-2": 7}
    org = ledger.get("org")
    assert org is not None
    assert (org.successful_requests, org.failed_requests) == (1, 1)
    assert (org.input_tokens, org.output_tokens, org.other_tokens) == (107, 20, 10)
    assert ledger.get("key-1").parent == "team-search"  # type: ignore[union-attr]
    assert ledger.ancestors("key-1") == ["team-search", "org"]
    assert ledger.ancestors("org") == []


def test_each_level_keeps_its_own_period(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock)
    ledger.set_limit("org", 1_000_000, period="month")
    ledger.set_limit("key", 1_000, period="hour", parent="org")
    ledger.record_usage("key", input_tokens=10)
    clock.advance(3600)
    ledger.record_usage("key", input_tokens=5)
    assert _tokens(ledger) == {"org": 15, "key": 5}


def test_api_parents_must_exist_first_and_cannot_make_a_cycle(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock)
    with pytest.raises(ValueError, match="parent 'org' of config 'team' does not exist"):
        ledger.set_limit("team", 100, parent="org")
    assert "team" not in ledger  # nothing half-set
    ledger.set_limit("org", 100)
    ledger.set_limit("team", 100, parent="org")
    with pytest.raises(ValueError, match="cycle"):
        ledger.set_limit("org", 100, parent="team")
    with pytest.raises(ValueError, match="own parent"):
        ledger.set_limit("org", 100, parent="org")
    assert ledger.get("org").parent is None  # type: ignore[union-attr]
    # Re-parenting and unlinking take effect at once.
    ledger.set_limit("other", 100)
    ledger.set_limit("team", 100, parent="other")
    ledger.record_usage("team", input_tokens=3)
    ledger.set_limit("team", 100)
    ledger.record_usage("team", input_tokens=4)
    assert _tokens(ledger) == {"org": 0, "team": 7, "other": 3}


def test_a_deleted_parent_ends_the_chain_until_it_is_back(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock)
    _chain(ledger)
    ledger.delete("team-search")
    ledger.record_usage("key-1", input_tokens=5)  # team-search recreated? no: the chain ends
    assert _tokens(ledger) == {"org": 0, "key-1": 5, "key-2": 0}
    ledger.set_limit("team-search", None, parent="org")
    ledger.record_usage("key-1", input_tokens=1)
    assert _tokens(ledger)["org"] == 1


def test_a_parent_without_a_token_limit_is_exempt_from_the_cap(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock, max_configs=1, idle_config_seconds=60)
    ledger.set_limit("team", None)
    ledger.record_usage("usage-made", input_tokens=1)  # the one config the cap allows
    clock.advance(3600)
    ledger.expire_idle()
    assert ledger.config_ids() == ["team"]  # settings without a limit are kept


async def test_an_org_alert_fires_though_no_key_crossed_its_threshold(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock, metrics=False)
    handler = RecordingAlertHandler()
    manager.add_alert_handler(handler)
    _chain(manager.ledger)
    for _ in range(26):
        manager.record_usage("key-1", input_tokens=100)  # 2,600 of 5,000: below 80%
        manager.record_usage("key-2", input_tokens=100)
    alerts = await manager.check_quotas()
    assert [(a.config_id, a.threshold_percent, a.state) for a in alerts] == [
        ("org", 50.0, AlertState.FIRING)
    ]
    status = {s["config_id"]: s for s in await manager.get_all_quota_statuses()}
    assert status["org"]["total_tokens"] == 5_200
    assert status["key-1"]["alert_triggered"] is False
    assert status["key-1"]["parent"] == "team-search"
    await manager.aclose()


@pytest.fixture(params=sorted(set(BACKENDS) - {"redis-cluster"}))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> QuotaStore:
    store: QuotaStore = BACKENDS[request.param](request, tmp_path)
    return store


@pytest.fixture
async def two(
    backend: QuotaStore, clock: FakeClock
) -> AsyncIterator[tuple[LLMProviderManager, LLMProviderManager]]:
    a = LLMProviderManager(store=backend, clock=clock, flush_interval_seconds=60, metrics=False)
    b = LLMProviderManager(store=backend, clock=clock, flush_interval_seconds=60, metrics=False)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_through_a_store_each_level_is_counted_once_and_the_link_is_shared(
    two: tuple[LLMProviderManager, LLMProviderManager],
) -> None:
    a, b = two
    _chain(a.ledger)
    for _ in range(2):  # a's settings reach the store; b learns them, parents included
        assert await a.aflush()
        assert await b.aflush()
    assert b.ledger.ancestors("key-1") == ["team-search", "org"]
    a.record_usage("key-1", input_tokens=100)
    b.record_usage("key-2", input_tokens=10, output_tokens=1)
    for _ in range(2):
        assert await a.aflush()
        assert await b.aflush()
        assert await a.aflush()  # a retried flush changes nothing (idempotency marks)
    for manager in (a, b):
        assert _tokens(manager.ledger) == {
            "org": 111,
            "team-search": 111,
            "key-1": 100,
            "key-2": 11,
        }
        org = manager.ledger.get("org")
        assert org is not None
        assert org.total_requests == 2
        assert org.lifetime_input_tokens == 110
    status = {s["config_id"]: s for s in await b.get_all_quota_statuses()}
    assert status["team-search"]["parent"] == "org"
    assert status["team-search"]["quota_limit"] is None


async def test_a_new_process_reads_the_parents_from_the_store(
    backend: QuotaStore, clock: FakeClock
) -> None:
    a = LLMProviderManager(store=backend, clock=clock, flush_interval_seconds=60, metrics=False)
    _chain(a.ledger)
    assert await a.aflush()
    # A process started later (a CLI, another worker) that never set anything itself.
    c = LLMProviderManager(store=backend, clock=clock, flush_interval_seconds=60, metrics=False)
    try:
        assert await c.aflush()
        assert c.ledger.ancestors("key-2") == ["team-search", "org"]
        c.record_usage("key-2", input_tokens=9)
        assert await c.aflush()
        assert _tokens(c.ledger)["org"] == 9
    finally:
        await c.aclose()
        await a.aclose()


def test_the_cli_status_shows_the_parent(clock: FakeClock) -> None:
    ledger = QuotaLedger(clock=clock)
    _chain(ledger)
    console = Console(width=200, record=True)
    console.print(render(ledger.get_all(), "memory://", clock()))
    text = console.export_text()
    assert "key-1 ⊂ team-search" in text
    assert "team-search ⊂ org" in text


def _write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "quota.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_config_file_may_declare_children_before_parents(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "quotas": [
                {"config_id": "key-1", "limit": 1000, "parent": "team-search"},
                {"config_id": "team-search", "limit": None, "parent": "org"},
                {"config_id": "org", "limit": 100_000, "period": "month"},
            ]
        },
    )
    setup = load_config(path, environment=False)
    try:
        ledger = setup.manager.ledger
        assert ledger.ancestors("key-1") == ["team-search", "org"]
        assert ledger.get("team-search").quota_limit is None  # type: ignore[union-attr]
        ledger.record_usage("key-1", input_tokens=5)
        assert _tokens(ledger) == {"org": 5, "team-search": 5, "key-1": 5}
    finally:
        setup.manager.close()


def test_cycles_and_unknown_parents_are_errors_of_the_file_and_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "quotas": [
                {"config_id": "a", "limit": 10, "parent": "b"},
                {"config_id": "b", "limit": 10, "parent": "a"},
                {"config_id": "c", "limit": 10, "parent": "nope"},
                {"config_id": "d", "limit": 10},
            ]
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environment=False)
    assert (
        str(caught.value) == f"{path}: quotas[0] ('a'): parent 'b' makes a cycle: 'a' -> 'b' -> 'a'"
    )
    setup = load_config(path, environment=False, strict=False)
    try:
        assert setup.errors == [
            f"{path}: quotas[0] ('a'): parent 'b' makes a cycle: 'a' -> 'b' -> 'a'",
            f"{path}: quotas[1] ('b'): parent 'a' makes a cycle: 'b' -> 'a' -> 'b'",
            f"{path}: quotas[2] ('c'): parent 'nope' is not a declared quota",
        ]
        assert setup.manager.ledger.config_ids() == ["d"]  # the good parts still apply
    finally:
        setup.manager.close()
    result = CliRunner().invoke(cli, ["check-config", path])
    assert result.exit_code != 0
    assert "quotas[2] ('c'): parent 'nope' is not a declared quota" in result.output


def test_an_env_limit_keeps_the_file_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "key=500")
    path = _write(
        tmp_path,
        {
            "quotas": [
                {"config_id": "key", "limit": 10, "parent": "org"},
                {"config_id": "org", "limit": 99},
            ]
        },
    )
    setup = load_config(path)
    try:
        key = setup.manager.ledger.get("key")
        assert key is not None
        assert (key.quota_limit, key.parent) == (500, "org")
    finally:
        setup.manager.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_a_lost_reply_retried_counts_every_level_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> None:
    inner: QuotaStore = BACKENDS[kind](request, tmp_path)
    faulty = FaultyStore(inner)
    a = LLMProviderManager(store=faulty, clock=clock, flush_interval_seconds=60, metrics=False)
    try:
        _chain(a.ledger)
        assert await a.aflush()
        a.record_usage("key-1", input_tokens=11)
        faulty.lose_replies = 2  # the batch (three deltas) applied, and the reply lost, twice
        assert await a.aflush(timeout_seconds=10)
        assert await a.aflush()
        sync = a.store_sync
        assert sync is not None  # the store's own loop (a Redis connection lives on it)
        syncs = await sync.run(inner.read([(c, 0) for c in ("org", "team-search", "key-1")]))
        assert [s.lifetime[2] for s in syncs] == [11, 11, 11]
        assert _tokens(a.ledger) == {"org": 11, "team-search": 11, "key-1": 11, "key-2": 0}
    finally:
        await a.aclose()


def test_cli_set_limit_keeps_the_parent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/quota.db"
    manager = LLMProviderManager(store=url, metrics=False)
    _chain(manager.ledger)
    assert manager.flush()
    manager.close()
    result = CliRunner().invoke(cli, ["set-limit", "key-1", "2000", "--store", url])
    assert result.exit_code == 0, result.output
    reader = LLMProviderManager(store=url, metrics=False)
    try:
        key = reader.ledger.get("key-1")
        assert key is not None
        assert (key.quota_limit, key.parent) == (2000, "team-search")
    finally:
        reader.close()


# -- cost: nested budgets apply to cost limits too ------------------------------------------------

# One micro-USD per input token, two per output token: costs are easy to check by hand.
_PRICES = [{"provider": "openai", "model": "m", "input": 1.0, "output": 2.0}]


def _costs(ledger: QuotaLedger) -> dict[str, tuple[int, int]]:
    return {i.config_id: (i.cost_microusd, i.unpriced_requests) for i in ledger.get_all()}


def _cost_chain(manager: LLMProviderManager) -> None:
    """org (cost limit 5,000 micro-USD, alert at 50 %) > team (no limit) > key-1, key-2 (cost
    limits 4,000 micro-USD, alert at 80 %); token limits far away."""
    manager.set_prices(_PRICES)
    manager.set_quota_limit_sync("org", 10**9, cost_limit_usd=0.005, cost_thresholds=(50,))
    manager.set_quota_limit_sync("team", None, parent="org")
    for key in ("key-1", "key-2"):
        manager.set_quota_limit_sync(
            key, 10**9, parent="team", cost_limit_usd=0.004, cost_thresholds=(80,)
        )


def test_a_childs_cost_and_unpriced_requests_count_at_every_level(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock, metrics=False)
    try:
        _cost_chain(manager)
        manager.record_usage("key-1", provider="openai", model="m", input_tokens=100)
        manager.record_usage(
            "key-2", provider="openai", model="m", input_tokens=10, output_tokens=20
        )
        manager.record_usage("key-2", provider="openai", model="no-price", input_tokens=7)
        assert _costs(manager.ledger) == {
            "org": (150, 1),
            "team": (150, 1),
            "key-1": (100, 0),
            "key-2": (50, 1),
        }
        org = manager.ledger.get("org")
        team = manager.ledger.get("team")
        assert org is not None
        assert team is not None
        assert (org.lifetime_cost_microusd, org.lifetime_unpriced_requests) == (150, 1)
        # set_quota_limit took both the parent and the cost limit
        assert (org.cost_limit_microusd, org.cost_thresholds) == (5_000, (50.0,))
        assert (team.parent, team.cost_limit_microusd) == ("org", None)
    finally:
        manager.close()


async def test_an_org_cost_alert_fires_though_no_key_crossed_its_own(clock: FakeClock) -> None:
    manager = LLMProviderManager(clock=clock, metrics=False)
    handler = RecordingAlertHandler()
    manager.add_alert_handler(handler)
    _cost_chain(manager)
    for _ in range(26):  # 2,600 micro-USD per key: below 80 % of 4,000
        manager.record_usage("key-1", provider="openai", model="m", input_tokens=100)
        manager.record_usage("key-2", provider="openai", model="m", input_tokens=100)
    alerts = await manager.check_quotas()
    assert [(a.config_id, a.limit_kind, a.threshold_percent, a.state) for a in alerts] == [
        ("org", "cost", 50.0, AlertState.FIRING)
    ]
    assert alerts[0].quota.cost_microusd == 5_200
    assert alerts[0].quota.cost_alert_threshold == 50.0
    status = {s["config_id"]: s for s in await manager.get_all_quota_statuses()}
    assert status["org"]["alert_triggered"] is True
    assert status["key-1"]["alert_triggered"] is False
    assert (status["key-1"]["parent"], status["key-1"]["cost_microusd"]) == ("team", 2_600)
    # Then a key crosses its own cost threshold: its alert, and the org's does not repeat.
    for _ in range(6):  # 3,200 micro-USD: 80 % of 4,000
        manager.record_usage("key-1", provider="openai", model="m", input_tokens=100)
    alerts = await manager.check_quotas()
    assert [(a.config_id, a.limit_kind, a.threshold_percent) for a in alerts] == [
        ("key-1", "cost", 80.0)
    ]
    await manager.aclose()


async def test_through_a_store_each_levels_cost_is_counted_once(
    two: tuple[LLMProviderManager, LLMProviderManager],
) -> None:
    a, b = two
    _cost_chain(a)
    b.set_prices(_PRICES)
    for _ in range(2):  # a's settings reach the store; b learns them, parents included
        assert await a.aflush()
        assert await b.aflush()
    assert b.ledger.ancestors("key-1") == ["team", "org"]
    a.record_usage("key-1", provider="openai", model="m", input_tokens=100)
    b.record_usage("key-2", provider="openai", model="m", input_tokens=10, output_tokens=1)
    b.record_usage("key-2", provider="openai", model="no-price", input_tokens=1)
    for _ in range(2):
        assert await a.aflush()
        assert await b.aflush()
        assert await a.aflush()  # a retried flush changes nothing (idempotency marks)
    for manager in (a, b):
        assert _costs(manager.ledger) == {
            "org": (112, 1),
            "team": (112, 1),
            "key-1": (100, 0),
            "key-2": (12, 1),
        }
        org = manager.ledger.get("org")
        assert org is not None
        assert (org.lifetime_cost_microusd, org.lifetime_unpriced_requests) == (112, 1)
        assert org.cost_limit_microusd == 5_000  # the cost limit is shared with the parents
    status = {s["config_id"]: s for s in await b.get_all_quota_statuses()}
    assert status["key-2"]["parent"] == "team"
    assert status["key-2"]["cost_limit_usd"] == 0.004


def test_the_cli_status_shows_the_parent_and_the_cost(clock: FakeClock) -> None:
    from otel_llm_quota.cli._status import table_lines

    manager = LLMProviderManager(clock=clock, metrics=False)
    try:
        _cost_chain(manager)
        manager.record_usage("key-1", provider="openai", model="m", input_tokens=1_250)
        infos = manager.ledger.get_all()
        console = Console(width=250, record=True)
        console.print(render(infos, "memory://", clock()))
        lines = list(table_lines(infos, "memory://", clock(), console=Console(no_color=True)))
        for text in (console.export_text(), "\n".join(lines)):
            assert "cost USD/limit" in text
            row = next(line for line in text.splitlines() if "key-1 (openai) ⊂ team" in line)
            assert "$0.0013/$0.00 (31.2%)" in row  # 1,250 of 4,000 micro-USD
            org = next(line for line in text.splitlines() if line.lstrip().startswith("org"))
            assert "(25.0%)" in org  # the org's cost: its child's
        header = lines[1].split()
        assert header.index("cost") == header.index("%") + 1  # after the token columns
    finally:
        manager.close()


def test_cli_set_limit_usd_keeps_the_parent_and_limit_keeps_the_cost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/quota.db"
    manager = LLMProviderManager(store=url, metrics=False)
    _cost_chain(manager)
    assert manager.flush()
    manager.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["set-limit", "key-1", "--usd", "2", "--store", url])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["set-limit", "key-1", "3000", "--store", url])
    assert result.exit_code == 0, result.output
    reader = LLMProviderManager(store=url, metrics=False)
    try:
        key = reader.ledger.get("key-1")
        assert key is not None
        assert (key.quota_limit, key.cost_limit_usd, key.parent) == (3000, 2.0, "team")
    finally:
        reader.close()


def test_an_env_limit_keeps_the_file_parent_and_cost_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "key=500")
    path = _write(
        tmp_path,
        {
            "quotas": [
                {"config_id": "key", "limit": 10, "parent": "org", "cost_limit_usd": 5}
                | {"cost_thresholds": [50, 90]},
                {"config_id": "org", "limit": None, "cost_limit_usd": 50},
            ]
        },
    )
    setup = load_config(path)
    try:
        key = setup.manager.ledger.get("key")
        assert key is not None
        assert (key.quota_limit, key.parent) == (500, "org")
        assert (key.cost_limit_usd, key.cost_thresholds) == (5.0, (50.0, 90.0))
    finally:
        setup.manager.close()
