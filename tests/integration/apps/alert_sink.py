"""An alert-handler factory named by import string in the zero-code test's config file."""

from __future__ import annotations

import threading
from typing import Any

received = threading.Event()
alerts: list[Any] = []


class SinkHandler:
    """Keeps the alerts it receives and sets ``received``."""

    def __init__(self, label: str) -> None:
        self.label = label

    def handle_alert(self, alert: Any) -> None:
        alerts.append((self.label, alert))
        received.set()


def make_sink(label: str = "sink") -> SinkHandler:
    return SinkHandler(label)
