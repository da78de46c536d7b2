"""The ``otel-llm-quota`` command line: click's runner for each command and its bad input, real
subprocesses for what other processes must see (SQLite stores in tmp_path, one Redis store)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from otel_llm_quota import LLMProviderManager, QuotaInfo
from otel_llm_quota.cli import _status, cli
from otel_llm_quota.cli._status import format_duration, seconds_to_exhaustion, usage_colour

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture(autouse=True)
def clean_env(no_quota_env: None) -> None:
    """No OTEL_LLM_QUOTA_* variable of the developer's shell reaches the commands."""


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'quota.db'}"


def written(url: str) -> list[dict[str, Any]]:
    """Write two configs to the store as an app would (limit, usage), then close."""
    manager = LLMProviderManager(store=url)
    try:
        manager.set_quota_limit_sync("gpt", 10_000, thresholds=(50, 90), period="day")
        manager.record_usage("gpt", provider="openai", input_tokens=6_000, output_tokens=100)
        manager.record_usage("gpt", provider="openai", input_tokens=5, success=False)
        manager.record_usage("claude", input_tokens=42)
    finally:
        manager.close()
    return statuses(url)


def statuses(url: str) -> list[dict[str, Any]]:
    """``get_all_quota_statuses()`` of a fresh manager on the store."""
    manager = LLMProviderManager(store=url)
    try:
        return asyncio.run(manager.get_all_quota_statuses())
    finally:
        manager.close()


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output + result.stderr


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m otel_llm_quota ARGS`` in a real subprocess."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_LLM_QUOTA_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "otel_llm_quota", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


# -- status ----------------------------------------------------------------------------------


def test_status_json_is_get_all_quota_statuses(store: str) -> None:
    expected = written(store)
    result = invoke("status", "--json", "--store", store)
    assert result.exit_code == 0
    got = json.loads(result.stdout)
    assert sorted(s["config_id"] for s in got) == ["claude", "gpt"]
    drop = {"last_sync"}  # when each reader last synced: differs by nature
    assert [{k: v for k, v in s.items() if k not in drop} for s in got] == [
        {k: v for k, v in s.items() if k not in drop} for s in expected
    ]


def test_status_table_shows_every_config(store: str) -> None:
    written(store)
    result = invoke("status", "--store", store)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    gpt = lines["gpt"]
    assert "6,105/10.0k" in gpt
    assert "3,895" in gpt  # remaining
    assert "61.0%" in gpt
    assert "day," in gpt
    assert "2 (1)" in gpt  # requests (failed)
    assert "claude" in lines
    assert "42/—" in lines["claude"]


