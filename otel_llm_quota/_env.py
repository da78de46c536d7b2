"""Reading settings: constructor argument, else environment variable, else default."""

from __future__ import annotations

import logging
import math
import os
from typing import TypeVar

_logger = logging.getLogger(__name__)

__all__ = ["env_bool", "env_positive_int", "env_seconds", "env_str"]


_D = TypeVar("_D", float, None)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_seconds(
    name: str, default: _D, *, minimum: float = 0.0, maximum: float = math.inf
) -> float | _D:
    """A positive, finite number of seconds from ``name``, within ``[minimum, maximum]``; warn and
    use ``default`` if malformed or out of range."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        _logger.warning("%s=%r is not a positive number of seconds; using %s", name, raw, default)
        return default
    if not minimum <= value <= maximum:
        _logger.warning(
            "%s=%r is outside [%g, %g] seconds; using %s", name, raw, minimum, maximum, default
        )
        return default
    return value


def env_positive_int(name: str, default: int) -> int:
    """A positive int from ``name``; warn and use ``default`` if malformed."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        _logger.warning("%s=%r is not a positive integer; using %s", name, raw, default)
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    """``true``/``false`` (and 1/0, yes/no, on/off) from ``name``; warn and use ``default``."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    _logger.warning("%s=%r is not true or false; using %s", name, raw, default)
    return default


def env_str(name: str) -> str | None:
    """The stripped value of ``name``, or None when unset or blank."""
    raw = os.environ.get(name, "").strip()
    return raw or None
