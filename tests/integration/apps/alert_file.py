"""An alert-handler factory for ``otel-llm-quota serve`` tests: each alert one JSON line in a file.

Named by import string in a config file (``{"type": "alert_file:make_handler", "path": ...}``).
The file is opened with O_APPEND, so the lines of several processes never interleave.
"""

from __future__ import annotations

import json
import os
from typing import Any


class FileAlertHandler:
    name = "file"

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def handle_alert(self, alert: Any) -> None:
        line = {
            "config_id": alert.config_id,
            "threshold": alert.threshold_percent,
            "state": alert.state.value,
            "pid": os.getpid(),
        }
        os.write(self._fd, (json.dumps(line) + "\n").encode())


def make_handler(path: str) -> FileAlertHandler:
    return FileAlertHandler(path)
