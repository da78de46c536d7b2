"""Fork-safety test helper: fork while another thread holds a lock, run a check in the child."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


def fork_while_locked(
    lock: threading.Lock | threading.RLock, child: Callable[[], int]
) -> tuple[int, int]:
    """Fork while a helper thread holds ``lock``; run ``child()`` in the child, whose return value
    is the child's exit code. Returns ``(child pid, exit code)``.

    Without re-initialisation after fork the child inherits ``lock`` held by a thread that does
    not exist there, and would deadlock on it: an alarm ends such a child after 20 s (a non-zero
    exit code) instead of hanging the test. An exception in ``child`` exits with 1. The child
    never returns into pytest.
    """
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with lock:
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait(10)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(20)
            code = child()
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    return pid, os.waitstatus_to_exitcode(status)
