"""Every runnable snippet of the README runs as written (docs that match the code).

Each ```python block is found by the heading it sits under and run: the Quick start as the
script it says it is (a subprocess, ``python quickstart.py``), the others as the body of a
coroutine (they use top-level ``await``, as in an async app or a notebook), in a namespace that
holds what the surrounding text says already exists (``manager``, ``provider``). The one rewrite:
the Prometheus snippet binds 127.0.0.1 on a free port instead of 0.0.0.0:9464 (tests use loopback
only). ``test_every_python_block_is_run`` fails when a block is added without a test here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel_llm_quota import LLMProviderManager, _registration

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks() -> list[tuple[str, str]]:
    """Every ```python block of the README, with the nearest heading above it."""
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        headings = re.findall(r"(?m)^#+ .*$", text[: match.start()])
        blocks.append((headings[-1], match.group(1)))
    return blocks


def block_under(heading: str) -> str:
    """The first ```python block under ``heading``."""
    for found, code in python_blocks():
        if found == heading:
            return code
    raise AssertionError(f"no python block under {heading!r}")


async def run_async_snippet(code: str, **names: object) -> dict[str, object]:
    """Run top-level-await code as the body of a coroutine, with ``names`` defined; return its
    locals."""
    params = ", ".join(names)
    body = textwrap.indent(code + "\nreturn locals()\n", "    ")
    namespace: dict[str, object] = {}
    exec(f"async def __snippet({params}):\n{body}", namespace)
    return await namespace["__snippet"](**names)  # type: ignore[operator, no-any-return]


TESTED = {
    "### 2. One line in code",
    "### 3. By hand: the quota API",
    "## Concepts",
    "## State and fleets",
    "## Alert handlers",
    "## Metrics",
    "## Troubleshooting",
    "## Testing your own alert logic",
    "## Nested budgets and forecasts",
    "## Cost budgets",
}


RUN_ELSEWHERE = {
    # The zero-code app, run verbatim in a fresh venv under opentelemetry-instrument.
    "### 1. Zero code": ROOT / "tests" / "integration" / "test_zero_code_readme.py",
}


def test_every_python_block_is_run() -> None:
    assert {heading for heading, _ in python_blocks()} == TESTED | set(RUN_ELSEWHERE)
    for path in RUN_ELSEWHERE.values():
        assert "zero-code:app" in path.read_text()


@pytest.fixture
def default_manager_reset(no_quota_env: None) -> Iterator[None]:
    _registration._reset_for_tests()
    yield
    _registration._reset_for_tests()


def test_quick_start_runs_as_a_script(tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(block_under("### 3. By hand: the quota API"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # What the text after the snippet says it prints.
    assert lines[0] == "Alert: openai-prod at 85.0% quota usage (firing)"
    assert "85000 15000 85.0" in lines
    assert lines[-1] == "Alert: openai-prod at 0.0% quota usage (resolved)"
    assert '"total_tokens": 85000' in result.stdout


async def test_one_line_in_code(default_manager_reset: None) -> None:
    provider = TracerProvider()
    my_manager = LLMProviderManager(metrics=False)
    try:
        names = await run_async_snippet(
            block_under("### 2. One line in code"), provider=provider, my_manager=my_manager
        )
        processor = names["processor"]
        assert names["manager"] is _registration.get_manager()
        with provider.get_tracer("t").start_as_current_span(
            "chat", attributes={"gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 5}
        ):
            pass
        # Both processors saw the span: the default manager's and my_manager's.
        assert processor.stats.counted_spans == 1  # type: ignore[attr-defined]
        assert my_manager.ledger.get("openai").input_tokens == 5  # type: ignore[union-attr]
    finally:
        provider.shutdown()
        my_manager.close()


async def test_concepts_limits(manager: LLMProviderManager) -> None:
    await run_async_snippet(block_under("## Concepts"), manager=manager)
    quota = await manager.get_quota_usage("anthropic-dev")
    assert quota.quota_limit == 2_000_000
    assert quota.thresholds == (50.0, 80.0, 95.0, 100.0)


async def test_state_and_fleets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    names = await run_async_snippet(
        block_under("## State and fleets"), LLMProviderManager=LLMProviderManager
    )
    manager = names["manager"]
    try:
        assert (tmp_path / "quota.db").exists()
    finally:
        manager.close()  # type: ignore[attr-defined]


async def test_alert_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_LLM_QUOTA_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    async with LLMProviderManager(metrics=False) as manager:
        await run_async_snippet(block_under("## Alert handlers"), manager=manager)
        handlers = manager.alert_handlers
    assert [type(h).__name__ for h in handlers] == [
        "OTelLogEventHandler",
        "SlackAlertHandler",
    ]


async def test_metrics_snippets() -> None:
    blocks = [code for heading, code in python_blocks() if heading == "## Metrics"]
    names = await run_async_snippet(blocks[0])
    manager = names["manager"]
    try:
        assert {"llm.quota.usage", "llm.quota.limit"} <= names["names"]  # type: ignore[operator]
        prometheus = blocks[1].replace('port=9464, host="0.0.0.0"', 'port=0, host="127.0.0.1"')
        assert prometheus != blocks[1], "the Prometheus snippet changed: update this rewrite"
        await run_async_snippet(prometheus, manager=manager)
    finally:
        await manager.aclose()  # type: ignore[attr-defined]
        names["meter_provider"].shutdown()  # type: ignore[attr-defined]


async def test_troubleshooting_checks(capsys: pytest.CaptureFixture[str]) -> None:
    async with LLMProviderManager(metrics=False) as manager:
        await manager.set_quota_limit("openai-prod", 1000)
        await run_async_snippet(block_under("## Troubleshooting"), manager=manager)
    assert capsys.readouterr().out.splitlines() == ["False", "1000", "()"]


def test_the_config_file_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's YAML example passes check-config's validation (the store is not opened),
    but for its made-up handler factory, which the text says is any module of yours."""
    import yaml

    from otel_llm_quota import load_config

    text = README.read_text()
    start = text.index("### Config file")
    match = re.search(r"```yaml\n(.*?)```", text[start:], re.S)
    assert match is not None
    data = yaml.safe_load(match.group(1))
    custom = [h for h in data["handlers"] if ":" in h["type"]]
    assert [h["type"] for h in custom] == ["mycompany.alerts:make_pager"]
    data["handlers"] = [h for h in data["handlers"] if h not in custom]
    monkeypatch.chdir(tmp_path)
    setup = load_config(data, environment=False, validate_only=True)
    try:
        quotas = {q.config_id: q for q in setup.manager.ledger.get_all()}
        assert quotas["openai-prod"].parent == "org"
        assert quotas["openai-prod"].cost_limit_usd == 50
        assert quotas["org"].cost_limit_usd == 500
    finally:
        setup.manager.close()


async def test_testing_your_own_alert_logic() -> None:
    names = await run_async_snippet(block_under("## Testing your own alert logic"))
    await names["manager"].aclose()  # type: ignore[attr-defined]


async def test_nested_budgets_and_forecasts() -> None:
    names = await run_async_snippet(block_under("## Nested budgets and forecasts"))
    await names["manager"].aclose()  # type: ignore[attr-defined]


async def test_cost_budgets(capsys: pytest.CaptureFixture[str]) -> None:
    names = await run_async_snippet(block_under("## Cost budgets"))
    await names["manager"].aclose()  # type: ignore[attr-defined]
    # 1,000 * 0.30 + 200 * 1.20 micro-USD: what the comment after the snippet says it prints.
    assert names["status"]["cost_microusd"] == 540  # type: ignore[index]
    assert capsys.readouterr().out.strip() == "0.00054 540 0"
