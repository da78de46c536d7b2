"""The ``otel-llm-quota`` command line: click's runner for each command and its bad input, real
subprocesses for what other processes must see (SQLite stores in tmp_path, one Redis store)."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
    # When each reader last synced, and the time to exhaustion at its own now: differ by nature.
    drop = {"last_sync", "time_to_exhaustion"}
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


def firing(url: str) -> None:
    """A config over its 90 % threshold whose alert was sent (state kept in the store)."""

    async def run() -> None:
        manager = LLMProviderManager(store=url)
        try:
            await manager.set_quota_limit("hot", 1000, thresholds=(50, 90), period="day")
            manager.record_usage("hot", input_tokens=950)
            manager.add_alert_handler(lambda config_id, quota: None)
            await manager.check_quotas()
            quota = await manager.get_quota_usage("hot")
            assert quota is not None
            assert (quota.alert_triggered, quota.alert_threshold) == (True, 90.0)
            assert await manager.aflush()
        finally:
            await manager.aclose()

    asyncio.run(run())


def test_status_table_shows_alert_state_last_alert_reset_and_exhaustion(store: str) -> None:
    written(store)
    firing(store)
    hot_status = statuses(store)[-1]
    reset = datetime.fromisoformat(hot_status["reset_at"]).timestamp()
    before = format_duration(reset - datetime.now(timezone.utc).timestamp())
    result = invoke("status", "--store", store)
    after = format_duration(reset - datetime.now(timezone.utc).timestamp())
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    hot = lines["hot"]
    assert "950/1,000" in hot
    assert "95.0%" in hot
    stamp = datetime.fromisoformat(hot_status["last_alert_sent"]).strftime("%m-%d %H:%M:%S")
    assert f"firing ≥90%, {stamp}" in hot
    found = re.search(r"day, (\S+(?: \S+)?) ", hot)
    assert found is not None
    assert found.group(1) in (before, after)  # the time to the reset, as the table ran
    assert "firing ≥50%" in lines["gpt"]  # 61 %: the same monitor pass fired its 50 %
    assert "ok, —" in lines["claude"]
    assert lines["claude"].rstrip().endswith("—")  # no limit: never runs out


def test_status_colours_usage_by_threshold_in_a_colour_terminal(store: str) -> None:
    written(store)  # gpt at 61 % of thresholds 50/90: yellow
    firing(store)  # hot at 95 %: yellow too; make one over its limit
    manager = LLMProviderManager(store=store)
    manager.set_quota_limit_sync("full", 10, thresholds=(50,))
    manager.record_usage("full", input_tokens=20)
    manager.set_quota_limit_sync("calm", 1000, thresholds=(50,))
    manager.record_usage("calm", input_tokens=1)
    manager.close()
    coloured = invoke("status", "--store", store, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert coloured.exit_code == 0, coloured.output
    rows = {line.split()[0]: line for line in coloured.stdout.splitlines() if line.strip()}
    yellow, red, green = "\x1b[33m", "\x1b[31m", "\x1b[32m"  # the percent, padded, in colour
    assert re.search(re.escape(yellow) + r" *61\.0%", rows["gpt"])
    assert re.search(re.escape(red) + r" *200\.0%", rows["full"])
    assert re.search(re.escape(green) + r" *0\.1%", rows["calm"])
    assert "\x1b[1;31mfiring" in rows["hot"]
    plain = invoke("status", "--store", store, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in plain.stdout


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


def test_to_dict_gives_every_field_as_asdict_would() -> None:
    from dataclasses import asdict

    from otel_llm_quota import AlertState

    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    info = QuotaInfo(
        "c",
        provider="p",
        quota_limit=100,
        total_tokens=90,
        input_tokens=50,
        thresholds=(50.0, 80.0),
        last_alert_sent=stamp,
        period_start=stamp,
        alert_state=AlertState.FIRING,
        alert_threshold=80.0,
    )
    reference = {
        k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(info).items()
    }
    reference.update(thresholds=[50.0, 80.0], alert_state="firing")
    reference.update(other_tokens=40, quota_remaining=10, usage_percent=90.0)
    reference["alert_triggered"] = True
    reference.update(cost_thresholds=[], cost_usd=0.0, cost_limit_usd=None)
    reference.update(cost_remaining_usd=None, cost_usage_percent=None)
    assert info.to_dict() == reference
    assert list(info.to_dict()) == list(reference)  # the same keys in the same order


def many(url: str, count: int) -> None:
    """``count`` configs, one in two with a limit, usage growing with the index."""
    manager = LLMProviderManager(store=url, max_configs=2 * count)
    try:
        for i in range(count):
            if i % 2 == 0:
                manager.set_quota_limit_sync(f"cfg-{i:04d}", 1_000, thresholds=(50, 90))
            manager.record_usage(f"cfg-{i:04d}", input_tokens=i)
    finally:
        manager.close()


def test_a_large_table_is_every_config_in_aligned_columns(store: str) -> None:
    many(store, 2 * _status._CHUNK_ROWS + 7)  # over several chunks of output
    result = invoke("status", "--store", store)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith(f"({2 * _status._CHUNK_ROWS + 7:,} configs)")
    rows = [line for line in lines if line.startswith("cfg-")]
    assert [row.split()[0] for row in rows] == [
        f"cfg-{i:04d}" for i in range(2 * _status._CHUNK_ROWS + 7)
    ]
    header = lines[1]
    for column in ("used/limit", "left", "req (failed)"):  # right-justified: same right edge
        edge = header.index(column) + len(column)
        assert all(row[edge - 1] != " " and row[edge : edge + 2] == "  " for row in rows), column
    over = next(row for row in rows if row.startswith("cfg-0400 "))
    assert "400/1,000" in over
    assert "40.0%" in over


def test_runs_out_after_the_reset_says_so() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    reset = start + timedelta(days=1)
    now = (start + timedelta(hours=12)).timestamp()

    def info(used: int) -> QuotaInfo:
        return QuotaInfo(
            "c", quota_limit=1000, total_tokens=used, period_start=start, reset_at=reset
        )

    # 600 tokens in 12 h: the 400 left take 8 h, before the reset.
    assert _status._runs_out(info(600), now) == "8h 00m"
    # 100 tokens in 12 h: 900 left would take 108 h, but usage starts from zero in 12 h.
    assert _status._runs_out(info(100), now) == "after reset"
    assert _status._runs_out(info(1000), now) == "exhausted"
    never = QuotaInfo("c", quota_limit=10**9, total_tokens=1, period_start=start, period=None)
    assert _status._runs_out(never, now) == ">999d"


def test_watch_shows_the_highest_usage_when_the_store_does_not_fit(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    many(store, 60)  # more than the 25 lines of a console that is not a terminal

    def stop(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_status, "_sleep", stop)
    result = invoke("status", "--watch", "--store", store)
    assert result.exit_code == 0, result.output
    words = [line.split() for line in result.stdout.splitlines()]
    shown = [w[0] for w in words if w and w[0].startswith("cfg-")]
    rows = 25 - _status._WATCH_CHROME_LINES
    # The configs with a limit, by percent used (5.8 %, 5.6 %, ...); those without one last.
    assert shown == [f"cfg-{i:04d}" for i in range(58, 58 - 2 * rows, -2)]
    text = " ".join(result.stdout.split())  # rich wraps the title and the note
    assert "(60 configs, showing 18)" in text
    assert "The 18 configs with the highest usage of 60" in text


def test_watch_rows_keep_the_store_order_when_everything_fits() -> None:
    infos = [QuotaInfo(f"c{i}", quota_limit=100, total_tokens=i) for i in range(5)]
    assert _status.watch_rows(infos, 5) == infos
    assert [i.config_id for i in _status.watch_rows(infos, 2)] == ["c4", "c3"]


def test_status_into_a_pipe_closed_early_ends_quietly(store: str) -> None:
    many(store, 3 * _status._CHUNK_ROWS)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_LLM_QUOTA_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_llm_quota", "status", "--store", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()  # as `| head -1` does
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert first.startswith(b"otel-llm-quota: ")
    assert err == b""


def test_status_reads_the_store_from_the_environment(store: str) -> None:
    written(store)
    result = invoke("status", "--json", env={"OTEL_LLM_QUOTA_STORE": store})
    assert result.exit_code == 0
    assert sorted(s["config_id"] for s in json.loads(result.stdout)) == ["claude", "gpt"]


def test_status_of_an_empty_store_says_so(store: str) -> None:
    LLMProviderManager(store=store).close()  # the file exists (apps created it), no quota yet
    result = invoke("status", "--store", store)
    assert result.exit_code == 0
    assert "No quotas in the store" in result.stdout
    assert json.loads(invoke("status", "--json", "--store", store).stdout) == []


EVERY_STORE_COMMAND = [
    ["status"],
    ["status", "--json"],
    ["set-limit", "x", "5"],
    ["reset", "x"],
    ["delete", "x"],
]
READING_COMMANDS = [["status"], ["status", "--json"], ["reset", "x"], ["delete", "x"]]


@pytest.mark.parametrize("command", EVERY_STORE_COMMAND)
def test_no_store_given_says_how_to_give_one(command: list[str]) -> None:
    assert_one_line_error(invoke(*command), "--store", "OTEL_LLM_QUOTA_STORE")


@pytest.mark.parametrize("command", READING_COMMANDS)
def test_a_missing_sqlite_file_is_an_error_not_a_new_empty_store(
    tmp_path: Path, command: list[str]
) -> None:
    db = tmp_path / "typo.db"
    result = invoke(*command, "--store", f"sqlite:///{db}")
    assert_one_line_error(result, f"no such file '{db}'")
    assert not db.exists()


def test_set_limit_may_create_the_sqlite_file(tmp_path: Path) -> None:
    # An administrator may set limits before any app ran.
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert invoke("set-limit", "gpt", "100", "--store", url).exit_code == 0
    assert [s["quota_limit"] for s in statuses(url)] == [100]


@pytest.mark.parametrize("command", EVERY_STORE_COMMAND)
def test_a_memory_store_is_refused(command: list[str]) -> None:
    assert_one_line_error(
        invoke(*command, "--store", "memory://"), "memory:// is a store inside one process"
    )


@pytest.mark.parametrize("command", EVERY_STORE_COMMAND)
def test_an_unreachable_store_is_a_one_line_error(command: list[str]) -> None:
    assert_one_line_error(invoke(*command, "--store", UNREACHABLE), UNREACHABLE, "unreachable")


def test_a_bad_store_url_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(invoke("status", "--store", "foo://x"), "unknown store URL")
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    assert_one_line_error(invoke("status", "--store", missing), "no such file")
    result = invoke("set-limit", "x", "5", "--store", missing)  # which may create a file
    assert_one_line_error(result, "does not exist")


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


def test_time_to_exhaustion_is_the_sooner_of_the_token_and_cost_limits() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    now = (start + timedelta(hours=2)).timestamp()
    # Tokens: 250 of 1000 in 2 h, 6 h more. Cost: 0.5 of 1 USD in 2 h, 2 h more.
    both = QuotaInfo(
        "c",
        quota_limit=1000,
        total_tokens=250,
        cost_limit_microusd=1_000_000,
        cost_microusd=500_000,
        period_start=start,
    )
    assert seconds_to_exhaustion(both, now) == pytest.approx(2 * 3600)
    cost_only = QuotaInfo(
        "c", cost_limit_microusd=1_000_000, cost_microusd=250_000, period_start=start
    )
    assert seconds_to_exhaustion(cost_only, now) == pytest.approx(6 * 3600)
    spent = QuotaInfo("c", cost_limit_microusd=10, cost_microusd=10, period_start=start)
    assert seconds_to_exhaustion(spent, now) == 0.0


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
    drop = {"last_sync", "time_to_exhaustion"}  # both depend on when each reader looked
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


_WATCHER = """
import json, sys
from otel_llm_quota import LLMProviderManager
manager = LLMProviderManager(store=sys.argv[1], flush_interval_seconds=3600)
print("ready", flush=True)
for _ in sys.stdin:  # each line: sync with the store, print what this process sees of gpt
    assert manager.flush()
    info = manager.ledger.get("gpt")
    view = None if info is None else [info.quota_limit, list(info.thresholds), info.total_tokens]
    print(json.dumps(view), flush=True)
