"""Calendar-aligned quota periods.

A quota period is a window of wall-clock time in a given time zone: an hour, a day, an ISO week
(starting Monday 00:00), a calendar month, or ``None`` for a quota that never resets. Boundaries are
computed in the quota's time zone (so a "day" in ``Europe/Paris`` starts at local midnight, and DST
changes make some days 23 or 25 hours long; where a change is not a whole hour, as in
Australia/Lord_Howe, the hour around it is cut at the change, so windows never overlap) and
returned as POSIX timestamps so the hot path only ever compares two floats.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Final, Literal

__all__ = ["PERIODS", "Period", "period_bounds", "resolve_timezone", "validate_period"]

Period = Literal["hour", "day", "week", "month"]
"""The names of the calendar periods a quota can reset on (``None`` means never)."""

PERIODS: Final[tuple[str, ...]] = ("hour", "day", "week", "month")

_NEVER: Final = math.inf


def validate_period(period: object) -> Period | None:
    """Return ``period`` if it names a known period (or is ``None``), else raise.

    Raises:
        TypeError: ``period`` is neither a string nor ``None``.
        ValueError: ``period`` is a string that names no period.
    """
    if period is None:
        return None
    if not isinstance(period, str):
        raise TypeError(f"period must be one of {PERIODS!r} or None, not {type(period).__name__}")
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS!r} or None, got {period!r}")
    return period  # type: ignore[return-value]  # narrowed by the membership test above


def resolve_timezone(tz: str | tzinfo | None) -> tzinfo:
    """Turn a time zone name (``"Europe/Paris"``), a ``tzinfo`` or ``None`` (UTC) into a tzinfo.

    Raises:
        ValueError: the name is not a known IANA time zone.
        TypeError: ``tz`` is of another type.
    """
    if tz is None:
        return timezone.utc
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise TypeError(f"timezone must be an IANA name or a tzinfo, not {tz!r}")
    if tz.upper() == "UTC":
        return timezone.utc
    # Imported here: zoneinfo (with sysconfig, which it reads for the tz path) costs ~3 ms at
    # start-up, and most managers count in UTC.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"timezone {tz!r} is not a known IANA time zone") from exc


def _offset(ts: float, tz: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, tz).utcoffset()


def _transition(before: float, after: float, tz: tzinfo) -> float:
    """The first whole second in ``(before, after]`` with the UTC offset in force at ``after``.

    Offsets change on whole seconds, and ``before`` has another offset: a bisection of at most
    12 steps over one hour.
    """
    target = _offset(after, tz)
    lo, hi = math.floor(before), math.floor(after)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, tz) == target:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _hour_bounds(now: float, local: datetime, tz: tzinfo) -> tuple[float, float]:
    """The local wall-clock hour containing ``now``, cut where the UTC offset changes.

    The hour is floored with the offset in force now. Where a DST change is not a whole hour
    (Australia/Lord_Howe moves by 30 minutes) that hour would overlap the previous one or skip
    part of the next, so the window is cut at the change instead: hours around such a change
    are shorter than 3600 s, and consecutive windows always meet exactly (``end`` of one is
    ``start`` of the next), like days of 23 or 25 hours at a DST change.
    """
    # Whole seconds (offsets are whole seconds): the start is an exact integer, the same in
    # every process whatever the fraction of ``now`` (stores key windows by it).
    start = float(math.floor(now) - (local.minute * 60 + local.second))
    end = start + 3600.0
    offset = local.utcoffset()
    if _offset(start, tz) != offset:
        start = _transition(start, now, tz)
    last = end - 1.0  # offsets change on whole seconds: the window's last second
    if last > now and _offset(last, tz) != offset:
        end = _transition(now, last, tz)
    return start, end


def period_bounds(period: Period | None, now: float, tz: tzinfo) -> tuple[float, float]:
    """Return ``(start, end)`` POSIX timestamps of the period that contains ``now``.

    ``start <= now < end`` always holds. For ``period=None`` the window is ``(now, inf)``: the
    quota started counting now and never resets.
    """
    if period is None:
        return now, _NEVER
    local = datetime.fromtimestamp(now, tz)
    if period == "hour":
        return _hour_bounds(now, local, tz)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period == "day":
        start_naive = day_start
        end_naive = day_start + timedelta(days=1)
    elif period == "week":
        start_naive = day_start - timedelta(days=day_start.weekday())
        end_naive = start_naive + timedelta(days=7)
    else:  # month
        start_naive = day_start.replace(day=1)
        if start_naive.month == 12:
            end_naive = start_naive.replace(year=start_naive.year + 1, month=1)
        else:
            end_naive = start_naive.replace(month=start_naive.month + 1)
    start = start_naive.replace(tzinfo=tz).timestamp()
    end = end_naive.replace(tzinfo=tz).timestamp()
    # A local midnight that does not exist (DST gap) maps just after the gap: start could then
    # land after ``now`` only if ``now`` sits inside the gap, which no real instant does.
    return min(start, now), end
