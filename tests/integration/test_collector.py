"""End to end through collector-config/: an app pushes its quota metrics over OTLP/HTTP to the
real OpenTelemetry Collector built by ``make collector`` (run with the shipped
otelcol-config.yaml), a real Prometheus scrapes the collector with the shipped prometheus.yml and
loads the shipped rules, and every query of the shipped Grafana dashboard runs against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from otel_llm_quota import LLMProviderManager, instrument_metrics
from otel_llm_quota.testing import FakeClock, RecordingAlertHandler

from ._peers import (
    poll,
    prometheus_query,
    running_prometheus,
    running_server,
    values_by_config,
    wait_for_values,
)
from .conftest import free_port, require_binary, require_module

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.metrics import MeterProvider

    from otel_llm_quota import Alert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "collector-config"
COLLECTOR_BINARY = Path(
    os.environ.get(
        "OTELCOL_LLM_QUOTA_BINARY", REPO / ".tools" / "otelcol-llm-quota" / "otelcol-llm-quota"
    )
)
SERVICE_NAME = "quota-app"
INSTANCE_ID = "replica-1"
CONFIGS = {"openai-prod", "anthropic-dev"}


@dataclass
class Collector:
    otlp_http_url: str
    prometheus_target: str
    telemetry_target: str


@dataclass
class App:
    manager: LLMProviderManager
    meter_provider: MeterProvider


class BrokenHandler:
    """An alert handler that always raises: feeds llm.quota.handler.failures."""

    name = "broken"

    async def handle_alert(self, alert: Alert) -> None:
        raise RuntimeError("the pager is down")


@pytest.fixture
async def manager(
    clock: FakeClock, recorder: RecordingAlertHandler, tmp_path: Path
) -> AsyncIterator[LLMProviderManager]:
    """The app keeps its quota state in a store, a fleet of one (the rules and dashboard are
    written for fleets and hold for one process), so the store's own metrics reach Prometheus
    through the collector too."""
    store = f"sqlite:///{tmp_path}/quota.db"
    async with LLMProviderManager(
        clock=clock, cooldown_seconds=3600, store=store, flush_interval_seconds=0.2
    ) as mgr:
        mgr.add_alert_handler(recorder)
        yield mgr


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@asynccontextmanager
async def started_collector(
    tmp_path: Path, *overlays: str, env: dict[str, str] | None = None
) -> AsyncIterator[Collector]:
    """The collector built by `make collector`, running otelcol-config.yaml (and ``overlays``,
    files of collector-config/) on free loopback ports, until the block ends."""
    binary = require_binary(str(COLLECTOR_BINARY), "run `make collector` (needs Go)")
    grpc, http, prom, health, telemetry = distinct_free_ports(5)
    addresses = {
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{prom}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(telemetry),
        **(env or {}),
    }
    args = [
        binary,
        *(f"--config={CONFIG_DIR / name}" for name in ("otelcol-config.yaml", *overlays)),
    ]
    ready = f"http://127.0.0.1:{health}/"
    async with running_server(args, tmp_path / "otelcol.log", ready, env=addresses):
        yield Collector(
            otlp_http_url=f"http://127.0.0.1:{http}",
            prometheus_target=f"127.0.0.1:{prom}",
            telemetry_target=f"127.0.0.1:{telemetry}",
        )


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    async with started_collector(tmp_path) as started:
        yield started


@pytest.mark.parametrize(
    "configs",
    [
        ["otelcol-config.yaml"],
        ["otelcol-config.yaml", "otelcol-forward.yaml"],
        ["otelcol-config.yaml", "otelcol-events-file.yaml"],
        ["otelcol-config.yaml", "otelcol-genai-tokens.yaml"],
        ["otelcol-config.yaml", "otelcol-quota-service.yaml"],
        ["otelcol-config.yaml", "otelcol-quota-service.yaml", "otelcol-events-file.yaml"],
    ],
    ids=[
        "main",
        "with-forward-overlay",
        "with-events-file-overlay",
        "with-genai-tokens-overlay",
        "with-quota-service-overlay",
        "with-quota-service-and-events-file-overlays",
    ],
)
def test_shipped_collector_configs_validate(configs: list[str], tmp_path: Path) -> None:
    """The collector accepts its configuration files (and builds every component they name)."""
    binary = require_binary(str(COLLECTOR_BINARY), "run `make collector` (needs Go)")
    overlay_env = {
        "OTELCOL_FORWARD_ENDPOINT": "http://127.0.0.1:4318",
        "OTELCOL_EVENTS_FILE": str(tmp_path / "events.jsonl"),
        "OTELCOL_QUOTA_SERVICE_ENDPOINT": "http://127.0.0.1:4319",
        "OTELCOL_TRACES_ENDPOINT": "http://127.0.0.1:4320",
    }
    result = subprocess.run(
        [binary, "validate", *(f"--config={CONFIG_DIR / name}" for name in configs)],
        env={**os.environ, **overlay_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_collector_rejects_a_config_naming_a_component_it_lacks(tmp_path: Path) -> None:
    """validate is not vacuous: a component outside builder-config.yaml is an error."""
    binary = require_binary(str(COLLECTOR_BINARY), "run `make collector` (needs Go)")
    text = (CONFIG_DIR / "otelcol-config.yaml").read_text()
    config = tmp_path / "otelcol.yaml"
    config.write_text(text.replace("exporters: [prometheus]", "exporters: [prometheusremotewrite]"))
    result = subprocess.run(
        [binary, "validate", f"--config={config}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "prometheusremotewrite" in result.stdout + result.stderr


def prometheus_config(collector: Collector) -> str:
    """The shipped prometheus.yml with only addresses, intervals and the rules path rewritten."""
    text = (CONFIG_DIR / "prometheus.yml").read_text()
    replacements = {
        "scrape_interval: 15s": "scrape_interval: 1s",
        "evaluation_interval: 15s": "evaluation_interval: 1s",
        "- prometheus-rules.yaml": f"- {CONFIG_DIR / 'prometheus-rules.yaml'}",
        "'127.0.0.1:8889'": f"'{collector.prometheus_target}'",
        "'127.0.0.1:8888'": f"'{collector.telemetry_target}'",
        "'127.0.0.1:9093'": f"'127.0.0.1:{free_port()}'",  # no Alertmanager in this test
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"prometheus.yml: expected one {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
async def prometheus(tmp_path: Path, collector: Collector) -> AsyncIterator[str]:
    binary = require_binary("prometheus")
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    async with running_prometheus(binary, prometheus_config(collector), workdir) as url:
        yield url


@pytest.fixture
def app(
    manager: LLMProviderManager, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    """The app side as the README tells users to set it up: the standard OTEL_* variables."""
    require_module("opentelemetry.exporter.otlp.proto.http", "install the 'test' extra")
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.otlp_http_url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", SERVICE_NAME)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"service.instance.id={INSTANCE_ID}")
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=1000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create())
    metrics = instrument_metrics(manager, meter_provider=provider)
    yield App(manager, provider)
    metrics.shutdown()
    provider.shutdown()


async def use_quotas(app: App, client: httpx.AsyncClient, prometheus: str) -> None:
    """Two configs with usage; then openai-prod crosses 80%, alerting a recorder and a handler
    that fails. Returns once Prometheus holds the final usage."""
    manager = app.manager
    manager.add_alert_handler(BrokenHandler())
    await manager.set_quota_limit(
        "openai-prod", 1000, thresholds=(80,), provider="openai", cost_limit_usd=1.0
    )
    await manager.set_quota_limit("anthropic-dev", 4000, thresholds=(90,), provider="anthropic")
    manager.record_usage("openai-prod", input_tokens=200, output_tokens=50)
    manager.record_usage("anthropic-dev", input_tokens=3000)
    assert await manager.check_quotas() == []
    await wait_for_values(
        client, prometheus, "llm_quota_usage", {"openai-prod": 250, "anthropic-dev": 3000}
    )
    # A second sample of the counters: rates over the new usage are positive from here on.
    manager.record_usage("openai-prod", input_tokens=650)
    (alert,) = await manager.check_quotas()
    assert alert.config_id == "openai-prod"
    assert alert.is_firing
    await wait_for_values(
        client, prometheus, "llm_quota_usage", {"openai-prod": 900, "anthropic-dev": 3000}
    )


async def test_quota_metrics_reach_prometheus_through_the_collector(
    app: App, prometheus: str, recorder: RecordingAlertHandler
) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=5) as client:
        await use_quotas(app, client, prometheus)
        expectations: dict[str, dict[str, float]] = {
            "llm_quota_limit": {"openai-prod": 1000, "anthropic-dev": 4000},
            "llm_quota_utilization_ratio": {"openai-prod": 0.9, "anthropic-dev": 0.75},
            "llm_quota_remaining": {"openai-prod": 100, "anthropic-dev": 1000},
            'llm_quota_tokens_total{gen_ai_token_type="input"}': {
                "openai-prod": 850,
                "anthropic-dev": 3000,
            },
            'llm_quota_tokens_total{gen_ai_token_type="output"}': {
                "openai-prod": 50,
                "anthropic-dev": 0,
            },
            'llm_quota_alerts_total{llm_quota_alert_state="firing",llm_quota_threshold="80"}': {
                "openai-prod": 1
            },
            # Cost (the usage names no model: every request is unpriced, none is free).
            "llm_quota_cost_limit_USD": {"openai-prod": 1.0},
            "llm_quota_cost_usage_USD": {"openai-prod": 0, "anthropic-dev": 0},
            "llm_quota_requests_unpriced_total": {"openai-prod": 2, "anthropic-dev": 1},
        }
        for promql, expected in expectations.items():
            await wait_for_values(client, prometheus, promql, expected)

        # The labels: config and provider from the app, job/instance from its OTel resource
        # (kept as they are by honor_labels in prometheus.yml), the meter as the scope.
        usage = await prometheus_query(client, prometheus, "llm_quota_usage")
        providers = {"openai-prod": "openai", "anthropic-dev": "anthropic"}
        for series in usage:
            labels = series["metric"]
            assert labels["job"] == SERVICE_NAME
            assert labels["instance"] == INSTANCE_ID
            assert labels["gen_ai_provider_name"] == providers[labels["llm_quota_config_id"]]
            assert labels["otel_scope_name"] == "otel_llm_quota"
            assert "exported_job" not in labels

        # The Python exporter's name for the utilization does not exist on this path.
        assert await prometheus_query(client, prometheus, "llm_quota_utilization") == []

        async def failures() -> list[dict[str, Any]] | None:
            return await prometheus_query(client, prometheus, "llm_quota_handler_failures_total")

        (failed,) = await poll(failures, deadline_seconds=30, what="the handler failure series")
        assert failed["metric"]["llm_quota_handler_name"] == "broken"
        assert failed["metric"]["error_type"] == "exception"
        assert float(failed["value"][1]) == 1

        # The recording rules evaluate on the real data: openai-prod's tokens went 250 -> 900
        # between two scrapes, anthropic-dev's stayed put.
        async def token_rates() -> dict[str, float] | None:
            rates = await values_by_config(client, prometheus, "llm_quota:tokens:rate5m")
            return rates if set(rates) == CONFIGS and rates["openai-prod"] > 0 else None

        rates = await poll(token_rates, deadline_seconds=30, what="llm_quota:tokens:rate5m > 0")
        assert rates["anthropic-dev"] == 0

        groups = await healthy_rule_groups(client, prometheus)
        targets = (await client.get(f"{prometheus}/api/v1/targets")).json()["data"]
    assert {g["name"] for g in groups} == {
        "llm-quota.recording",
        "llm-quota.alerts",
        "llm-quota.cost",
    }
    alert_rules = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    tested = set(
        re.findall(r"alertname: (\w+)", (CONFIG_DIR / "prometheus-rules.test.yaml").read_text())
    )
    assert (
        alert_rules
        == tested
        == {
            "LLMQuotaExhausted",
            "LLMQuotaHigh",
            "LLMQuotaWillRunOutBeforeReset",
            "LLMQuotaAlertHandlerFailing",
            "LLMQuotaStoreFailing",
            "LLMQuotaCostHigh",
            "LLMQuotaCostExhausted",
            "LLMQuotaUnpricedRequests",
        }
    )
    health = {t["labels"]["job"]: t["health"] for t in targets["activeTargets"]}
    assert health == {"otelcol-llm-quota": "up", "otelcol-self": "up"}
    assert len(recorder.alerts) == 1


async def healthy_rule_groups(client: httpx.AsyncClient, prometheus: str) -> list[dict[str, Any]]:
    """The rule groups once every rule has been evaluated; fails if any rule is unhealthy."""

    async def evaluated() -> list[dict[str, Any]] | None:
        body = (await client.get(f"{prometheus}/api/v1/rules")).json()
        assert body["status"] == "success"
        groups: list[dict[str, Any]] = body["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        for rule in rules:
            assert rule["health"] in {"ok", "unknown"}, rule
        if len(rules) == 12 and all(rule["health"] == "ok" for rule in rules):
            return groups
        return None

    return await poll(evaluated, deadline_seconds=30, what="every rule evaluated and healthy")


DASHBOARD = CONFIG_DIR / "grafana-dashboard.json"
# Grafana's built-in variables, as Grafana would set them for a short time range.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Panels that are rightly empty here: no rule has been pending for its `for:` yet; the store
# never failed.
MAY_BE_EMPTY = {"Firing quota alerts (Prometheus)", "Quota store errors (per instance)"}
# Panels about one process (no config id): they show each instance.
PER_INSTANCE_PANELS = {
    "Alert handler failures",
    "Quota store sync (per instance)",
    "Quota store errors (per instance)",
}
# The configs a per-config panel shows after use_quotas(): only openai-prod used tokens between
# two scrapes (a positive rate) and crossed a threshold.
PANEL_CONFIGS = {
    "Cost budget used": {"openai-prod"},  # the one config with a cost limit
    "Time to exhaustion at current rate": {"openai-prod"},
    "Quota alerts sent": {"openai-prod"},
}


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def expand(expr: str, job: str = ".*", config_id: str = ".*") -> str:
    for name, value in {**BUILTINS, "$job": job, "$config_id": config_id}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr


def test_dashboard_is_a_grafana_dashboard_with_datasource_and_config_variables() -> None:
    board = dashboard()
    assert board["uid"] == "otel-llm-quota"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["config_id"]["type"] == "query"
    assert variables["config_id"]["includeAll"] is True
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = {p["title"] for p in panels}
    assert {
        "Usage vs limit",
        "Utilization",
        "Time until reset",
        "Token rate by type",
        "Requests by outcome",
        "Quota alerts sent",
        *PER_INSTANCE_PANELS,
    } <= titles
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            if panel["title"] in PER_INSTANCE_PANELS:
                assert "by (job, instance" in target["expr"], panel["title"]
            elif "ALERTS" not in target["expr"]:
                # Per-config panels follow the config_id variable, one line per app and config
                # for a whole fleet (quota state is fleet-wide: never per instance or summed).
                assert 'llm_quota_config_id=~"$config_id"' in target["expr"], panel["title"]
                assert "instance" not in target["expr"], panel["title"]
                assert target["expr"].startswith(
                    ("max by (job, ", "min by (job, ", "sum by (job, ")
                )


async def test_every_dashboard_query_returns_series_from_the_collector(
    app: App, prometheus: str
) -> None:
    import httpx

    board = dashboard()
    async with httpx.AsyncClient(timeout=5) as client:
        await use_quotas(app, client, prometheus)

        # The variables' label_values() queries, as Grafana runs them (series API).
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            selector, label = match.groups()
            response = await client.get(
                f"{prometheus}/api/v1/label/{label}/values",
                params={"match[]": expand(selector)},
            )
            values = set(response.json()["data"])
            assert values == {"job": {SERVICE_NAME}, "config_id": CONFIGS}[variable["name"]]

        for panel in board["panels"]:
            for target in panel["targets"]:
                what = f"panel {panel['title']!r}: {target['expr']}"
                promql = expand(target["expr"])
                if panel["title"] in MAY_BE_EMPTY:
                    await prometheus_query(client, prometheus, promql)  # parses and runs
                    continue

                async def series(promql: str = promql) -> list[dict[str, Any]] | None:
                    return await prometheus_query(client, prometheus, promql) or None

                result = await poll(series, deadline_seconds=30, what=what)
                if "$config_id" not in target["expr"]:
                    continue
                configs = {s["metric"]["llm_quota_config_id"] for s in result}
                expected = PANEL_CONFIGS.get(panel["title"], CONFIGS)
                assert configs == expected, what
                # Picking one config in the dashboard narrows the panel to it.
                only = await prometheus_query(
                    client, prometheus, expand(target["expr"], config_id="openai-prod")
                )
                assert {s["metric"]["llm_quota_config_id"] for s in only} == {"openai-prod"}, what
