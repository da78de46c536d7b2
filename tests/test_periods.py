"""Calendar-aligned period boundaries, in UTC and in zones with DST."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from otel_llm_quota._periods import period_bounds, resolve_timezone, validate_period

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def ts(*args: int, tz: object = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[arg-type, misc]


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("hour", ts(2026, 3, 14, 15, 9, 26), ts(2026, 3, 14, 15), ts(2026, 3, 14, 16)),
        ("day", ts(2026, 3, 14, 15, 9, 26), ts(2026, 3, 14), ts(2026, 3, 15)),
        # 2026-03-14 is a Saturday: the ISO week started Monday the 9th.
        ("week", ts(2026, 3, 14, 15, 9, 26), ts(2026, 3, 9), ts(2026, 3, 16)),
        ("month", ts(2026, 3, 14, 15, 9, 26), ts(2026, 3, 1), ts(2026, 4, 1)),
        ("month", ts(2026, 12, 31, 23, 59, 59), ts(2026, 12, 1), ts(2027, 1, 1)),
        ("month", ts(2028, 2, 29, 12), ts(2028, 2, 1), ts(2028, 3, 1)),
        # A boundary instant belongs to the period it starts.
        ("day", ts(2026, 3, 15), ts(2026, 3, 15), ts(2026, 3, 16)),
    ],
)
def test_utc_bounds(period: str, now: float, start: float, end: float) -> None:
    assert period_bounds(validate_period(period), now, UTC) == (start, end)


def test_never_resetting_period() -> None:
    assert period_bounds(None, 1000.0, UTC) == (1000.0, math.inf)


def test_day_in_a_zone_starts_at_local_midnight() -> None:
    now = ts(2026, 7, 1, 23, 30)  # 01:30 on July 2nd in Paris (UTC+2)
    start, end = period_bounds("day", now, PARIS)
    assert start == ts(2026, 7, 2, tz=PARIS)
    assert end == ts(2026, 7, 3, tz=PARIS)


def test_dst_day_is_23_hours_and_week_spans_it() -> None:
    # Europe/Paris springs forward on Sunday 2026-03-29.
    start, end = period_bounds("day", ts(2026, 3, 29, 12, tz=PARIS), PARIS)
    assert end - start == 23 * 3600
    wstart, wend = period_bounds("week", ts(2026, 3, 29, 12, tz=PARIS), PARIS)
    assert wend - wstart == 7 * 86400 - 3600


def test_hours_around_dst_fold_are_one_hour_each() -> None:
    # Europe/Paris falls back on 2026-10-25: 02:00-03:00 local happens twice.
    first = ts(2026, 10, 25, 0, 30)  # 02:30 CEST
    second = ts(2026, 10, 25, 1, 30)  # 02:30 CET
    s1, e1 = period_bounds("hour", first, PARIS)
    s2, e2 = period_bounds("hour", second, PARIS)
    assert (e1 - s1, e2 - s2) == (3600.0, 3600.0)
    assert s1 <= first < e1
    assert s2 <= second < e2
    assert s2 == e1


@pytest.mark.parametrize("bad", ["monthly", "Month", ""])
def test_unknown_period_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="period"):
        validate_period(bad)


def test_period_of_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="period"):
        validate_period(30)


def test_timezones() -> None:
    assert resolve_timezone(None) is UTC
    assert resolve_timezone("utc") is UTC
    assert resolve_timezone("Europe/Paris") == PARIS
    with pytest.raises(ValueError, match="Mars/Olympus_Mons"):
        resolve_timezone("Mars/Olympus_Mons")
    with pytest.raises(TypeError):
        resolve_timezone(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "zone",
    ["Australia/Lord_Howe", "Europe/Paris", "Asia/Kolkata", "America/Santiago", "UTC"],
)
def test_every_instant_lies_in_its_hour_and_day_across_dst(zone: str) -> None:
    tz = resolve_timezone(zone)
    # A year, every 7 minutes: every DST change of these zones, Lord Howe's half-hour ones and
    # Santiago's at local midnight. Windows never overlap nor go backwards: each next window
    # starts exactly where the previous one ended (7 minutes is shorter than any window).
    start_of_2026 = ts(2026, 1, 1)
    previous: dict[str, tuple[float, float]] = {}
    odd_hours: set[tuple[str, float]] = set()
    for step in range(0, 365 * 24 * 60, 7):
        now = start_of_2026 + step * 60 + 0.25
        for period in ("hour", "day"):
            window = start, end = period_bounds(period, now, tz)  # type: ignore[arg-type]
            where = (period, datetime.fromtimestamp(now, tz))
            assert start <= now < end, where
            last = previous.get(period)
            if last is not None and window != last:
                assert start == last[1], (*where, last, window)
            previous[period] = window
            if period == "hour" and end - start != 3600.0:
                odd_hours.add((datetime.fromtimestamp(start, tz).isoformat(), end - start))
    if zone == "Australia/Lord_Howe":
        # Cut at the 30-minute changes: half an hour of 01:30-02:00 standard time after the
        # clocks go back (April), and 02:30-03:00 summer time after they go forward (October).
        assert odd_hours == {
            ("2026-04-05T01:30:00+10:30", 1800.0),
            ("2026-10-04T02:30:00+11:00", 1800.0),
        }
    else:
        assert odd_hours == set()


def test_lord_howe_hours_meet_at_the_dst_end() -> None:
    tz = resolve_timezone("Australia/Lord_Howe")
    change = ts(2026, 4, 4, 15)  # 02:00 summer time becomes 01:30 standard time
    before = period_bounds("hour", change - 1, tz)
    after = period_bounds("hour", change, tz)
    following = period_bounds("hour", after[1], tz)
    assert before == (change - 3600, change)
    assert after == (change, change + 1800)
    assert following == (change + 1800, change + 5400)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata"])
@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_window_starts_are_whole_seconds_whatever_the_fraction_of_now(
    zone: str, period: str
) -> None:
    # Stores key a window by its start: every process must compute the very same number.
    tz = resolve_timezone(zone)
    base = 1_796_158_799.0
    fractions = [i / 997 for i in range(997)]  # most not representable, nor whole microseconds
    starts = {period_bounds(period, base + frac, tz)[0] for frac in fractions}
    assert len(starts) == 1
    assert next(iter(starts)).is_integer()
