"""``otel-llm-quota demo``, run for real: the openai client, openai-v2, a loopback stub, SQLite.

``--duration 0`` (hidden) runs the same script without its pauses: the same calls, limits,
alerts and store, in a few seconds. The store is read back by a fresh manager, as ``status``
does, and compared with what the stub billed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from otel_llm_quota import LLMProviderManager, QuotaInfo
from otel_llm_quota.cli import cli
from otel_llm_quota.cli._demo import _CONFIGS, _WORKLOADS, INSTALL_LINE, STEPS
from otel_llm_quota.cli._demo_stub import DemoStub

from .conftest import free_port, require_module

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_IDS = {c.config_id for c in _CONFIGS}
CALLS = STEPS * len(_WORKLOADS)
DEMO = (sys.executable, "-m", "otel_llm_quota", "demo")

FIRING = re.compile(
    r"(WARN|ERROR) +(\S+) +crossed (\S+)% .* trace ([0-9a-f]{32}) span ([0-9a-f]{16})$"
)
RESOLVED = re.compile(r"INFO +(\S+) +resolved .* (limit_changed|period_reset)")


@pytest.fixture(autouse=True)
def demo_packages(no_quota_env: None) -> None:
    for module in ("openai", "httpx", "opentelemetry.instrumentation.openai_v2"):
        require_module(module)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _stored(url: str) -> list[QuotaInfo]:
    """The configs of the store as another process sees them."""
    manager = LLMProviderManager(store=url)
    try:
        return manager.ledger.get_all()
    finally:
        manager.close()


def _lifetime(infos: list[QuotaInfo]) -> tuple[int, int, int, int]:
    """(input, output, other tokens, requests) of every config since it was created: the
    window totals start again at a reset, these do not."""
    return (
        sum(i.lifetime_input_tokens for i in infos),
        sum(i.lifetime_output_tokens for i in infos),
        sum(i.lifetime_other_tokens for i in infos),
        sum(i.lifetime_successful_requests + i.lifetime_failed_requests for i in infos),
    )


def _demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_leaves_a_store_whose_totals_equal_what_the_stub_billed(tmp_path: Path) -> None:
    # --base-url: the demo drives a stub this test owns, so the bill is the stub's own count.
    db = tmp_path / "demo.db"
    with DemoStub() as stub:
        done = _demo(
            "--base-url",
            stub.base_url,
            "--store",
            str(db),
            "--duration",
            "0",
            env=_env(OPENAI_API_KEY="sk-test"),
        )
        billed = stub.billed()
    assert done.returncode == 0, done.stderr[-4000:]
    url = f"sqlite:///{db}"
    lines = done.stdout.splitlines()
    assert f"Store: {url}" in lines
    assert f"Look at it with:  otel-llm-quota status --store {url}" in lines

    infos = _stored(url)
    assert {i.config_id for i in infos} == CONFIG_IDS
    assert billed.requests == CALLS
    assert _lifetime(infos) == (billed.prompt_tokens, billed.completion_tokens, 0, CALLS)

    # Each firing alert's terminal line is followed by its OTel log event, linked to the same
    # span; every config crossed a threshold; the raised limit and the reset resolved theirs.
    firing = set()
    for number, line in enumerate(lines):
        match = FIRING.search(line)
        if match is None:
            continue
        severity, config_id, threshold, trace_id, span_id = match.groups()
        firing.add(config_id)
        event = lines[number + 1]
        assert f"OTel log event llm.quota.threshold {severity}: " in event
        assert f"LLM quota {config_id} crossed {threshold}%" in event
        assert event.endswith(f"trace {trace_id} span {span_id}")
    assert firing == CONFIG_IDS
    resolved = {m.groups() for m in map(RESOLVED.search, lines) if m is not None}
    assert resolved == {("research-gpt-4o", "limit_changed"), ("nightly-batch", "period_reset")}

    # The printed command works and shows every config.
    status = subprocess.run(
        [sys.executable, "-m", "otel_llm_quota", "status", "--store", url],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    for config_id in CONFIG_IDS:
        assert config_id in status.stdout


def test_demo_with_its_own_stub_and_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the default store goes
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-sent")  # the built-in stub needs none
    result = CliRunner().invoke(cli, ["demo", "--duration", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = re.search(r"^Store: (sqlite:///(/\S+))$", result.output, re.MULTILINE)
    assert store is not None, result.output
    url, path = store.groups()
    assert Path(path).parent.parent == tmp_path  # a new directory under the temp dir, kept
    assert Path(path).is_file()
    billed = re.search(
        r"the stub billed ([\d,]+) requests, ([\d,]+) tokens \(([\d,]+) in, ([\d,]+) out\)",
        result.output,
    )
    assert billed is not None, result.output
    requests, _, prompt, completion = (int(g.replace(",", "")) for g in billed.groups())
    assert requests == CALLS
    assert _lifetime(_stored(url)) == (prompt, completion, 0, CALLS)


def test_demo_follow_runs_rounds_until_ctrl_c(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    process = subprocess.Popen(
        [*DEMO, "--follow", "--duration", "0", "--store", str(db)],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # read until the third round starts: two full rounds ran
            seen.append(line)
            if line.startswith("round 3:"):
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(seen) + out
    assert process.returncode == 0, err[-4000:]
    assert "round 2: every config starts a new window" in output
    assert "Stopped." in output
    assert f"Look at it with:  otel-llm-quota status --store sqlite:///{db}" in output
    # The round-2 resets resolved what round 1 left firing.
    assert re.search(r"INFO +support-bot +resolved .* period_reset", output), output
    infos = _stored(f"sqlite:///{db}")
    assert {i.config_id for i in infos} == CONFIG_IDS
    assert _lifetime(infos)[3] >= 2 * CALLS


@pytest.mark.parametrize(
    ("module", "distribution"),
    [
        ("openai", "openai"),
        ("opentelemetry.instrumentation.openai_v2", "opentelemetry-instrumentation-openai-v2"),
    ],
)
def test_demo_without_its_packages_names_the_pip_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str, distribution: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(cli, ["demo", "--duration", "0"])
    assert result.exit_code == 1
    assert result.output == f"Error: the demo needs {distribution}: {INSTALL_LINE}\n"
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--base-url", "http://127.0.0.1:1/v1"], {}, "--base-url needs a key in OPENAI_API_KEY"),
        (["--store", "{existing}"], {}, "exists already"),
        (["--store", "{tmp}/no/such/dir/demo.db"], {}, "no directory"),
    ],
)
def test_demo_bad_options_are_one_line_errors(
    tmp_path: Path, args: list[str], env: dict[str, Any], message: str
) -> None:
    existing = tmp_path / "old.db"
    existing.write_bytes(b"")
    args = [a.format(existing=existing, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["demo", "--duration", "0", *args], env=env)
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.splitlines()) == 1


def test_demo_against_an_unreachable_api_ends_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    done = _demo(
        "--base-url",
        url,
        "--store",
        str(tmp_path / "demo.db"),
        "--duration",
        "0",
        env=_env(OPENAI_API_KEY="sk-test"),
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: 3 calls in a row to {url} failed: Connection error."
    ]
