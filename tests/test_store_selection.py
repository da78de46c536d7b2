"""How a store is chosen: constructor argument, ``OTEL_LLM_QUOTA_STORE``, the config file's
``store`` key; bad URLs are clear errors that never show a password."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from otel_llm_quota import ConfigError, LLMProviderManager, load_config
from otel_llm_quota.stores import MemoryStore, StoreError, open_store, redact_url


def test_redact_url_hides_passwords_and_query_strings() -> None:
    assert redact_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:s3cret@host/1") == "redis://:***@host/1"
    assert redact_url("rediss://h:1/0?ssl_keyfile=/k.pem") == "rediss://h:1/0?***"
    assert redact_url("sqlite:////var/lib/q.db") == "sqlite:////var/lib/q.db"


@pytest.mark.parametrize("url", ["", "   ", "mysql://u:s3cret@h/db", "quota.db", "s3cret"])
def test_unknown_store_urls_are_refused_without_the_secret(url: str) -> None:
    with pytest.raises(ValueError, match="store") as info:
        open_store(url)
    assert "s3cret" not in str(info.value)


async def test_store_argument_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_STORE", "nonsense://")
    store = MemoryStore()
    async with LLMProviderManager(store=store) as manager:
        assert manager.store is store
    async with LLMProviderManager(store=False) as manager:  # explicitly none
        assert manager.store is None


async def test_environment_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_STORE", "memory://")
    async with LLMProviderManager() as manager:
        assert isinstance(manager.store, MemoryStore)
    monkeypatch.delenv("OTEL_LLM_QUOTA_STORE")
    async with LLMProviderManager() as manager:
        assert manager.store is None


async def test_config_file_store_key_and_errors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    setup = load_config({"store": {"url": "memory://", "flush_interval_seconds": 0.5}})
    try:
        assert isinstance(setup.manager.store, MemoryStore)
        assert setup.manager.store_sync is not None
        assert setup.manager.store_sync.flush_interval == 0.5
    finally:
        await setup.manager.aclose()
    with pytest.raises(ConfigError, match=r"^store: unknown store URL") as info:
        load_config({"store": "mysql://u:s3cret@h/db"})
    assert "s3cret" not in str(info.value)
    # Lenient (zero-code): logged, and the app counts in memory.
    monkeypatch.setenv("OTEL_LLM_QUOTA_STORE", "mysql://u:s3cret@h/db")
    with caplog.at_level(logging.ERROR):
        setup = load_config(strict=False)
    try:
        assert setup.manager.store is None
        assert any("OTEL_LLM_QUOTA_STORE" in e for e in setup.errors)
        assert "s3cret" not in caplog.text
        setup.manager.record_usage("x", input_tokens=1)
        assert (await setup.manager.get_quota_usage("x")).total_tokens == 1  # type: ignore[union-attr]
    finally:
        await setup.manager.aclose()


async def test_the_manager_section_takes_the_shutdown_and_queue_settings() -> None:
    setup = load_config({"manager": {"shutdown_timeout_seconds": 7, "handler_queue_size": 5}})
    try:
        assert setup.manager._shutdown_timeout == 7
        assert setup.manager._dispatcher.queue_size == 5
    finally:
        await setup.manager.aclose()


async def test_an_unusable_sqlite_file_is_an_error_naming_it_or_in_memory_when_lenient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "quota.db"
    url = f"sqlite:///{missing}"
    with pytest.raises(StoreError, match=str(missing.parent)):
        LLMProviderManager(store=url)  # strict: the app's own code sees it at start-up
    monkeypatch.setenv("OTEL_LLM_QUOTA_STORE", url)
    with caplog.at_level(logging.ERROR):
        setup = load_config(strict=False)  # the zero-code path
    try:
        assert setup.manager.store is None
        assert str(missing.parent) in caplog.text
        setup.manager.record_usage("x", input_tokens=3)
        assert (await setup.manager.get_quota_usage("x")).total_tokens == 3  # type: ignore[union-attr]
    finally:
        await setup.manager.aclose()
