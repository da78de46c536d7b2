"""Real processes sharing a store: a driver for tests/integration/apps/store_worker.py."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "apps" / "store_worker.py"
TIMEOUT_SECONDS = 120.0


class Worker:
    """One store_worker.py process; ``ask`` sends a command and returns its answer line."""

    def __init__(self, store: str, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), full_env.get("PYTHONPATH")])
        )
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--store", store, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.expect("ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float = TIMEOUT_SECONDS) -> str:
        """The next line starting with ``prefix`` (other lines, e.g. progress, are skipped)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"worker: no {prefix!r} within {timeout}s; stderr:\n{''.join(self.stderr)}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"worker exited ({self.proc.wait()}) before {prefix!r}; "
                    f"stderr:\n{''.join(self.stderr)}"
                )
            if line.startswith(prefix):
                return line

    def ask(self, command: str, prefix: str, timeout: float = TIMEOUT_SECONDS) -> str:
        self.send(command)
        return self.expect(prefix, timeout)

    def status(self, config: str) -> tuple[int, int | None, str, int]:
        words = self.ask(f"status {config}", "status").split()
        return int(words[1]), None if words[2] == "None" else int(words[2]), words[3], int(words[4])

    def exit(self) -> None:
        self.ask("exit", "bye")
        assert self.proc.wait(TIMEOUT_SECONDS) == 0, "".join(self.stderr)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(TIMEOUT_SECONDS)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT_SECONDS)


def read_alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
