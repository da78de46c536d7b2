"""Fork safety: objects that own locks or threads re-initialise them in a forked child.

A prefork server (gunicorn, uWSGI, multiprocessing with ``fork``) copies the parent's memory but
only the forking thread: a lock another thread held stays locked forever in the child, and
background threads are gone. Like the OpenTelemetry SDK's batch processors, our objects register
an ``after_in_child`` hook that rebuilds them. The hook holds only a weak reference, so it never
keeps an object alive.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401 - imported for its at-fork hooks, see below
import os
import weakref
from collections.abc import Callable

# ``concurrent.futures.thread`` holds a global lock across fork and re-creates it in the child in
# an at-fork hook registered when the module is first imported, which the stdlib does lazily.
# at-fork hooks run in registration order: a hook registered earlier that submits to a thread
# pool in the child (the OpenTelemetry SDK's TracerProvider re-detects its resource that way)
# then blocks forever on the still-held lock. Importing the module here, with the first of our
# own hooks, registers its re-initialisation before any provider created after this import.

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
