"""examples/zero_code and examples/fastapi_workers: the lines of their READMEs, run as written.

They need the example's third-party packages (openai, opentelemetry-instrument, FastAPI,
uvicorn: the test extra), so they live here rather than in tests/test_examples.py, which the
oldest-dependencies venv runs too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port, require_binary, require_module
from .llm_stub import LLMStub

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def readme_block(example: str, marker: str) -> str:
    """The first ```bash block after ``<!-- example:marker -->`` in examples/<example>/README.md."""
    text = (ROOT / "examples" / example / "README.md").read_text()
    start = text.index(f"<!-- example:{marker} -->")
    match = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no bash block after example:{marker} in {example}"
    return match.group(1)


def shell_env(**extra: str) -> dict[str, str]:
    """A shell of this venv (its bin first on PATH) without this run's OTel/OpenAI settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_", "UVICORN_"))
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # OpenLLMetry's instrumentations (installed here by the test extra, not by the example's
    # extras) would try to send a usage ping, to a network this machine does not have.
    env["TRACELOOP_TELEMETRY"] = "false"
    env.update(extra)
    return env


def test_zero_code_example_runs() -> None:
    for module in ("openai", "opentelemetry.instrumentation.openai_v2", "yaml"):
        require_module(module)
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    assert launcher.exists(), f"{launcher} is missing: the test extra installs it"
    with LLMStub() as stub:
        result = subprocess.run(
            ["bash", "-c", "set -e\n" + readme_block("zero_code", "run")],
            cwd=ROOT,
            env=shell_env(OPENAI_BASE_URL=stub.openai_base_url, OPENAI_API_KEY="sk-test"),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Hello from stub"] * 3
    # Three calls of 18 tokens of the 100-token quota of quotas.yaml, picked by its rule: once
    # each, although this venv has three instrumentations of openai.
    assert "LLM quota chat-app crossed 50% (54.0% used)" in result.stderr, result.stderr
    assert "no LLM instrumentation is active" not in result.stderr


class _Lines:
    """The lines a process writes to a pipe, read by a thread; ``wait_for`` blocks until a line
    containing a text has arrived ``count`` times (or the deadline passes)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count(text) >= count, timeout)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def test_fastapi_workers_example_shares_one_quota(tmp_path: Path) -> None:
    for module in ("fastapi", "uvicorn", "click", "rich"):
        require_module(module)
    require_binary("curl")
    run_block = readme_block("fastapi_workers", "run")
    exports = [line for line in run_block.splitlines() if line.startswith("export ")]
    (server_line,) = [line for line in run_block.splitlines() if line.startswith("uvicorn ")]
    assert server_line.endswith(" &")
    port = str(free_port())
    # From the repository's root as the README says (PYTHONPATH), in a working directory of the
    # test's own for the store's file.
    env = shell_env(UVICORN_PORT=port, PYTHONPATH=str(ROOT))
    script = "\n".join(["set -e", *exports, "exec " + server_line.removesuffix(" &")])
    server = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = _Lines(server.stderr)
    try:
        assert log.wait_for("Application startup complete.", count=2), "".join(log.lines)
        requests = subprocess.run(
            ["bash", "-c", readme_block("fastapi_workers", "requests")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        answers = [json.loads(line) for line in requests.stdout.splitlines() if line.strip()]
        assert len(answers) == 20, requests.stdout
        # One alert for the fleet: 8,000 of 10,000 tokens crossed 50% (not 90%).
        assert log.wait_for("LLM quota chat-fleet crossed 50%"), "".join(log.lines)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's Ctrl-C: the workers shut down cleanly
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.join(timeout=10)
    assert server.returncode == 0, "".join(log.lines)
    assert log.count("LLM quota chat-fleet crossed") == 1, "".join(log.lines)
    status_block = "\n".join([*exports, readme_block("fastapi_workers", "status")])
    status = subprocess.run(
        ["bash", "-c", "set -e\n" + status_block],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "chat-fleet" in status.stdout
    assert "8,000/10.0k" in status.stdout, status.stdout
    pids = {answer["pid"] for answer in answers}
    url = next(
        line.split("=", 1)[1].split()[0] for line in exports if "OTEL_LLM_QUOTA_STORE" in line
    )
    fleet = json.loads(
        subprocess.run(
            [
                str(Path(sys.executable).with_name("otel-llm-quota")),
                "status",
                "--json",
                "--store",
                url,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    (quota,) = fleet
    assert (quota["total_tokens"], quota["total_requests"]) == (8000, 20), (quota, pids)
