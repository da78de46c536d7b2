"""Under the real ``opentelemetry-instrument``: the entry point's INFO line when it attaches, and
its one WARNING when no LLM instrumentation is active.

The app's logging is set up before the instrumentors run by an ``opentelemetry_pre_instrument``
entry point of a throwaway distribution (a ``.dist-info`` on PYTHONPATH), the one hook that runs
early enough to see an INFO line from ``post_instrument``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_module

pytestmark = pytest.mark.integration

LOGGER = "otel_llm_quota._autoinstrument"


def run_instrumented(tmp_path: Path, **extra: str) -> list[str]:
    """Run a one-line app under opentelemetry-instrument; the lines our entry point logged."""
    require_module("opentelemetry.instrumentation.auto_instrumentation")
    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    if not launcher.exists():
        pytest.fail(f"{launcher} is missing: the test extra installs opentelemetry-instrumentation")
    hooks = tmp_path / "hooks"
    info = hooks / "quota_test_logging-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: quota-test-logging\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_pre_instrument]\nquota_test_logging = quota_test_logging:setup\n"
    )
    (hooks / "quota_test_logging.py").write_text(
        "import logging\n\n\ndef setup():\n"
        "    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s')\n"
    )
    (tmp_path / "app.py").write_text("print('app ran')\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "ANTHROPIC_", "OPENAI_", "TRACELOOP_", "PYTHONPATH"))
    }
    env.update(
        PYTHONPATH=str(hooks),
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        TRACELOOP_TELEMETRY="false",
        OTEL_LLM_QUOTA_LIMITS="openai=1000",
        OTEL_LLM_QUOTA_ALERT_HANDLERS="logging",
        **extra,
    )
    done = subprocess.run(
        [str(launcher), sys.executable, "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout == "app ran\n"
    return [line for line in done.stderr.splitlines() if f" {LOGGER} " in line]


def test_one_info_line_names_what_was_attached(tmp_path: Path) -> None:
    (line,) = run_instrumented(tmp_path)
    assert line.startswith(
        f"INFO {LOGGER} otel-llm-quota: counting LLM spans; quotas: openai=1000; store: none "
        "(this process only); handlers: LoggingAlertHandler(name='logging', "
        "logger='otel_llm_quota.alerts'); LLM instrumentations: "
    ), line
    active = line.rpartition("LLM instrumentations: ")[2].split(", ")
    # What tests/constraints.txt installs and opentelemetry-instrument activates here.
    assert "opentelemetry-instrumentation-openai-v2" in active
    assert "opentelemetry-instrumentation-anthropic" in active
    assert "anthropic (SDK spans)" in active


def test_one_warning_when_no_llm_instrumentation_is_active(tmp_path: Path) -> None:
    lines = run_instrumented(
        tmp_path,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai,anthropic,langchain",
        ANTHROPIC_OPEN_TELEMETRY="false",
    )
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"INFO {LOGGER} ")
    assert lines[0].endswith("LLM instrumentations: none")
    assert lines[1].startswith(
        f"WARNING {LOGGER} otel-llm-quota: no LLM instrumentation is active"
    ), lines[1]