def test_watch_refreshes_from_the_store_until_ctrl_c(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    written(store)
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the watch loop's sleep: another process writes, Ctrl-C
        pauses.append(seconds)
        if len(pauses) == 1:
            other = LLMProviderManager(store=store)
            other.record_usage("gpt", input_tokens=1_000)
            other.close()
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(_status, "_sleep", pause)
    result = invoke("status", "--watch", "--interval", "0.5", "--store", store)
    assert result.exit_code == 0, result.output
    assert pauses == [0.5, 0.5]
    assert "7,105/10.0k" in result.stdout  # the frame after the refresh


def test_status_reads_the_store_from_the_environment(store: str) -> None:
    written(store)
    result = invoke("status", "--json", env={"OTEL_LLM_QUOTA_STORE": store})
    assert result.exit_code == 0
    assert sorted(s["config_id"] for s in json.loads(result.stdout)) == ["claude", "gpt"]


def test_status_of_an_empty_store_says_so(store: str) -> None:
    result = invoke("status", "--store", store)
    assert result.exit_code == 0
    assert "No quotas in the store" in result.stdout
    assert json.loads(invoke("status", "--json", "--store", store).stdout) == []


def test_status_without_a_store_says_how_to_give_one() -> None:
    assert_one_line_error(invoke("status"), "--store", "OTEL_LLM_QUOTA_STORE")


@pytest.mark.parametrize("command", [["status"], ["reset", "x"], ["delete", "x"]])
def test_an_unreachable_store_is_a_one_line_error(command: list[str]) -> None:
    assert_one_line_error(invoke(*command, "--store", UNREACHABLE), UNREACHABLE, "unreachable")


def test_a_bad_store_url_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(invoke("status", "--store", "foo://x"), "unknown store URL")
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    assert_one_line_error(invoke("status", "--store", missing), "does not exist")


def test_an_unforeseen_error_is_one_line_without_debug(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    written(store)

    async def broken(self: LLMProviderManager, config_id: str | None = None) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(LLMProviderManager, "reset_quota_cache", broken)
    assert_one_line_error(invoke("reset", "gpt", "--store", store), "RuntimeError: boom")
    with pytest.raises(RuntimeError, match="boom"):
        invoke("--debug", "reset", "gpt", "--store", store)


def test_usage_colour_follows_the_thresholds() -> None:
    def info(used: int) -> QuotaInfo:
        return QuotaInfo("c", quota_limit=1000, total_tokens=used, thresholds=(50.0, 90.0))

    assert usage_colour(info(499)) == "green"
    assert usage_colour(info(500)) == "yellow"
    assert usage_colour(info(999)) == "yellow"
    assert usage_colour(info(1000)) == "red"
    assert usage_colour(QuotaInfo("c")) == "white"


def test_time_to_exhaustion_is_at_the_periods_rate() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    now = (start + timedelta(hours=2)).timestamp()
    info = QuotaInfo("c", quota_limit=1000, total_tokens=250, period_start=start)
    # 250 tokens in 2 h: 750 left take 6 h more.
    assert seconds_to_exhaustion(info, now) == pytest.approx(6 * 3600)
    assert format_duration(seconds_to_exhaustion(info, now)) == "6h 00m"
    assert seconds_to_exhaustion(QuotaInfo("c", total_tokens=5, period_start=start), now) is None
    idle = QuotaInfo("c", quota_limit=1000, total_tokens=0, period_start=start)
    assert seconds_to_exhaustion(idle, now) is None
    full = QuotaInfo("c", quota_limit=1000, total_tokens=1000, period_start=start)
    assert seconds_to_exhaustion(full, now) == 0.0
    assert format_duration(None) == "—"


# -- set-limit, reset, delete ----------------------------------------------------------------


def test_set_limit_keeps_what_it_is_not_told_to_change(store: str) -> None:
    written(store)
    result = invoke("set-limit", "gpt", "20000", "--store", store)
    assert result.exit_code == 0, result.output
    gpt = next(s for s in statuses(store) if s["config_id"] == "gpt")
    assert gpt["quota_limit"] == 20_000
    assert gpt["thresholds"] == [50.0, 90.0]
    assert gpt["period"] == "day"
    assert gpt["total_tokens"] == 6_105


def test_set_limit_options(store: str) -> None:
    result = invoke(
        "set-limit",
        "new",
        "500",
        "--threshold",
        "75",
        "--threshold",
        "95",
        "--period",
        "none",
        "--timezone",
        "Europe/Paris",
        "--provider",
        "anthropic",
        "--store",
        store,
    )
    assert result.exit_code == 0, result.output
    (new,) = statuses(store)
    assert (new["quota_limit"], new["thresholds"], new["period"]) == (500, [75.0, 95.0], None)
    assert (new["timezone"], new["provider"]) == ("Europe/Paris", "anthropic")


def test_set_limit_usd_sets_a_cost_limit_and_keeps_the_token_limit(store: str) -> None:
    written(store)
    result = invoke("set-limit", "gpt", "--usd", "50", "--usd-threshold", "90", "--store", store)
    assert result.exit_code == 0, result.output
    assert "gpt: cost limit 50.00 USD per day, thresholds 90%" in result.stdout
    gpt = next(s for s in statuses(store) if s["config_id"] == "gpt")
    assert (gpt["quota_limit"], gpt["thresholds"]) == (10_000, [50.0, 90.0])  # kept
    assert (gpt["cost_limit_usd"], gpt["cost_thresholds"]) == (50.0, [90.0])
    assert gpt["cost_limit_microusd"] == 50_000_000
    # A new token limit keeps the cost limit.
    assert invoke("set-limit", "gpt", "20000", "--store", store).exit_code == 0
    gpt = next(s for s in statuses(store) if s["config_id"] == "gpt")
    assert (gpt["quota_limit"], gpt["cost_limit_usd"], gpt["cost_thresholds"]) == (
        20_000,
        50.0,
        [90.0],
    )
    manager = LLMProviderManager(store=store)
    try:
        quota = manager.ledger.get("gpt")
    finally:
        manager.close()
    assert quota is not None
    assert _status.format_cost(quota) == "$0.00/$50.00 (0.0%) +2 unpriced"


def test_format_cost() -> None:
    info = QuotaInfo("c", cost_microusd=4_200, cost_limit_microusd=10_000_000)
    assert _status.format_cost(info) == "$0.0042/$10.00 (0.0%)"
    assert _status.format_cost(QuotaInfo("c", cost_microusd=12_345_678)) == "$12.35/—"


def test_set_limit_usd_alone_on_a_new_config_and_its_errors(store: str) -> None:
    result = invoke("set-limit", "budget", "--usd", "12.5", "--store", store)
    assert result.exit_code == 0, result.output
    (budget,) = statuses(store)
    assert (budget["quota_limit"], budget["cost_limit_usd"]) == (None, 12.5)
    assert_one_line_error(invoke("set-limit", "x", "--store", store), "LIMIT", "--usd")
    assert_one_line_error(
        invoke("set-limit", "x", "--usd", "-3", "--store", store), "cost_limit_usd"
    )


@pytest.mark.parametrize(
    ("limit", "fragment"),
    [("abc", "'abc'"), ("-1", ">= 0"), (str(2**60), "at most 2**53"), ("1.5", "'1.5'")],
)
def test_a_bad_limit_is_an_error_naming_limit(store: str, limit: str, fragment: str) -> None:
    assert_one_line_error(invoke("set-limit", "gpt", limit, "--store", store), "LIMIT", fragment)
    assert statuses(store) == []  # nothing written


def test_bad_set_limit_options_are_one_line_errors(store: str) -> None:
    bad_threshold = invoke("set-limit", "gpt", "5", "--threshold", "101", "--store", store)
    assert_one_line_error(bad_threshold, "threshold")
    assert_one_line_error(
        invoke("set-limit", "gpt", "5", "--timezone", "Mars/Olympus", "--store", store),
        "Mars/Olympus",
    )
    assert statuses(store) == []


@pytest.mark.parametrize("command", ["reset", "delete"])
def test_an_unknown_config_id_is_an_error_naming_it(store: str, command: str) -> None:
    written(store)
    assert_one_line_error(invoke(command, "nope", "--store", store), "unknown config id 'nope'")


def test_reset_starts_the_period_from_zero(store: str) -> None:
    written(store)
    result = invoke("reset", "gpt", "--store", store)
    assert result.exit_code == 0, result.output
    by_id = {s["config_id"]: s for s in statuses(store)}
    assert by_id["gpt"]["total_tokens"] == 0
    assert by_id["gpt"]["quota_limit"] == 10_000
    assert by_id["gpt"]["lifetime_input_tokens"] == 6_005
    assert by_id["claude"]["total_tokens"] == 42


def test_delete_removes_the_config(store: str) -> None:
    written(store)
    result = invoke("delete", "gpt", "--store", store)
    assert result.exit_code == 0, result.output
    assert [s["config_id"] for s in statuses(store)] == ["claude"]


# -- real processes --------------------------------------------------------------------------


def test_python_m_status_json_reads_another_processes_store(store: str) -> None:
    expected = written(store)
    proc = run_module("status", "--json", "--store", store)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    now = statuses(store)
    drop = {"last_sync"}
    assert [{k: v for k, v in s.items() if k not in drop} for s in got] == [
        {k: v for k, v in s.items() if k not in drop} for s in now
    ]
    assert [s["total_tokens"] for s in got] == [s["total_tokens"] for s in expected]


def test_set_limit_in_one_process_is_seen_by_another_processes_manager(store: str) -> None:
    written(store)
    proc = run_module("set-limit", "gpt", "50000", "--threshold", "60", "--store", store)
    assert proc.returncode == 0, proc.stderr
    manager = LLMProviderManager(store=store)
    try:
        info = asyncio.run(manager.get_quota_usage("gpt"))
    finally:
        manager.close()
    assert info is not None
    assert (info.quota_limit, info.thresholds, info.total_tokens) == (50_000, (60.0,), 6_105)


def test_unreachable_store_in_a_real_process_is_one_line_on_stderr() -> None:
    proc = run_module("status", "--store", UNREACHABLE)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"Error: store {UNREACHABLE} is unreachable"]
    assert proc.stdout == ""


def test_redis_store_status_and_set_limit(redis_url: str) -> None:
    written(redis_url)
    proc = run_module("set-limit", "gpt", "7000", "--store", redis_url)
    assert proc.returncode == 0, proc.stderr
    proc = run_module("status", "--json", "--store", redis_url)
    assert proc.returncode == 0, proc.stderr
    gpt = next(s for s in json.loads(proc.stdout) if s["config_id"] == "gpt")
    assert (gpt["quota_limit"], gpt["total_tokens"]) == (7_000, 6_105)


def test_import_otel_llm_quota_does_not_import_the_cli() -> None:
    code = (
        "import sys, otel_llm_quota; "
        "print(sorted(m for m in ('click', 'rich', 'otel_llm_quota.cli') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


# -- check-config ----------------------------------------------------------------------------

GOOD_CONFIG = """\
store: {url: "sqlite:///STORE", busy_timeout_ms: 100}
quotas:
  - {config_id: gpt, limit: 1000, thresholds: [50, 90], period: day}
  - {config_id: claude, limit: 500}
  - {config_id: budget, cost_limit_usd: 50.0, cost_thresholds: [50, 100]}
prices:
  - {provider: openai, model: "ft:gpt-4o-mini:*", input: 0.3, output: 1.2}
  - {provider: ollama, model: "*", free: true}
rules:
  - {config_id: gpt, match: {provider: openai}}
handlers:
  - logging
"""


def test_check_config_accepts_a_good_file_without_opening_its_store(tmp_path: Path) -> None:
    db = tmp_path / "never" / "created.db"
    config = tmp_path / "quotas.yaml"
    config.write_text(GOOD_CONFIG.replace("STORE", str(db)))
    result = invoke("check-config", str(config))
    assert result.exit_code == 0, result.output
    assert result.stdout == "OK: 3 quotas, 1 rules, 1 handlers\n"
    db.parent.mkdir()
    assert invoke("check-config", str(config)).exit_code == 0
    assert not db.exists()  # validated, never opened


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "store: {url: 'sqlite:///q.db', bogus: 1}\n",
            ["{file}: 'url': got an unexpected keyword argument 'bogus'"],
        ),
        ("store: 'foo://x'\n", ["{file}: store: unknown store URL 'foo://x'"]),
        ("store: 'sqlite://host/q.db'\n", ["{file}: store: a SQLite store URL has no host"]),
        (
            "quotas:\n  - {config_id: gpt, limit: -5}\n  - {config_id: ok, limit: 10}\n"
            "handlers: [nosuchhandler]\n",
            [
                "{file}: quotas[0] ('gpt'): quota_limit must be >= 0, got -5",
                "{file}: handlers[0]: unknown handler type 'nosuchhandler'",
            ],
        ),
        ("bogus_top: 1\n", ["{file}: unknown top-level keys: ['bogus_top']"]),
        (
            "quotas:\n  - {config_id: gpt, cost_limit_usd: -5}\n  - {config_id: x}\n"
            "prices:\n  - {model: 'ft:*', input: 1}\n",
            [
                "{file}: prices: prices[0]: 'input' and 'output' (USD per million tokens) are "
                "required",
                "{file}: quotas[0] ('gpt'): cost_limit_usd must be a positive",
                "{file}: quotas[1] ('x'): a quota needs 'config_id' and 'limit', "
                "'cost_limit_usd' or both",
            ],
        ),
        ("quotas: [\n  - {", ["{file}: not valid YAML"]),
    ],
)
def test_check_config_prints_each_error_and_exits_1(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    config = tmp_path / "quotas.yaml"
    config.write_text(text)
    result = invoke("check-config", str(config))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith("Error: " + start.format(file=config)), line
    assert "Traceback" not in result.output
    assert not (tmp_path / "q.db").exists()


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(
        invoke("check-config", str(tmp_path / "nope.yaml")), "nope.yaml", "cannot read"
    )


def test_load_config_validate_only_checks_the_store_without_opening_it(tmp_path: Path) -> None:
    from otel_llm_quota import ConfigError, load_config

    db = tmp_path / "q.db"
    setup = load_config({"store": f"sqlite:///{db}"}, environment=False, validate_only=True)
    try:
        assert setup.manager.store is None
        assert not db.exists()
    finally:
        setup.manager.close()
    with pytest.raises(ConfigError, match="unexpected keyword argument 'nope'"):
        load_config(
            {"store": {"url": f"sqlite:///{db}", "nope": 1}}, environment=False, validate_only=True
        )
    redis = load_config({"store": UNREACHABLE}, environment=False, validate_only=True)
    redis.manager.close()
    assert redis.manager.store is None
    with pytest.raises(ConfigError, match="unknown store URL"):
        load_config({"store": "memcached://x"}, environment=False, validate_only=True)
