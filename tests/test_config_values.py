"""Bad values in configuration files and variables: clear, located, redacted errors; the rest
of the configuration still applies."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import otel_llm_quota
from otel_llm_quota import (
    ConfigError,
    LLMProviderManager,
    QuotaSpanProcessor,
    _registration,
    load_config,
)
from otel_llm_quota.handlers import (
    AlertmanagerAlertHandler,
    EmailAlertHandler,
    LoggingAlertHandler,
    SlackAlertHandler,
    WebhookAlertHandler,
)

TOKEN = "T0KEN-xoxb-5550123-SECRETPATH"
HMAC = "hmac-shared-s3cr3t"


@pytest.fixture(autouse=True)
def clean_env(no_quota_env: None) -> Iterator[None]:
    yield
    _registration._reset_for_tests()


@pytest.fixture
def closing() -> Iterator[list[LLMProviderManager]]:
    managers: list[LLMProviderManager] = []
    yield managers
    for manager in managers:
        manager.close()


def limits(manager: LLMProviderManager) -> dict[str, int | None]:
    return {q.config_id: q.quota_limit for q in manager.ledger.get_all()}


# -- item 5: a huge limit in a file or the environment -----------------------------------------


def test_a_huge_limit_in_a_file_skips_only_its_quota(
    tmp_path: Path, closing: list[LLMProviderManager]
) -> None:
    path = tmp_path / "quotas.json"
    quotas = [{"config_id": "huge", "limit": 2**1024}, {"config_id": "ok", "limit": 10}]
    path.write_text(json.dumps({"quotas": quotas}))
    setup = load_config(path, strict=False)
    closing.append(setup.manager)
    assert limits(setup.manager) == {"ok": 10}
    assert setup.errors == [
        f"{path}: quotas[0] ('huge'): quota_limit must be at most 2**53 (9007199254740992), "
        "got a 1025-bit number"
    ]
    with pytest.raises(ConfigError, match=r"quotas\[0\] \('huge'\): quota_limit must be at most"):
        closing.append(load_config(path).manager)


def test_a_bad_item_of_the_limits_variable_skips_only_itself(
    monkeypatch: pytest.MonkeyPatch, closing: list[LLMProviderManager]
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", f"huge={2**1024}, ok=10, b, c=5e4")
    setup = load_config({}, strict=False)
    closing.append(setup.manager)
    assert limits(setup.manager) == {"ok": 10}
    assert setup.errors == [
        "OTEL_LLM_QUOTA_LIMITS: item 1: quota_limit must be at most 2**53 (9007199254740992), "
        "got a 1025-bit number",
        "OTEL_LLM_QUOTA_LIMITS: item 3: not config_id=limit",
        "OTEL_LLM_QUOTA_LIMITS: item 4: the limit is not an int",
    ]


def test_the_zero_code_path_attaches_despite_a_huge_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", f"huge={2**1024},openai=1000")
    provider = TracerProvider()
    processor = otel_llm_quota.instrument(provider)
    assert isinstance(processor, QuotaSpanProcessor)
    assert limits(otel_llm_quota.get_manager()) == {"openai": 1000}
    provider.shutdown()


# -- item 6: unreadable and too deep files -------------------------------------------------------

GOOD = {"quotas": [{"config_id": "from-file", "limit": 10}]}


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        (
            "latin1.json",
            '{"quotas": [{"config_id": "caf\u00e9", "limit": 1}]}'.encode("latin-1"),
            "not UTF-8 text",
        ),
        ("utf16.json", json.dumps(GOOD).encode("utf-16"), "not UTF-8 text"),
        ("utf16.yaml", "quotas: []\n".encode("utf-16"), "not UTF-8 text"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        ("deep.yaml", b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        ("deep40.json", b'{"quotas": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32"),
    ],
)
def test_a_file_that_cannot_be_used_is_a_config_error_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    closing: list[LLMProviderManager],
    name: str,
    content: bytes,
    reason: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    # Lenient (the zero-code path): the environment's limits still apply, get_manager() works.
    monkeypatch.setenv("OTEL_LLM_QUOTA_CONFIG_FILE", str(path))
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "openai=1000")
    setup = load_config(strict=False)
    closing.append(setup.manager)
    assert limits(setup.manager) == {"openai": 1000}
    assert len(setup.errors) == 1
    assert setup.errors[0].startswith(f"{path}: ")
    assert limits(otel_llm_quota.get_manager()) == {"openai": 1000}


def test_a_utf8_file_with_a_byte_order_mark_is_read(
    tmp_path: Path, closing: list[LLMProviderManager]
) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(json.dumps(GOOD).encode("utf-8-sig"))
    setup = load_config(path)
    closing.append(setup.manager)
    assert limits(setup.manager) == {"from-file": 10}


def test_an_unexpected_error_in_one_step_does_not_stop_the_others(
    closing: list[LLMProviderManager],
) -> None:
    # Keys of mixed types (possible in YAML) once made sorting the unknown keys raise TypeError.
    config: dict[Any, Any] = {"quotas": [{"config_id": "ok", "limit": 5}], "rules": 7}
    setup = load_config(config, strict=False)
    closing.append(setup.manager)
    assert limits(setup.manager) == {"ok": 5}
    assert setup.errors == ["rules: 'rules' must be a list, not int"]
    quota: dict[Any, Any] = {"config_id": "x", "limit": 1, 1: "a", "z": 2}
    setup = load_config({"quotas": [quota]}, strict=False)
    closing.append(setup.manager)
    assert setup.errors == ["quotas[0] ('x'): unknown quota keys: ['1', 'z']"]


# -- item 7: booleans ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("false", False), ("no", False), ("0", False), (0, False), ("True", True), ("yes", True)],
)
def test_send_resolved_words_are_parsed(
    value: Any, expected: bool, closing: list[LLMProviderManager]
) -> None:
    manager = LLMProviderManager(send_resolved=value)
    closing.append(manager)
    assert manager.send_resolved is expected
    setup = load_config({"manager": {"send_resolved": value}})
    closing.append(setup.manager)
    assert setup.manager.send_resolved is expected


@pytest.mark.parametrize("value", ["maybe", 2, 1.0, [], "off-ish"])
def test_other_send_resolved_values_raise(value: Any, closing: list[LLMProviderManager]) -> None:
    with pytest.raises((TypeError, ValueError), match="send_resolved must be true or false"):
        closing.append(LLMProviderManager(send_resolved=value))
    with pytest.raises(ConfigError, match=r"^manager: send_resolved must be true or false"):
        closing.append(load_config({"manager": {"send_resolved": value}}).manager)


def test_monitor_enabled_words_are_parsed(closing: list[LLMProviderManager]) -> None:
    setup = load_config({"monitor": {"enabled": "no"}})
    closing.append(setup.manager)
    assert setup.monitor is False
    with pytest.raises(ConfigError, match=r"^monitor: enabled must be true or false"):
        load_config({"monitor": {"enabled": "sometimes"}})


# -- item 8: errors that name the problem, once --------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (WebhookAlertHandler, {"url": 12345}, "url must be a str, not int"),
        (WebhookAlertHandler, {"url": "http://127.0.0.1:9/", "secret": 7}, "secret must be a str"),
        (
            WebhookAlertHandler,
            {"url": "http://127.0.0.1:9/", "headers": "Authorization: x"},
            "headers must be a mapping of names to values, not str",
        ),
        (
            WebhookAlertHandler,
            {"url": "http://127.0.0.1:9/", "headers": {"X-Token": 5}},
            "headers: names and values must be str, got str: int",
        ),
        (SlackAlertHandler, {"webhook_url": ["x"]}, "webhook_url must be a str, not list"),
        (
            AlertmanagerAlertHandler,
            {"url": "http://127.0.0.1:9/", "labels": ["team"]},
            "labels must be a mapping",
        ),
        (
            AlertmanagerAlertHandler,
            {"url": "http://127.0.0.1:9/", "alert_ttl_seconds": "1h"},
            "alert_ttl_seconds must be a number of seconds, not str",
        ),
        (
            EmailAlertHandler,
            {"sender": "q@example.com", "recipients": [1, 2]},
            "recipients must be a str or a list of str",
        ),
        (EmailAlertHandler, {"sender": 42, "recipients": "a@example.com"}, "sender must be a str"),
    ],
)
def test_handler_arguments_of_the_wrong_type_are_named(
    factory: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        factory(**kwargs)


def test_a_bad_default_period_is_not_reported_as_a_bad_time_zone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="period must be one of"):
        LLMProviderManager(default_period="daily")
    assert caplog.records == []


def test_a_bad_time_zone_variable_still_warns_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_TIMEZONE", "Mars/Olympus")
    with caplog.at_level(logging.WARNING, logger="otel_llm_quota._manager"):
        manager = LLMProviderManager()
    manager.close()
    assert "OTEL_LLM_QUOTA_TIMEZONE='Mars/Olympus' is not a known time zone" in caplog.text


def test_config_errors_carry_their_location_once(
    monkeypatch: pytest.MonkeyPatch, closing: list[LLMProviderManager]
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_LIMITS", "x=0")
    setup = load_config(
        {"quotas": [{"config_id": "a", "limit": 1, "thresholds": 80}]}, strict=False
    )
    closing.append(setup.manager)
    assert setup.errors == [
        "quotas[0] ('a'): thresholds must be a sequence of numbers, not int",
        "OTEL_LLM_QUOTA_LIMITS: item 1: quota_limit must be > 0, got 0",
    ]


# -- item 14: no secret in any config error ------------------------------------------------------

SECRET_URL = f"https://hooks.example.com/services/{TOKEN}"


def _raise_with(url: str, secret: str, **extra: Any) -> None:
    raise ValueError(f"cannot use {url!r} with secret {secret} (url={url})")


@pytest.mark.parametrize(
    "handlers",
    [
        pytest.param([{"url": SECRET_URL, "secret": HMAC}], id="entry-without-type"),
        pytest.param([SECRET_URL], id="url-in-the-list"),
        pytest.param([{"type": SECRET_URL, "secret": HMAC}], id="url-as-type"),
        pytest.param(
            [{"type": "webhook", "url": SECRET_URL, "secret": HMAC, "x": 1}], id="unknown-argument"
        ),
        pytest.param(
            [{"type": f"{__name__}:_raise_with", "url": SECRET_URL, "secret": HMAC}],
            id="factory-quotes-values",
        ),
        pytest.param(
            [
                {
                    "type": "webhook",
                    "url": SECRET_URL,
                    "headers": {"Authorization": HMAC},
                    "max_attempts": 0,
                }
            ],
            id="bad-setting-with-secret-headers",
        ),
    ],
)
def test_config_errors_never_show_handler_secrets(
    handlers: list[Any], caplog: pytest.LogCaptureFixture, closing: list[LLMProviderManager]
) -> None:
    with caplog.at_level(logging.ERROR, logger="otel_llm_quota._config"):
        setup = load_config({"handlers": handlers}, strict=False)
    closing.append(setup.manager)
    assert len(setup.errors) == 1
    with pytest.raises(ConfigError) as caught:
        closing.append(load_config({"handlers": handlers}).manager)
    for text in (setup.errors[0], caplog.text, str(caught.value), repr(caught.value)):
        assert TOKEN not in text
        assert HMAC not in text
    assert caught.value.__cause__ is None  # no traceback quoting the values either
    assert setup.errors[0].startswith("handlers[0]")


def test_a_yaml_syntax_error_does_not_quote_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"handlers:\n  - type: webhook\n    url: {SECRET_URL}\n   secret: [{HMAC}\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: .* at line \d+, column \d+") as caught:
        load_config(path)
    assert TOKEN not in str(caught.value)
    assert HMAC not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"logger": 12345}, TypeError, "logger must be a logging.Logger or a name, not int"),
        ({"firing_level": 30.0}, TypeError, "firing_level must be a logging level"),
        ({"critical_level": "LOUD"}, ValueError, "critical_level must be a logging level"),
        ({"name": 3}, TypeError, "name must be a str, not int"),
    ],
)
def test_logging_handler_arguments_are_checked(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LoggingAlertHandler(**kwargs)


def test_logging_handler_levels_may_be_named_in_a_file(closing: list[LLMProviderManager]) -> None:
    setup = load_config({"handlers": [{"type": "logging", "firing_level": "info"}]})
    closing.append(setup.manager)
    (handler,) = setup.manager.alert_handlers
    assert isinstance(handler, LoggingAlertHandler)
    assert handler.firing_level == logging.INFO


def test_yaml_aliases_are_walked_once_and_a_cycle_is_too_deep(tmp_path: Path) -> None:
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        laughs.append(f"{level}: &{level} [{', '.join(['*' + previous] * 9)}]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(laughs) + "\n")  # 9**9 leaves if walked naively
    with pytest.raises(ConfigError, match="unknown top-level keys"):
        load_config(path)
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text("quotas: &q [*q]\n")
    with pytest.raises(ConfigError, match="nested deeper than 32 levels") as caught:
        load_config(cycle)
    assert caught.value.source == str(cycle)


def test_masking_an_error_walks_shared_and_cyclic_values_once(
    closing: list[LLMProviderManager],
) -> None:
    shared: list[Any] = [HMAC] * 9
    for _ in range(9):
        shared = [shared] * 9  # 9**10 strings if walked naively
    cyclic: list[Any] = [TOKEN]
    cyclic.append(cyclic)
    spec = {"type": f"{__name__}:_raise_with", "url": SECRET_URL, "secret": HMAC, "x": shared}
    setup = load_config({"handlers": [spec, {**spec, "x": cyclic}]}, strict=False)
    closing.append(setup.manager)
    assert len(setup.errors) == 2
    assert all(HMAC not in e and TOKEN not in e for e in setup.errors)
