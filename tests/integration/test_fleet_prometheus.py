"""A fleet in Prometheus: two real processes (tests/integration/apps/store_worker.py) share one
quota store (Redis, or one SQLite file), each serves its own metrics
(``start_prometheus_server``), and a real Prometheus scrapes both as one job with the shipped
rules loaded. The quota-state gauges are fleet-wide (every instance reports the fleet's value:
aggregate with ``max``), the token counters are each process's own (``sum`` is the fleet's), the
rules' quota alerts fire once per config, not once per instance, and every query of the shipped
dashboard shows one line per config for the fleet. A replica cut off from the store alerts
alone (LLMQuotaStoreFailing is per instance).

The rules and dashboard are written for the Collector's names; scraping apps directly, the one
rename of collector-config/README.md adapts them (utilization_ratio -> utilization), as here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._fleet import Worker
from ._peers import poll, prometheus_query, running_prometheus, wait_for_values
from .conftest import require_binary, require_module

if TYPE_CHECKING:
    import httpx
    from _redis import ReplyDroppingProxy

pytestmark = pytest.mark.integration

CONFIG_DIR = Path(__file__).resolve().parents[2] / "collector-config"
JOB = "chat-app"
CONFIG = """\
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ['{rules}']
scrape_configs:
  - job_name: {job}
    static_configs: [{{targets: {targets}}}]
"""
# Grafana's built-in variables, as Grafana would set them for a short time range.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Panels that are rightly empty: no handler failed, the store always answered, no config has a
# cost limit.
MAY_BE_EMPTY = {"Alert handler failures", "Quota store errors (per instance)", "Cost budget used"}
# Panels about one process: one line per instance.
PER_INSTANCE_PANELS = {"Quota store sync (per instance)", *MAY_BE_EMPTY}
# The fleet's values, whichever instance reports them: one line per config, never a sum of two.
PANEL_VALUES = {
    ("Utilization", "A"): 0.9,
    ("Usage vs limit", "A"): 900,
    ("Usage vs limit", "B"): 1000,
    ("Remaining tokens", "A"): 100,
    ("Quota alerts sent", "A"): 1,  # the app's own 80% alert: one replica sent it
}


def for_the_apps_endpoint(text: str) -> str:
    """collector-config/README.md's adaptation for scraping apps directly."""
    assert "llm_quota_utilization_ratio" in text
    return text.replace("llm_quota_utilization_ratio", "llm_quota_utilization")


def adapted_rules() -> str:
    """The shipped rules for the apps' endpoints, with LLMQuotaHigh's ``for: 5m`` cut to 1s so
    that it fires within the test."""
    text = for_the_apps_endpoint((CONFIG_DIR / "prometheus-rules.yaml").read_text())
    high = "- alert: LLMQuotaHigh\n"
    head, sep, tail = text.partition(high)
    assert sep
    assert "for: 5m" in tail
    return head + sep + tail.replace("for: 5m", "for: 1s", 1)


@dataclass
class Fleet:
    workers: list[Worker]
    instances: list[str]  # each worker's Prometheus instance label (its scrape target)
    prometheus: str


