"""Argument checks shared by the ledger and the manager: clear errors that name the argument."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

__all__ = [
    "MAX_CONFIG_ID_LENGTH",
    "MAX_PERIOD_TOKENS",
    "MAX_TOKENS",
    "check_bool",
    "check_config_id",
    "check_count",
    "check_limit",
    "check_optional_str",
    "check_positive_seconds",
    "check_thresholds",
]

MAX_CONFIG_ID_LENGTH = 256

MAX_TOKENS = 2**53
"""The largest quota limit and the largest token count of one ``record_usage`` call.

2**53 (about 9e15) is far above any real usage, is exact as a float (thresholds are percentages
of the limit) and as a JSON number in any language (alert payloads), and leaves room below
OTLP's and the stores' int64 for sums: a period's total can take 512 maximal calls before it
reaches ``MAX_PERIOD_TOKENS``."""

MAX_PERIOD_TOKENS = 2**62 - 1
"""A config's counters saturate here: usage beyond it in one period is not counted.

Twice this still fits an int64, so a lifetime total (closed periods, also capped here, plus
the current one) never overflows OTLP's int64 or a store's integer column."""


def check_config_id(config_id: object, *, printable: bool = True) -> str:
    """Return ``config_id`` if it is a usable configuration id, else raise TypeError/ValueError.

    An id is a non-blank str of at most ``MAX_CONFIG_ID_LENGTH`` characters. With ``printable``
    (ids given to the API) it must also be printable: a newline, carriage return, NUL or other
    control character would forge log lines and break mail headers. Ids read from spans are
    checked with ``printable=False`` (the app's data is counted as it is) and escaped where
    they are written.
    """
    if not isinstance(config_id, str):
        raise TypeError(f"config_id must be a str, not {type(config_id).__name__}")
    if not config_id.strip():
        raise ValueError("config_id must be a non-empty string")
    if len(config_id) > MAX_CONFIG_ID_LENGTH:
        raise ValueError(f"config_id must be at most {MAX_CONFIG_ID_LENGTH} characters")
    if printable and not config_id.isprintable():
        raise ValueError(f"config_id must not contain control characters, got {config_id!r}")
    return config_id


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` as a bool: a bool, or one of true/false, 1/0, yes/no, on/off.

    The words (any case) and the ints 0 and 1 come from configuration files and environment
    variables; anything else raises rather than being taken by its truthiness (``"false"`` is a
    true string).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be true or false, not {type(value).__name__}")


def _show(number: int) -> str:
    # A huge int has no cheap (or even possible: sys.set_int_max_str_digits) decimal form.
    return str(number) if number.bit_length() <= 64 else f"a {number.bit_length()}-bit number"


def check_count(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` in [0, ``MAX_TOKENS``] (ints and ``__index__`` types only).

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
        raise ValueError(f"{name} must be >= 0, got {_show(number)}")
    if number > MAX_TOKENS:
        raise ValueError(f"{name} must be at most 2**53 ({MAX_TOKENS}), got {_show(number)}")
    return number


def check_limit(quota_limit: object) -> int:
    """Return ``quota_limit`` as an int in [1, ``MAX_TOKENS``], else raise TypeError/ValueError."""
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
    if not isinstance(thresholds, Iterable):
        raise TypeError(f"{name} must be a sequence of numbers, not {type(thresholds).__name__}")
    values: set[float] = set()
    for item in thresholds:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise TypeError(f"{name}: each threshold must be a number, got {item!r}")
        try:
            value = float(item)
        except OverflowError:  # an int beyond any float
            value = math.inf
        if not math.isfinite(value) or not 0.0 < value <= 100.0:
            shown = _show(item) if isinstance(item, int) else repr(item)
            raise ValueError(f"{name}: each threshold must be in (0, 100], got {shown}")
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
