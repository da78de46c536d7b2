"""The store backends the contract suite (tests/test_store_contract.py) and the fleet tests run
over. Each factory gets pytest's ``request`` and a temporary directory and returns a fresh,
empty store URL or object; backends that need a server take it from fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otel_llm_quota.stores import MemoryStore, QuotaStore, open_store


def _memory(request: pytest.FixtureRequest, tmp: Path) -> QuotaStore:
    return MemoryStore()


def _sqlite(request: pytest.FixtureRequest, tmp: Path) -> QuotaStore:
    return open_store(f"sqlite:///{tmp}/quota.db")


def _redis(request: pytest.FixtureRequest, tmp: Path) -> QuotaStore:
    return open_store(request.getfixturevalue("redis_url"))


def _redis_cluster(request: pytest.FixtureRequest, tmp: Path) -> QuotaStore:
    return open_store(request.getfixturevalue("redis_cluster_url"))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Any]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "redis-cluster": _redis_cluster,
}
"""name -> factory. The Redis ones use the session server and cluster of tests/conftest.py
(emptied for each test; missing redis-server or redis-py skips, or fails under CI=true)."""
