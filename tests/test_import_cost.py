"""``import otel_llm_quota`` loads only what a manager needs (figures: benchmarks/bench_import)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

# Imported on first use only: the SDK's metrics package (quota_metric_views, prometheus),
# zoneinfo (a time zone other than UTC), pathlib (config files), asyncio with ssl (the monitor,
# the handlers' dispatcher, a store's flusher), hashlib (alert fingerprints, long response ids).
LAZY = ("opentelemetry.sdk.metrics", "zoneinfo", "pathlib", "asyncio", "ssl", "hashlib")


def _loaded_after(code: str) -> list[str]:
    """Which of ``LAZY`` a fresh interpreter has loaded after running ``code``."""
    code += f"\nimport sys\nprint(sorted(m for m in {LAZY!r} if m in sys.modules))\n"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return list(ast.literal_eval(out.stdout.strip()))


def test_import_leaves_the_optional_parts_unloaded() -> None:
    # What the OpenTelemetry API/SDK load themselves (it varies by release) is not ours to save.
    baseline = _loaded_after("import opentelemetry.sdk.trace, opentelemetry.metrics")
    ours = _loaded_after(
        "import otel_llm_quota\n"
        "manager = otel_llm_quota.LLMProviderManager()\n"
        "manager.record_usage('c', input_tokens=1)\n"
        "manager.close()"
    )
    assert [m for m in ours if m not in baseline] == []
