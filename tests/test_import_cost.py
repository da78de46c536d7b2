"""``import otel_llm_quota`` loads only what a manager needs (figures: benchmarks/bench_import)."""

from __future__ import annotations

import os
import subprocess
import sys

# Imported on first use only: the SDK's metrics package (quota_metric_views, prometheus),
# zoneinfo (a time zone other than UTC), pathlib (config files).
LAZY = ("opentelemetry.sdk.metrics", "zoneinfo", "pathlib")


def test_import_leaves_the_optional_parts_unloaded() -> None:
    code = (
        "import sys, otel_llm_quota\n"
        "otel_llm_quota.LLMProviderManager().close()\n"
        f"print(sorted(m for m in {LAZY!r} if m in sys.modules))\n"
    )
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
    assert out.stdout.strip() == "[]"
