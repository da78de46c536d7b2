"""Prefork servers: a forked child gets a working lock and its own monitor thread."""

from __future__ import annotations

import os
import threading

import pytest
from _forking import fork_while_locked

from otel_llm_quota import Alert, LLMProviderManager

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class PipeHandler:
    """Writes each alert to a pipe and sets an event (works across the fork)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.delivered = threading.Event()

    def handle_alert(self, alert: Alert) -> None:
        os.write(self.fd, f"{alert.config_id}:{alert.threshold_percent:g}:{os.getpid()}\n".encode())
        self.delivered.set()


def test_forked_child_records_and_alerts_even_if_the_lock_was_held_at_fork() -> None:
    read_fd, write_fd = os.pipe()
    manager = LLMProviderManager()
    handler = PipeHandler(write_fd)
    manager.add_alert_handler(handler)
    manager.set_quota_limit_sync("c", 100)
    manager.start_monitoring_thread(interval=3600)
    try:

        def child() -> int:
            manager.record_usage("c", input_tokens=100)
            return 0 if handler.delivered.wait(10) else 2

        pid, code = fork_while_locked(manager.ledger.lock, child)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            lines = pipe.read().splitlines()
        assert code == 0
        assert lines == [f"c:80:{pid}"]
        # The parent's state is its own: the child's usage never reached it.
        info = manager.ledger.get("c")
        assert info is not None
        assert info.total_tokens == 0
    finally:
        manager.close()


def test_a_forked_child_gets_its_own_handler_workers() -> None:
    # The parent's handler worker thread (and the lock it may hold) do not exist in the child.
    read_fd, write_fd = os.pipe()
    manager = LLMProviderManager()
    handler = PipeHandler(write_fd)
    manager.add_alert_handler(handler)
    manager.set_quota_limit_sync("parent", 100)
    manager.set_quota_limit_sync("child", 100)
    manager.start_monitoring_thread(interval=3600)
    try:
        manager.record_usage("parent", input_tokens=100)
        assert handler.delivered.wait(10)  # the parent's worker thread for this handler runs
        handler.delivered.clear()

        def child() -> int:
            manager.record_usage("child", input_tokens=100)
            return 0 if handler.delivered.wait(10) else 2

        pid, code = fork_while_locked(manager._dispatcher._lock, child)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            lines = pipe.read().splitlines()
        assert code == 0
        assert lines == [f"parent:80:{os.getpid()}", f"child:80:{pid}"]
    finally:
        manager.close()
