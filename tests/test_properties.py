"""Property tests: any sequence of usage, limit changes and clock moves keeps totals exact and
never notifies the same threshold twice within a cooldown."""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import example, given, settings
from hypothesis import strategies as st

from otel_llm_quota import AlertState, QuotaLedger
from otel_llm_quota._alerting import evaluate_ledger
from otel_llm_quota.testing import FakeClock

COOLDOWN = 600.0
CONFIGS = ("a", "b")

record = st.tuples(
    st.just("record"),
    st.sampled_from(CONFIGS),
    st.integers(0, 200),
    st.integers(0, 200),
    st.booleans(),
)
# Few limits, so that raising and lowering a limit moves usage across thresholds both ways.
limit = st.tuples(
    st.just("limit"),
    st.sampled_from(CONFIGS),
    st.sampled_from([100, 150, 300, 1000, 2999]),
    st.lists(st.sampled_from([10.0, 25.5, 50.0, 80.0, 95.0, 100.0]), min_size=1, max_size=4),
)
# Mostly moves within a cooldown, sometimes past it or past a period boundary.
advance = st.tuples(
    st.just("advance"),
    st.one_of(st.floats(0, COOLDOWN, allow_nan=False), st.floats(0, 2 * 3600, allow_nan=False)),
)
check = st.tuples(st.just("check"))
operations = st.lists(st.one_of(record, limit, advance, check), max_size=60)


# Found in review: resolved by a raised limit, crossed again within the cooldown (a lowered
# limit), then resolved again: the status must never claim an alert nobody was told about.
RE_CROSS_WITHIN_COOLDOWN = [
    ("limit", "a", 1000, [50.0, 80.0, 95.0]),
    ("record", "a", 200, 200, True),
    ("record", "a", 200, 200, True),
    ("record", "a", 100, 60, True),
    ("check",),
    ("limit", "a", 1500, [50.0, 80.0, 95.0]),
    ("check",),
    ("advance", 300.0),
    ("limit", "a", 1000, [50.0, 80.0, 95.0]),
    ("check",),
    ("limit", "a", 1500, [50.0, 80.0, 95.0]),
    ("check",),
]


@settings(max_examples=500, deadline=None)
@example(RE_CROSS_WITHIN_COOLDOWN)
@given(operations)
def test_totals_exact_and_no_repeat_within_cooldown(ops: list[tuple[object, ...]]) -> None:
    clock = FakeClock(1_800_000_000.0)
    ledger = QuotaLedger(clock=clock, default_period="hour")
    period_totals: dict[tuple[str, int], int] = defaultdict(int)
    lifetime: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    limits: dict[str, tuple[int, tuple[float, ...]]] = {}
    last_fired: dict[tuple[str, int, float], float] = {}
    notified: dict[str, set[float]] = defaultdict(set)
    last_period: dict[str, object] = {}

    def hour() -> int:
        return math.floor(clock() / 3600)

    for op in ops:
        kind = op[0]
        if kind == "record":
            _, cid, tin, tout, ok = op
            ledger.record_usage(cid, input_tokens=tin, output_tokens=tout, success=ok)
            period_totals[(cid, hour())] += tin + tout
            acc = lifetime[cid]
            acc[0] += tin
            acc[1] += tout
            acc[2 if ok else 3] += 1
        elif kind == "limit":
            _, cid, lim, levels = op
            info = ledger.set_limit(cid, lim, thresholds=levels, period="hour")
            limits[cid] = (lim, info.thresholds)
        elif kind == "advance":
            clock.advance(op[1])
        else:
            result = evaluate_ledger(ledger, clock(), COOLDOWN, send_resolved=True)
            for alert in result.alerts:
                told = notified[alert.config_id]
                if alert.state is AlertState.RESOLVED:
                    # Only what was notified as firing (in its period) is ever resolved, once.
                    assert set(alert.thresholds) <= told
                    told -= set(alert.thresholds)
                    continue
                if alert.period_start != last_period.get(alert.config_id):
                    told.clear()  # a new period: earlier alerts were resolved (or not sent)
                    last_period[alert.config_id] = alert.period_start
                told.update(alert.thresholds)  # a firing notification lists every active one
                lim, _ = limits[alert.config_id]
                # A firing notification is only ever sent for a threshold that usage is above.
                assert alert.quota.total_tokens * 100 >= lim * alert.threshold_percent - 1e-6
                key = (alert.config_id, hour(), alert.threshold_percent)
                previous = last_fired.get(key)
                assert previous is None or clock() - previous >= COOLDOWN
                last_fired[key] = clock()
            # The status never disagrees with what the handlers were told.
            for cid, told in notified.items():
                info = ledger.get(cid)
                assert info is not None
                assert info.alert_triggered == bool(told)
                assert info.alert_threshold == (max(told) if told else None)

    now_hour = hour()
    for cid in lifetime:
        info = ledger.get(cid)
        assert info is not None
        assert info.total_tokens == period_totals[(cid, now_hour)]
        assert [
            info.lifetime_input_tokens,
            info.lifetime_output_tokens,
            info.lifetime_successful_requests,
            info.lifetime_failed_requests,
        ] == lifetime[cid]
