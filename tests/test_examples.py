"""The examples run as documented and finish by themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` as the README says (the venv's python); it must exit 0 by itself."""
    result = subprocess.run(
        [sys.executable, f"examples/{name}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_quota_monitoring_example_runs() -> None:
    result = run_example("quota_monitoring_example.py")
    out = result.stdout
    assert "Alert: anthropic-dev at 57.5% quota usage (firing, threshold 50.0%)" in out
    assert "Alert: anthropic-dev at 92.5% quota usage (firing, threshold 80.0%)" in out
    assert "('anthropic-dev', 'resolved', 80.0, 'period_reset')" in out
    assert '"total_tokens": 15000' in out
    assert "monitoring: False" in out


def test_span_processor_example_runs() -> None:
    lines = run_example("span_processor_example.py").stdout.splitlines()
    assert lines[0].startswith(
        "ALERT firing: openai-checkout crossed 50% (5400/10000 tokens, trace "
    )
    assert lines[0] != "ALERT firing: openai-checkout crossed 50% (5400/10000 tokens, trace -)"
    assert lines[1:] == [
        " openai-checkout:  5400 tokens (4500 in, 900 out) of 10000",
        "       anthropic:  1000 tokens (800 in, 200 out) of no limit",
        "      batch-jobs:  2500 tokens (2000 in, 500 out) of no limit",
    ]
