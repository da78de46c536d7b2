"""Config file (JSON, YAML) and environment loading; handler factories; registration."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import otel_llm_quota
from otel_llm_quota import (
    ConfigError,
    ConfigRule,
    LLMProviderManager,
    QuotaInfo,
    QuotaSpanProcessor,
    _config,
    _registration,
    load_config,
)
from otel_llm_quota._autoinstrument import post_instrument
from otel_llm_quota.testing import RecordingAlertHandler

CREATED: list[RecordingAlertHandler] = []


class TaggedHandler(RecordingAlertHandler):
    def __init__(self, tag: str = "none", **extra: Any) -> None:
        super().__init__()
        self.tag = tag
        self.extra = extra


def make_handler(tag: str = "none", **extra: Any) -> TaggedHandler:
    """An import-string handler factory, as a user would write one."""
    handler = TaggedHandler(tag, **extra)
    CREATED.append(handler)
    return handler


FACTORY = f"{__name__}:make_handler"

FULL = {
    "manager": {"cooldown_seconds": 120, "send_resolved": False, "timezone": "Europe/Paris"},
    "monitor": {"enabled": True, "interval_seconds": 5},
    "processor": {"default_config_id": "misc", "max_tracked_responses": 50},
    "quotas": [
        {"config_id": "openai-prod", "limit": 100000, "thresholds": [50, 80], "provider": "openai"},
        {"config_id": "claude", "limit": 2000, "alert_threshold_percent": 90, "period": "day"},
    ],
    "rules": [{"config_id": "openai-prod", "match": {"provider": "openai", "model": "gpt-4o*"}}],
    "handlers": [{"type": FACTORY, "tag": "ops", "channel": "#llm"}],
}


@pytest.fixture(autouse=True)
def clean_env(no_quota_env: None) -> Iterator[None]:
    CREATED.clear()
    yield
    _registration._reset_for_tests()


@pytest.fixture
def closing() -> Iterator[list[LLMProviderManager]]:
    managers: list[LLMProviderManager] = []
    yield managers
    for manager in managers:
        manager.close()


def _check_full(manager: LLMProviderManager, options: dict[str, Any]) -> None:
    openai = manager.ledger.get("openai-prod")
    claude = manager.ledger.get("claude")
    assert openai is not None
    assert claude is not None
    assert (openai.quota_limit, openai.thresholds, openai.provider) == (
        100000,
        (50.0, 80.0),
        "openai",
    )
    assert (claude.quota_limit, claude.thresholds, claude.period) == (2000, (90.0,), "day")
    assert claude.timezone == "Europe/Paris"
    assert manager.cooldown_seconds == 120
    assert manager.send_resolved is False
    assert [type(h).__name__ for h in manager.alert_handlers] == ["TaggedHandler"]
    assert CREATED[0].tag == "ops"
    assert CREATED[0].extra == {"channel": "#llm"}
    assert options["default_config_id"] == "misc"
    assert options["max_tracked_responses"] == 50
    assert [r.config_id for r in options["rules"]] == ["openai-prod"]


def test_json_file(tmp_path: Path, closing: list[LLMProviderManager]) -> None:
    path = tmp_path / "quotas.json"
    path.write_text(json.dumps(FULL))
    setup = load_config(path)
    closing.append(setup.manager)
    _check_full(setup.manager, setup.processor_options)
    assert (setup.monitor, setup.monitor_interval_seconds, setup.errors) == (True, 5.0, [])


def test_yaml_file(tmp_path: Path, closing: list[LLMProviderManager]) -> None:
    import yaml  # the `yaml` extra (installed by `make venv`)

    path = tmp_path / "quotas.yaml"
    path.write_text(yaml.safe_dump(FULL))
    setup = load_config(path)
    closing.append(setup.manager)
    _check_full(setup.manager, setup.processor_options)


def test_file_named_by_env_and_env_quotas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closing: list[LLMProviderManager]
) -> None:
    path = tmp_path / "quotas.json"
    path.write_text(json.dumps({"quotas": [{"config_id": "openai", "limit": 10}]}))
    monkeypatch.setenv("OTEL_LLM_QUOTA_CONFIG_FILE", str(path))
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "openai=500, anthropic=700")
    monkeypatch.setenv("OTEL_LLM_QUOTA_THRESHOLDS", "50,95")
    monkeypatch.setenv("OTEL_LLM_QUOTA_PERIOD", "week")
    monkeypatch.setenv("OTEL_LLM_QUOTA_ALERT_HANDLERS", FACTORY)
    monkeypatch.setenv("OTEL_LLM_QUOTA_DEFAULT_CONFIG_ID", "other")
    monkeypatch.setenv("OTEL_LLM_QUOTA_MAX_TRACKED_RESPONSES", "99")
    setup = load_config()
    closing.append(setup.manager)
    quotas = {q.config_id: q for q in setup.manager.ledger.get_all()}
    assert {k: (q.quota_limit, q.thresholds, q.period) for k, q in quotas.items()} == {
        "openai": (500, (50.0, 95.0), "week"),  # the variable wins over the file
        "anthropic": (700, (50.0, 95.0), "week"),
    }
    assert len(CREATED) == 1
    assert setup.processor_options == {"default_config_id": "other", "max_tracked_responses": 99}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"quota": []}, "unknown top-level keys"),
        ({"manager": {"cooldown": 1}}, "unknown keys in 'manager'"),
        ({"quotas": [{"config_id": "a"}]}, "needs 'config_id' and 'limit'"),
        (
            {"quotas": [{"config_id": "a", "limit": -1}]},
            r"^quotas\[0\] \('a'\): quota_limit must be >= 0",
        ),
        ({"quotas": [{"config_id": "a", "limit": 5, "thresholds": [150]}]}, r"\(0, 100\]"),
        ({"quotas": {"config_id": "a"}}, "'quotas' must be a list"),
        ({"rules": [{"config_id": "a", "match": {}}]}, "at least one key"),
        ({"handlers": [{"type": "nope"}]}, "unknown handler type 'nope'"),
        ({"handlers": [{"type": "no_such_module_xyz:make"}]}, "cannot be imported"),
        ({"handlers": [{"type": f"{__name__}:missing"}]}, "has no attribute 'missing'"),
        ({"handlers": [{"type": FACTORY, "tag": "x", "bad": object()}]}, None),
        ({"monitor": {"interval_seconds": 0}}, "positive"),
        ({"processor": {"max_tracked_responses": 0}}, "positive int"),
        ({"manager": {"cooldown_seconds": -5}}, "^manager: cooldown_seconds"),
    ],
)
def test_strict_loading_names_the_problem(
    config: dict[str, Any], message: str | None, closing: list[LLMProviderManager]
) -> None:
    if message is None:  # a factory that accepts anything: no error
        setup = load_config(config)
        closing.append(setup.manager)
        assert setup.errors == []
        return
    with pytest.raises(ConfigError, match=message):
        closing.append(load_config(config).manager)


def test_lenient_loading_logs_and_keeps_the_good_parts(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    closing: list[LLMProviderManager],
) -> None:
    config = {
        "quotas": [{"config_id": "bad", "limit": "many"}, {"config_id": "good", "limit": 10}],
        "handlers": [{"type": "slack", "webhook_url": "http://127.0.0.1:9/"}, {"type": FACTORY}],
    }
    monkeypatch.setattr(_config, "BUILTIN_HANDLERS_MODULE", "otel_llm_quota._no_such_module")
    with caplog.at_level(logging.ERROR, logger="otel_llm_quota._config"):
        setup = load_config(config, strict=False)
    closing.append(setup.manager)
    assert [q.config_id for q in setup.manager.ledger.get_all()] == ["good"]
    assert len(setup.manager.alert_handlers) == 1
    assert len(setup.errors) == 2
    assert "handler type 'slack' needs module" in caplog.text


def test_missing_builtin_handler_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate an installation without otel_llm_quota.handlers.
    monkeypatch.setattr(_config, "BUILTIN_HANDLERS_MODULE", "otel_llm_quota._no_such_module")
    with pytest.raises(ConfigError, match=r"'email' needs module 'otel_llm_quota\._no_such"):
        _config.build_handler({"type": "email", "to": "ops@example.org"})


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(listing)
    with pytest.raises(ConfigError, match=r"^OTEL_LLM_QUOTA_LIMITS: item 2: not config_id=limit"):
        _config.parse_limits("a=1,b")


# -- registration --------------------------------------------------------------------------------


def test_instrument_with_own_manager_is_idempotent(closing: list[LLMProviderManager]) -> None:
    manager = LLMProviderManager()
    closing.append(manager)
    provider = TracerProvider()
    processor = otel_llm_quota.instrument(
        provider, manager=manager, rules=[ConfigRule("x", provider="p")]
    )
    assert otel_llm_quota.instrument(provider, manager=manager) is processor
    with provider.get_tracer("t").start_as_current_span(
        "llm", attributes={"gen_ai.provider.name": "p", "gen_ai.usage.input_tokens": 3}
    ):
        pass
    info = manager.ledger.get("x")
    assert isinstance(info, QuotaInfo)
    assert info.input_tokens == 3
    assert manager.monitoring is False
    other = LLMProviderManager()
    closing.append(other)
    with pytest.raises(ValueError, match="another manager"):
        otel_llm_quota.instrument(provider, manager=other)
    provider.shutdown()


def test_instrument_refuses_a_non_sdk_provider() -> None:
    with pytest.raises(TypeError, match="add_span_processor"):
        otel_llm_quota.instrument(object())


def test_default_manager_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps({**FULL, "monitor": {"enabled": False}}))
    monkeypatch.setenv("OTEL_LLM_QUOTA_CONFIG_FILE", str(path))
    manager = otel_llm_quota.get_manager()
    assert otel_llm_quota.get_manager() is manager
    provider = TracerProvider()
    processor = otel_llm_quota.instrument(provider)
    assert isinstance(processor, QuotaSpanProcessor)
    assert [r.config_id for r in processor.rules] == ["openai-prod"]
    assert manager.monitoring is False  # monitor.enabled: false
    with provider.get_tracer("t").start_as_current_span(
        "llm",
        attributes={
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.output_tokens": 4,
        },
    ):
        pass
    info = manager.ledger.get("openai-prod")
    assert info is not None
    assert info.output_tokens == 4
    provider.shutdown()


def test_default_instrument_starts_the_monitor_thread() -> None:
    provider = TracerProvider()
    otel_llm_quota.instrument(provider)
    manager = otel_llm_quota.get_manager()
    assert manager.monitoring is True
    provider.shutdown()
    _registration._reset_for_tests()  # closes it
    assert manager.monitoring is False


def test_post_instrument_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No SDK provider is set globally in unit tests: the hook warns and returns.
    with caplog.at_level(logging.WARNING, logger="otel_llm_quota._autoinstrument"):
        post_instrument()
    assert "not the SDK's" in caplog.text
    monkeypatch.setenv("OTEL_LLM_QUOTA_ENABLED", "false")
    caplog.clear()
    post_instrument()
    assert caplog.text == ""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("surprise")

    monkeypatch.setenv("OTEL_LLM_QUOTA_ENABLED", "true")
    monkeypatch.setattr("otel_llm_quota._autoinstrument.trace.get_tracer_provider", broken)
    with caplog.at_level(logging.ERROR, logger="otel_llm_quota._autoinstrument"):
        post_instrument()
    assert "could not attach" in caplog.text


def test_builtin_handler_names_resolve_to_the_handlers_module() -> None:
    handlers = importlib.import_module("otel_llm_quota.handlers")
    for type_name, class_name in _config.BUILTIN_HANDLERS.items():
        assert isinstance(getattr(handlers, class_name), type), type_name
    handler = _config.build_handler({"type": "logging", "logger": "quota-alerts"})
    assert isinstance(handler, handlers.LoggingAlertHandler)
    assert handler.logger.name == "quota-alerts"


def test_default_instrument_reports_quota_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "openai=1000")
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    provider = TracerProvider()
    otel_llm_quota.instrument(provider, meter_provider=meter_provider, start_monitoring=False)
    with provider.get_tracer("t").start_as_current_span(
        "llm", attributes={"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 250}
    ):
        pass
    usage = [
        (dict(p.attributes or {}), p.value)
        for rm in reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "llm.quota.usage"
        for p in m.data.data_points  # type: ignore[union-attr]
    ]
    assert [(a["llm.quota.config_id"], v) for a, v in usage] == [("openai", 250)]
    provider.shutdown()
    meter_provider.shutdown()


def test_metrics_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_METRICS_ENABLED", "false")
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "openai=1000")  # reported when metrics are on
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    provider = TracerProvider()
    otel_llm_quota.instrument(provider, meter_provider=meter_provider, start_monitoring=False)
    data = reader.get_metrics_data()
    names = {
        m.name
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert not {name for name in names if name.startswith("llm.quota.usage")}
    provider.shutdown()
    meter_provider.shutdown()


def test_a_factory_that_builds_no_handler_is_skipped_not_fatal(
    monkeypatch: pytest.MonkeyPatch, closing: list[LLMProviderManager]
) -> None:
    # `builtins:dict` is a callable returning an object that is no alert handler.
    monkeypatch.setenv("OTEL_LLM_QUOTA_ALERT_HANDLERS", f"logging,builtins:dict,{FACTORY}")
    setup = load_config({}, strict=False)
    closing.append(setup.manager)
    assert len(setup.manager.alert_handlers) == 2
    assert len(setup.errors) == 1
    assert "builtins:dict" in str(setup.errors[0])
    with pytest.raises(ConfigError, match="builtins:dict"):
        closing.append(load_config({"handlers": [{"type": "builtins:dict"}]}).manager)


_INSTRUMENT_SCRIPT = """
import sys
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
import otel_llm_quota
from otel_llm_quota import _metrics