@pytest.fixture(params=["redis", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return f"sqlite:///{tmp_path}/fleet.db"


@pytest.fixture
def workers(store_url: str) -> Iterator[list[Worker]]:
    """Two processes on one store, with their monitors running (the app's own alerts)."""
    with started_workers(store_url, store_url) as started:
        yield started


@contextmanager
def started_workers(*stores: str) -> Iterator[list[Worker]]:
    """One worker process per store URL (all reaching one store), closed at the end."""
    require_module("opentelemetry.exporter.prometheus", "install the 'prometheus' extra")
    started: list[Worker] = []
    try:
        for store in stores:
            started.append(Worker(store, "--monitor", "0.2"))
        yield started
    finally:
        for worker in started:
            worker.close()


@asynccontextmanager
async def scraped(tmp_path: Path, workers: list[Worker]) -> AsyncIterator[Fleet]:
    """The workers' metrics served, and a real Prometheus scraping them as one job with the
    adapted rules."""
    require_module("httpx")
    binary = require_binary("prometheus")
    instances = [f"127.0.0.1:{w.ask('serve-prometheus', 'serving').split()[1]}" for w in workers]
    rules = tmp_path / "prometheus-rules.yaml"
    rules.write_text(adapted_rules())
    config = CONFIG.format(rules=rules, job=JOB, targets=json.dumps(instances))
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    async with running_prometheus(binary, config, workdir) as url:
        yield Fleet(workers, instances, url)


@pytest.fixture
async def fleet(tmp_path: Path, workers: list[Worker]) -> AsyncIterator[Fleet]:
    async with scraped(tmp_path, workers) as running:
        yield running


async def values_by_instance(
    client: httpx.AsyncClient, prometheus: str, promql: str
) -> dict[str, float]:
    return {
        s["metric"]["instance"]: float(s["value"][1])
        for s in await prometheus_query(client, prometheus, promql)
    }


async def test_two_processes_on_one_store_are_one_fleet_in_prometheus(fleet: Fleet) -> None:
    import httpx

    a, b = fleet.workers
    prom = fleet.prometheus
    async with httpx.AsyncClient(timeout=5) as client:
        a.ask("limit chat 1000 80", "ok")
        # The limit set in one process is the fleet's: both instances report it.
        await wait_for_values(
            client, prom, "count by (llm_quota_config_id) (llm_quota_limit == 1000)", {"chat": 2}
        )
        a.ask("record chat 3 100", "recorded")
        assert a.ask("flush", "flushed") == "flushed True"
        await wait_for_values(
            client, prom, "min by (llm_quota_config_id) (llm_quota_usage)", {"chat": 300}
        )
        # A second sample of the counters: the rates over the next usage are positive.
        b.ask("record chat 5 120", "recorded")
        assert b.ask("flush", "flushed") == "flushed True"

        # Every instance reports the fleet's usage: max is the fleet total, and so is min.
        await wait_for_values(
            client, prom, "max by (llm_quota_config_id) (llm_quota_usage)", {"chat": 900}
        )
        await wait_for_values(
            client, prom, "min by (llm_quota_config_id) (llm_quota_usage)", {"chat": 900}
        )
        usage = await values_by_instance(client, prom, "llm_quota_usage")
        assert usage == dict.fromkeys(fleet.instances, 900)
        await wait_for_values(
            client, prom, "max by (llm_quota_config_id) (llm_quota_utilization)", {"chat": 0.9}
        )
        # The token counters are each process's own: their sum is the fleet total.
        await wait_for_values(
            client, prom, "sum by (llm_quota_config_id) (llm_quota_tokens_total)", {"chat": 900}
        )
        own = await values_by_instance(
            client, prom, 'llm_quota_tokens_total{gen_ai_token_type="input"}'
        )
        assert own == dict(zip(fleet.instances, [300, 600], strict=True))

        # The shipped rules: LLMQuotaHigh fires once for the config, not once per instance.
        async def firing() -> list[dict[str, Any]] | None:
            promql = 'ALERTS{alertname="LLMQuotaHigh", alertstate="firing"}'
            return await prometheus_query(client, prom, promql) or None

        alerts = await poll(firing, deadline_seconds=30, what="LLMQuotaHigh firing")
        assert len(alerts) == 1, alerts
        assert alerts[0]["metric"] == {
            "__name__": "ALERTS",
            "alertname": "LLMQuotaHigh",
            "alertstate": "firing",
            "job": JOB,
            "llm_quota_config_id": "chat",
            "severity": "warning",
        }
        # Both instances were over 80% at that evaluation, yet the rule holds one alert.
        (rule,) = [
            r
            for g in (await client.get(f"{prom}/api/v1/rules")).json()["data"]["groups"]
            for r in g["rules"]
            if r["name"] == "LLMQuotaHigh"
        ]
        assert [x["labels"]["llm_quota_config_id"] for x in rule["alerts"]] == ["chat"]
        assert rule["health"] == "ok"
        assert await values_by_instance(client, prom, "llm_quota_utilization >= 0.8") == (
            dict.fromkeys(fleet.instances, 0.9)
        )

        # The app's own threshold alert: one process of the two sent it.
        await wait_for_values(
            client,
            prom,
            'sum by (llm_quota_config_id) (llm_quota_alerts_total{llm_quota_alert_state="firing"})',
            {"chat": 1},
        )
        # The recording rule's fleet rate: one series, no instance.
        rates = await poll(
            lambda: positive_rate(client, prom), deadline_seconds=30, what="a positive token rate"
        )
        assert set(rates[0]["metric"]) == {"__name__", "job", "llm_quota_config_id"}

        await check_dashboard(client, fleet)


async def positive_rate(client: httpx.AsyncClient, prom: str) -> list[dict[str, Any]] | None:
    result = await prometheus_query(client, prom, "llm_quota:tokens:rate5m")
    return result if result and all(float(s["value"][1]) > 0 for s in result) else None


def expand(expr: str) -> str:
    for name, value in {**BUILTINS, "$job": ".*", "$config_id": ".*"}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr


async def check_dashboard(client: httpx.AsyncClient, fleet: Fleet) -> None:
    """Every query of the shipped dashboard on this fleet: quota panels show one line per config
    with the fleet's value, per-instance panels one line per instance."""
    board = json.loads(for_the_apps_endpoint((CONFIG_DIR / "grafana-dashboard.json").read_text()))
    checked: set[tuple[str, str]] = set()
    for panel in board["panels"]:
        for target in panel["targets"]:
            what = f"panel {panel['title']!r}: {target['expr']}"
            promql = expand(target["expr"])
            if panel["title"] in MAY_BE_EMPTY:
                assert await prometheus_query(client, fleet.prometheus, promql) == [], what
                continue

            async def series(promql: str = promql) -> list[dict[str, Any]] | None:
                return await prometheus_query(client, fleet.prometheus, promql) or None

            result = await poll(series, deadline_seconds=30, what=what)
            if panel["title"] in PER_INSTANCE_PANELS:
                assert {s["metric"]["instance"] for s in result} == set(fleet.instances), what
                continue
            assert all("instance" not in s["metric"] for s in result), what
            if "$config_id" in target["expr"]:
                assert {s["metric"]["llm_quota_config_id"] for s in result} == {"chat"}, what
            key = (panel["title"], target["refId"])
            if key in PANEL_VALUES:
                assert [float(s["value"][1]) for s in result] == [PANEL_VALUES[key]], what
                checked.add(key)
    assert checked == set(PANEL_VALUES)


async def test_a_replica_cut_off_from_the_store_alerts_alone(
    tmp_path: Path, redis_url: str, reply_dropping_proxy: ReplyDroppingProxy
) -> None:
    """LLMQuotaStoreFailing is per instance: only the replica that cannot reach Redis (through
    a proxy that starts refusing connections) alerts, from its first failure on; its unflushed
    usage shows as llm_quota_store_pending and reaches the fleet once the store answers again."""
    import httpx

    with started_workers(reply_dropping_proxy.url(), redis_url) as workers:
        async with scraped(tmp_path, workers) as fleet, httpx.AsyncClient(timeout=5) as client:
            cut_off, healthy = fleet.instances
            a = workers[0]
            prom = fleet.prometheus
            a.ask("limit chat 1000 80", "ok")
            a.ask("record chat 1 100", "recorded")
            assert a.ask("flush", "flushed") == "flushed True"
            await wait_for_values(
                client, prom, "count by (llm_quota_config_id) (llm_quota_usage == 100)", {"chat": 2}
            )

            reply_dropping_proxy.set_mode("refuse")
            a.ask("record chat 2 100", "recorded")
            assert a.ask("flush", "flushed") == "flushed False"

            async def firing() -> list[dict[str, Any]] | None:
                promql = 'ALERTS{alertname="LLMQuotaStoreFailing", alertstate="firing"}'
                return await prometheus_query(client, prom, promql) or None

            alerts = await poll(firing, deadline_seconds=30, what="LLMQuotaStoreFailing firing")
            # One series per failing operation, all of the cut-off instance.
            assert {x["metric"]["instance"] for x in alerts} == {cut_off}, alerts
            assert alerts[0]["metric"]["job"] == JOB
            assert await values_by_instance(client, prom, "llm_quota_store_pending") == {
                cut_off: 1,
                healthy: 0,
            }
            # The healthy replica has not seen the cut-off one's last 200 tokens.
            assert await values_by_instance(
                client, prom, f'llm_quota_usage{{instance="{healthy}"}}'
            ) == {healthy: 100}

            reply_dropping_proxy.set_mode("forward")
            assert a.ask("flush", "flushed") == "flushed True"
            await wait_for_values(
                client, prom, "min by (llm_quota_config_id) (llm_quota_usage)", {"chat": 300}
            )

            async def flushed() -> bool | None:
                pending = await values_by_instance(client, prom, "llm_quota_store_pending")
                return True if pending == {cut_off: 0, healthy: 0} else None

            await poll(flushed, deadline_seconds=30, what="nothing pending on either instance")
