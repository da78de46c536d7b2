"""Fork safety: objects that own locks or threads re-initialise them in a forked child.

A prefork server (gunicorn, uWSGI, multiprocessing with ``fork``) copies the parent's memory but
only the forking thread: a lock another thread held stays locked forever in the child, and
background threads are gone. Like the OpenTelemetry SDK's batch processors, our objects register
an ``after_in_child`` hook that rebuilds them. The hook holds only a weak reference, so it never
keeps an object alive.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

__all__ = ["reinit_after_fork"]


def reinit_after_fork(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every child forked after this call (if its object lives)."""
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - Windows has no fork
        return
    ref = weakref.WeakMethod(method)

    def hook() -> None:
        bound = ref()
        if bound is not None:
            bound()

    os.register_at_fork(after_in_child=hook)