global_reader, given_reader = InMemoryMetricReader(), InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[global_reader]))
given = MeterProvider(metric_readers=[given_reader])
manager = otel_llm_quota.get_manager()  # reports through the global provider by default
own = otel_llm_quota.instrument_metrics(manager)
argument = {"global": None, "given": given, "off": False}[sys.argv[1]]
if argument is False:
    otel_llm_quota.instrument(TracerProvider(), metrics=False, start_monitoring=False)
else:
    otel_llm_quota.instrument(TracerProvider(), meter_provider=argument, start_monitoring=False)
    assert (_metrics._exports[manager][-1] is own) == (argument is None)
manager.record_usage("c", input_tokens=5)

def usage(reader):
    data = reader.get_metrics_data()
    return sum(
        p.value
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "llm.quota.usage"
        for p in m.data.data_points
    )

print(usage(global_reader), usage(given_reader))
"""


@pytest.mark.parametrize(
    ("meter_provider", "expected"), [("global", "5 0"), ("given", "0 5"), ("off", "0 0")]
)
def test_instrument_moves_the_default_managers_metrics_never_doubles_them(
    meter_provider: str, expected: str
) -> None:
    # The global provider can be set once per process: each case runs in a fresh interpreter.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", _INSTRUMENT_SCRIPT, meter_provider],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
