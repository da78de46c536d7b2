"""What ``import otel_llm_quota`` adds to an application's start-up.

Each sample is a fresh interpreter: the wall time of ``python -c "import opentelemetry.sdk.trace"``
(the baseline: an app that traces already imports it) against ``python -c "import
opentelemetry.sdk.trace, otel_llm_quota"``, run in turn (interleaved) so machine noise hits both
alike; the figure is the difference of the medians. ``--before DIR`` adds a third case, the
package of another checkout (``git worktree add`` or ``git archive`` of an older commit), in the
same rounds, so before/after figures come from one run. ``--modules`` lists the modules the
package imports beyond the baseline, by their own import time (``python -X importtime``).

    python benchmarks/bench_import.py [--runs 15] [--before DIR] [--modules 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "import opentelemetry.sdk.trace"
PACKAGE = "import opentelemetry.sdk.trace, otel_llm_quota"
BUDGET_MS = 50.0


# Compiled modules go to a cache of this run (an installed package has its .pyc files; a
# PYTHONDONTWRITEBYTECODE environment would otherwise measure the compiler), never the tree.
_PYCACHE = tempfile.mkdtemp(prefix="bench-import-pycache-")


def _environment() -> dict[str, str]:
    # No OTEL_* settings: the import alone is measured, never a configured SDK.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = _PYCACHE
    return env


def wall_seconds(code: str, cwd: Path) -> float:
    """Wall time of one fresh ``python -c code`` run in ``cwd`` (its package comes first)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_environment(), check=True)
    return time.perf_counter() - start


def import_times(code: str, cwd: Path, cumulative: bool = False) -> dict[str, int]:
    """Module -> its own (or ``cumulative``) import time in microseconds, from
    ``python -X importtime``."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    times: dict[str, int] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        times[name.strip()] = int(cumulative_us if cumulative else self_us)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="samples per case (default 15)")
    parser.add_argument("--before", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--modules", type=int, default=0, help="list the N costliest modules")
    args = parser.parse_args()

    cases: dict[str, tuple[str, Path]] = {
        "baseline": (BASELINE, ROOT),
        "otel_llm_quota": (PACKAGE, ROOT),
    }
    if args.before is not None:
        cases["otel_llm_quota (before)"] = (PACKAGE, args.before.resolve())
    for code, cwd in cases.values():  # warm-up: the OS caches the files, .pyc are written
        wall_seconds(code, cwd)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (code, cwd) in cases.items():
            samples[name].append(wall_seconds(code, cwd))
    # The package's own import (cumulative, -X importtime) without interpreter start-up and exit:
    # less noisy than wall time on a busy machine.
    cumulative: dict[str, list[float]] = {name: [] for name in cases if name != "baseline"}
    for _ in range(args.runs):
        for name in cumulative:
            code, cwd = cases[name]
            cumulative[name].append(import_times(code, cwd, cumulative=True)["otel_llm_quota"])
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    base = medians["baseline"]
    print(f"{args.runs} fresh interpreters per case, interleaved; medians of wall time")
    print(f"  {'baseline (' + BASELINE + ')':<58} {base:7.1f} ms")
    status = 0
    for name in cases:
        if name == "baseline":
            continue
        added = medians[name] - base
        own = statistics.median(cumulative[name]) / 1000
        print(
            f"  {name:<58} {medians[name]:7.1f} ms   adds {added:6.1f} ms"
            f"   (its own import, -X importtime: {own:5.1f} ms)"
        )
        if name == "otel_llm_quota" and added > BUDGET_MS:
            print(f"  over the {BUDGET_MS:.0f} ms budget")
            status = 1

    if args.modules:
        baseline_modules = import_times(BASELINE, ROOT)
        added_modules = {
            module: us
            for module, us in import_times(PACKAGE, ROOT).items()
            if module not in baseline_modules
        }
        total = sum(added_modules.values()) / 1000
        print(
            f"\nmodules imported beyond the baseline: {len(added_modules)}, {total:.1f} ms (self)"
        )
        for module, us in sorted(added_modules.items(), key=lambda item: -item[1])[: args.modules]:
            print(f"  {us / 1000:6.1f} ms  {module}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
