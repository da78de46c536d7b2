"""Make docs/status.svg, the README's picture: ``otel-llm-quota status`` after a demo run.

Run it from the repository root with the dev venv: ``.venv/bin/python scripts/readme-picture.py``.
It runs ``otel-llm-quota demo`` (its built-in loopback stub, no network) into a temporary SQLite
store, then renders the ``status`` table of that store into an SVG with rich's recording console.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from otel_llm_quota.cli._app import open_manager
from otel_llm_quota.cli._status import render

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        subprocess.run(
            [sys.executable, "-m", "otel_llm_quota", "demo", "--duration", "0", "--store", str(db)],
            check=True,
            capture_output=True,
        )
        url = f"sqlite:///{db}"
        manager = open_manager(url)
        try:
            console = Console(record=True, width=172, force_terminal=True, color_system="truecolor")
            shown = "sqlite:////srv/app/quota.db"  # not the temporary path
            console.print(f"$ otel-llm-quota status --store {shown}")
            console.print(render(manager.ledger.get_all(), shown, time.time()))
        finally:
            manager.close()
    out = ROOT / "docs" / "status.svg"
    out.parent.mkdir(exist_ok=True)
    console.save_svg(str(out), title="otel-llm-quota status")
    print(out)


if __name__ == "__main__":
    main()
