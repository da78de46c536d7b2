"""Property tests: any sequence of usage, limit changes and clock moves keeps totals exact and
never notifies the same threshold twice within a cooldown."""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_llm_quota import AlertState, QuotaLedger
from otel_llm_quota._alerting import evaluate_ledger
from otel_llm_quota.testing import FakeClock

COOLDOWN = 600.0
CONFIGS = ("a", "b", "c")

record = st.tuples(
    st.just("record"),
    st.sampled_from(CONFIGS),
    st.integers(0, 400),
    st.integers(0, 400),
    st.booleans(),
)
limit = st.tuples(
    st.just("limit"),
    st.sampled_from(CONFIGS),
    st.integers(1, 3000),
    st.lists(st.sampled_from([10.0, 25.5, 50.0, 80.0, 95.0, 100.0]), min_size=1, max_size=4),
)
advance = st.tuples(st.just("advance"), st.floats(0, 2 * 3600, allow_nan=False))
check = st.tuples(st.just("check"))
operations = st.lists(st.one_of(record, limit, advance, check), max_size=60)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_totals_exact_and_no_repeat_within_cooldown(ops: list[tuple[object, ...]]) -> None:
    clock = FakeClock(1_800_000_000.0)
    ledger = QuotaLedger(clock=clock, default_period="hour")
    period_totals: dict[tuple[str, int], int] = defaultdict(int)
    lifetime: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    limits: dict[str, tuple[int, tuple[float, ...]]] = {}
    last_fired: dict[tuple[str, int, float], float] = {}

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
                if alert.state is not AlertState.FIRING:
                    continue
                lim, _ = limits[alert.config_id]
                # A firing notification is only ever sent for a threshold that usage is above.
                assert alert.quota.total_tokens * 100 >= lim * alert.threshold_percent - 1e-6
                key = (alert.config_id, hour(), alert.threshold_percent)
                previous = last_fired.get(key)
                assert previous is None or clock() - previous >= COOLDOWN
                last_fired[key] = clock()

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
