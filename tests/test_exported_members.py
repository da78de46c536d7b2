"""The public surface is explicit: ``__all__`` is sorted and names exactly what is public."""

from __future__ import annotations

import types

import pytest

import otel_llm_quota
import otel_llm_quota.handlers
import otel_llm_quota.prometheus
import otel_llm_quota.testing


def test_package_all_is_sorted_and_is_the_public_namespace() -> None:
    public = {
        name
        for name, value in vars(otel_llm_quota).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert otel_llm_quota.__all__ == sorted(otel_llm_quota.__all__)
    assert set(otel_llm_quota.__all__) - {"__version__"} == public


@pytest.mark.parametrize("module", [otel_llm_quota.testing, otel_llm_quota.prometheus])
def test_module_all_lists_what_it_defines(module: types.ModuleType) -> None:
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and isinstance(value, (type, types.FunctionType))
        and value.__module__ == module.__name__
    }
    assert module.__all__ == sorted(module.__all__)
    assert set(module.__all__) == defined


@pytest.mark.parametrize("module", [otel_llm_quota.handlers])
def test_reexporting_module_all_is_its_public_namespace(module: types.ModuleType) -> None:
    """A thin public module over private ones: everything it holds is exported, and only that."""
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert module.__all__ == sorted(module.__all__)
    assert set(module.__all__) == public


def test_version_is_exported() -> None:
    assert otel_llm_quota.__version__ == "0.1.0"
