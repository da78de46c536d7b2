"""Argument checks shared by the ledger and the manager: clear errors that name the argument."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

__all__ = [
    "check_config_id",
    "check_count",
    "check_limit",
    "check_optional_str",
    "check_positive_seconds",
    "check_thresholds",
]

MAX_CONFIG_ID_LENGTH = 256


def check_config_id(config_id: object) -> str:
    """Return ``config_id`` if it is a usable configuration id, else raise TypeError/ValueError."""
    if not isinstance(config_id, str):
        raise TypeError(f"config_id must be a str, not {type(config_id).__name__}")
    if not config_id.strip():
        raise ValueError("config_id must be a non-empty string")
    if len(config_id) > MAX_CONFIG_ID_LENGTH:
        raise ValueError(f"config_id must be at most {MAX_CONFIG_ID_LENGTH} characters")
    return config_id


def check_count(name: str, value: object) -> int:
    """Return ``value`` as a non-negative ``int`` (integers and ``__index__`` types only).

    ``bool`` and floats are refused even when integral: a token count of ``True`` or ``3.0`` is a
    bug in the caller, not a number to guess at.
    """
    if isinstance(value, (bool, float)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]  # refused below if unsupported
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def check_limit(quota_limit: object) -> int:
    """Return ``quota_limit`` as a positive ``int``, else raise TypeError/ValueError."""
    limit = check_count("quota_limit", quota_limit)
    if limit == 0:
        raise ValueError("quota_limit must be > 0, got 0")
    return limit


def check_thresholds(thresholds: Iterable[object], name: str = "thresholds") -> tuple[float, ...]:
    """Return the thresholds as a sorted tuple of distinct floats, each in (0, 100].

    ``name`` is the argument the caller took them from, for the error messages.
    """
    if isinstance(thresholds, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, not a string")
    values: set[float] = set()
    for item in thresholds:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise TypeError(f"{name}: each threshold must be a number, got {item!r}")
        value = float(item)
        if not math.isfinite(value) or not 0.0 < value <= 100.0:
            raise ValueError(f"{name}: each threshold must be in (0, 100], got {item!r}")
        values.add(value)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return tuple(sorted(values))


def check_optional_str(name: str, value: object) -> str | None:
    """Return ``value`` if it is a non-empty str or None, else raise TypeError/ValueError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def check_positive_seconds(
    name: str, value: object, *, minimum: float = 0.0, maximum: float = math.inf
) -> float:
    """Return ``value`` as a positive, finite float number of seconds.

    ``minimum`` (exclusive when 0, else inclusive) and ``maximum`` (inclusive) bound it further.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if seconds < minimum:
        raise ValueError(f"{name} must be at least {minimum:g} seconds, got {value!r}")
    if seconds > maximum:
        raise ValueError(f"{name} must be at most {maximum:g} seconds, got {value!r}")
    return seconds
