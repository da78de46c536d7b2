"""Integration-test plumbing: real servers and binaries, loopback only.

A test that needs a binary or an optional package calls ``require_binary`` / ``require_module``.
Under ``CI=true`` a missing one **fails** the test (a skip would hide a broken install step);
elsewhere it skips with the command that installs it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(what: str, hint: str) -> None:
    message = f"{what} is not available ({hint})"
    if IN_CI:
        pytest.fail(message + "; CI must install it", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, hint: str = "run `make system-deps`") -> str:
    """The path of executable ``name``; fail (CI) or skip (elsewhere) when it is missing."""
    path = shutil.which(name)
    if path is None:
        _missing(f"executable {name!r}", hint)
        raise AssertionError("unreachable")  # pragma: no cover - _missing raises
    return path


def require_module(name: str, hint: str = "run `make venv`") -> ModuleType:
    """Import ``name``; fail (CI) or skip (elsewhere) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"Python module {name!r}", hint)
        raise AssertionError("unreachable") from None  # pragma: no cover


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that need one up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