manager.close()
"""


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_admin_commands_are_seen_by_a_running_manager_in_another_process(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("store" if kind == "sqlite" else "redis_url")
    written(url)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_LLM_QUOTA_")}
    app = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environ,
    )
    assert app.stdin is not None
    assert app.stdout is not None

    def seen() -> Any:
        assert app.stdin is not None
        assert app.stdout is not None
        app.stdin.write("?\n")
        app.stdin.flush()
        return json.loads(app.stdout.readline())

    try:
        assert app.stdout.readline() == "ready\n"
        assert seen() == [10_000, [50.0, 90.0], 6_105]
        done = run_module("set-limit", "gpt", "50000", "--threshold", "60", "--store", url)
        assert done.returncode == 0, done.stderr
        assert seen() == [50_000, [60.0], 6_105]
        assert run_module("reset", "gpt", "--store", url).returncode == 0
        assert seen() == [50_000, [60.0], 0]
        assert run_module("delete", "gpt", "--store", url).returncode == 0
        assert seen() is None
    finally:
        app.stdin.close()
        assert app.wait(timeout=60) == 0


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


# The broken files behind the messages README.md's "Command line" section documents.
DOCUMENTED = {
    "quotas.yaml: not valid YAML": ("quotas.yaml", "quotas: [\n  - {"),
    "quotas.json: not valid JSON": ("quotas.json", '{"quotas": [\n'),
    "quotas.yaml: unknown top-level keys": ("quotas.yaml", "bogus_top: 1\n"),
    "quotas.yaml: quotas[0]": ("quotas.yaml", "quotas:\n  - {config_id: gpt, limit: -5}\n"),
    "quotas.yaml: rules[0]": ("quotas.yaml", "rules:\n  - {config_id: gpt, bogus: 1}\n"),
    "quotas.yaml: handlers[0]": ("quotas.yaml", "handlers: [nosuchhandler]\n"),
    "quotas.yaml: store": ("quotas.yaml", "store: 'foo://x'\n"),
    "quotas.yaml: monitor": ("quotas.yaml", "monitor: {interval_seconds: -1}\n"),
}


def test_check_config_prints_the_messages_the_readme_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("`check-config` prints one line per error", 1)[1]
    block = block.split("```text\n", 1)[1].split("```", 1)[0]
    documented = block.splitlines()
    assert len(documented) == len(DOCUMENTED)
    monkeypatch.chdir(tmp_path)  # the messages name the file as given: quotas.yaml
    for line in documented:
        key = next(k for k in DOCUMENTED if line.startswith(f"Error: {k}"))
        name, text = DOCUMENTED[key]
        Path(name).write_text(text)
        result = invoke("check-config", name)
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [line]


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
