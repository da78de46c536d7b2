"""The ledger: counting, validation that leaves state unchanged, lazy period roll-over, resets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from otel_llm_quota import QuotaLedger, SpanRef
from otel_llm_quota.testing import FakeClock


@pytest.fixture
def ledger(clock: FakeClock) -> QuotaLedger:
    return QuotaLedger(clock=clock)


def test_usage_creates_and_counts(ledger: QuotaLedger, clock: FakeClock) -> None:
    ledger.record_usage("c", provider="openai", input_tokens=10, output_tokens=5)
    ledger.record_usage("c", input_tokens=1, output_tokens=2, success=False)
    ledger.record_usage("c", total_tokens=100)
    info = ledger.get("c")
    assert info is not None
    assert (info.total_requests, info.successful_requests, info.failed_requests) == (3, 2, 1)
    assert (info.input_tokens, info.output_tokens, info.other_tokens) == (11, 7, 100)
    assert info.total_tokens == 118
    assert info.provider == "openai"
    assert info.quota_limit is None
    assert info.quota_remaining is None
    assert info.usage_percent is None
    assert info.last_updated == clock.datetime
    assert info.period == "month"
    assert info.reset_at == datetime(2026, 4, 1, tzinfo=timezone.utc)


def test_total_only_counts_the_excess_over_input_and_output(ledger: QuotaLedger) -> None:
    ledger.record_usage("c", input_tokens=10, output_tokens=5, total_tokens=20)
    ledger.record_usage("c", input_tokens=10, output_tokens=5, total_tokens=12)  # smaller: ignored
    info = ledger.get("c")
    assert info is not None
    assert (info.input_tokens, info.output_tokens, info.other_tokens) == (20, 10, 5)
    assert info.total_tokens == 35


def test_first_provider_sticks(ledger: QuotaLedger) -> None:
    ledger.record_usage("c", provider="openai", input_tokens=1)
    ledger.record_usage("c", provider="azure", input_tokens=1)
    info = ledger.get("c")
    assert info is not None
    assert info.provider == "openai"


def test_unknown_config_is_none(ledger: QuotaLedger) -> None:
    assert ledger.get("nope") is None
    assert "nope" not in ledger


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"input_tokens": -1}, ValueError, "input_tokens"),
        ({"output_tokens": -5}, ValueError, "output_tokens"),
        ({"total_tokens": -1}, ValueError, "total_tokens"),
        ({"input_tokens": 1.5}, TypeError, "input_tokens"),
        ({"input_tokens": 2.0}, TypeError, "input_tokens"),
        ({"output_tokens": True}, TypeError, "output_tokens"),
        ({"input_tokens": "12"}, TypeError, "input_tokens"),
        ({"input_tokens": None}, TypeError, "input_tokens"),
        ({"provider": ""}, ValueError, "provider"),
        ({"provider": 3}, TypeError, "provider"),
    ],
)
def test_bad_usage_raises_and_changes_nothing(
    ledger: QuotaLedger, kwargs: dict[str, object], error: type[Exception], names: str
) -> None:
    ledger.record_usage("c", input_tokens=7)
    before = ledger.get("c")
    with pytest.raises(error, match=names):
        ledger.record_usage("c", **kwargs)  # type: ignore[arg-type]
    assert ledger.get("c") == before
    with pytest.raises(error, match=names):
        ledger.record_usage("new", **kwargs)  # type: ignore[arg-type]
    assert "new" not in ledger


@pytest.mark.parametrize(
    ("config_id", "error"),
    [
        ("", ValueError),
        ("   ", ValueError),
        (None, TypeError),
        (42, TypeError),
        ("x" * 300, ValueError),
    ],
)
def test_bad_config_ids(ledger: QuotaLedger, config_id: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="config_id"):
        ledger.record_usage(config_id, input_tokens=1)  # type: ignore[arg-type]
    with pytest.raises(error, match="config_id"):
        ledger.set_limit(config_id, 10)  # type: ignore[arg-type]
    assert len(ledger) == 0


def test_index_types_are_accepted(ledger: QuotaLedger) -> None:
    class Tokens:
        def __index__(self) -> int:
            return 9

    ledger.record_usage("c", input_tokens=Tokens())  # type: ignore[arg-type]
    info = ledger.get("c")
    assert info is not None
    assert info.input_tokens == 9


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"quota_limit": 0}, ValueError, "quota_limit"),
        ({"quota_limit": -10}, ValueError, "quota_limit"),
        ({"quota_limit": 10.5}, TypeError, "quota_limit"),
        ({"quota_limit": "100"}, TypeError, "quota_limit"),
        ({"quota_limit": 100, "thresholds": (0,)}, ValueError, "threshold"),
        ({"quota_limit": 100, "thresholds": (101,)}, ValueError, "threshold"),
        ({"quota_limit": 100, "thresholds": (-5,)}, ValueError, "threshold"),
        ({"quota_limit": 100, "thresholds": (float("nan"),)}, ValueError, "threshold"),
        ({"quota_limit": 100, "thresholds": ()}, ValueError, "threshold"),
        ({"quota_limit": 100, "thresholds": "80"}, TypeError, "threshold"),
        ({"quota_limit": 100, "thresholds": (True,)}, TypeError, "threshold"),
        ({"quota_limit": 100, "period": "fortnight"}, ValueError, "period"),
        ({"quota_limit": 100, "timezone": "Nowhere/City"}, ValueError, "timezone"),
        ({"quota_limit": 100, "provider": ""}, ValueError, "provider"),
    ],
)
def test_bad_limits_raise_and_change_nothing(
    ledger: QuotaLedger, kwargs: dict[str, object], error: type[Exception], name: str
) -> None:
    ledger.set_limit("c", 1000, thresholds=(50,), period="day")
    before = ledger.get("c")
    with pytest.raises(error, match=name):
        ledger.set_limit("c", **kwargs)  # type: ignore[arg-type]
    assert ledger.get("c") == before


def test_thresholds_are_sorted_and_deduplicated(ledger: QuotaLedger) -> None:
    info = ledger.set_limit("c", 1000, thresholds=(95, 50, 80, 50.0))
    assert info.thresholds == (50.0, 80.0, 95.0)
    assert info.alert_threshold_percent == 50.0


def test_period_rolls_over_lazily_and_lifetime_keeps_counting(
    ledger: QuotaLedger, clock: FakeClock
) -> None:
    ledger.set_limit("c", 1000, period="day")
    ledger.record_usage("c", input_tokens=100, output_tokens=50)
    ledger.record_usage("c", input_tokens=1, success=False)
    clock.set(datetime(2026, 3, 15, 0, 0, tzinfo=timezone.utc))  # next midnight
    info = ledger.get("c")
    assert info is not None
    assert (info.total_tokens, info.total_requests) == (0, 0)
    assert info.period_start == datetime(2026, 3, 15, tzinfo=timezone.utc)
    assert info.reset_at == datetime(2026, 3, 16, tzinfo=timezone.utc)
    assert (info.lifetime_input_tokens, info.lifetime_output_tokens) == (101, 50)
    assert (info.lifetime_successful_requests, info.lifetime_failed_requests) == (1, 1)
    ledger.record_usage("c", output_tokens=5)
    info = ledger.get("c")
    assert info is not None
    assert info.total_tokens == 5
    assert info.lifetime_output_tokens == 55


def test_skipping_several_periods_lands_in_the_current_one(
    ledger: QuotaLedger, clock: FakeClock
) -> None:
    ledger.set_limit("c", 1000, period="hour")
    ledger.record_usage("c", input_tokens=10)
    clock.advance(timedelta(hours=5, minutes=1))
    ledger.record_usage("c", input_tokens=3)
    info = ledger.get("c")
    assert info is not None
    assert info.total_tokens == 3
    assert info.period_start is not None
    assert info.reset_at is not None
    assert info.period_start <= clock.datetime < info.reset_at
    assert info.reset_at - info.period_start == timedelta(hours=1)


def test_period_none_never_resets(ledger: QuotaLedger, clock: FakeClock) -> None:
    ledger.set_limit("c", 1000, period=None)
    ledger.record_usage("c", input_tokens=10)
    clock.advance(timedelta(days=400))
    info = ledger.get("c")
    assert info is not None
    assert info.total_tokens == 10
    assert info.reset_at is None


def test_changing_the_period_keeps_counts(ledger: QuotaLedger, clock: FakeClock) -> None:
    ledger.set_limit("c", 1000, period="month")
    ledger.record_usage("c", input_tokens=10)
    info = ledger.set_limit("c", 1000, period="day", timezone="Europe/Paris")
    assert info.total_tokens == 10
    assert info.period == "day"
    assert info.timezone == "Europe/Paris"
    assert info.reset_at == datetime(2026, 3, 14, 23, 0, tzinfo=timezone.utc)  # Paris midnight


def test_reset_zeroes_the_period_but_not_lifetime(ledger: QuotaLedger) -> None:
    ledger.set_limit("a", 1000)
    ledger.record_usage("a", input_tokens=10)
    ledger.record_usage("b", input_tokens=20)
    assert ledger.reset("a") == 1
    a, b = ledger.get("a"), ledger.get("b")
    assert a is not None
    assert b is not None
    assert (a.total_tokens, a.lifetime_input_tokens, a.quota_limit) == (0, 10, 1000)
    assert b.total_tokens == 20
    assert ledger.reset() == 2
    assert ledger.reset("unknown") == 0
    assert [i.total_tokens for i in ledger.get_all()] == [0, 0]


def test_wakeup_is_called_once_per_crossing(ledger: QuotaLedger) -> None:
    calls: list[int] = []
    ledger.set_wakeup(lambda: calls.append(1))
    ledger.set_limit("c", 100, thresholds=(50, 90))
    ledger.record_usage("c", input_tokens=49)
    assert calls == []
    ledger.record_usage("c", input_tokens=1, span=SpanRef(1, 2))
    ledger.record_usage("c", input_tokens=10)  # still pending evaluation: no second wake-up
    assert calls == [1]


def test_a_failing_wakeup_never_reaches_the_recorder(ledger: QuotaLedger) -> None:
    def boom() -> None:
        raise RuntimeError("loop closed")

    ledger.set_wakeup(boom)
    ledger.set_limit("c", 10)
    ledger.record_usage("c", input_tokens=100)
    info = ledger.get("c")
    assert info is not None
    assert info.total_tokens == 100


def test_status_dict_is_json_ready(ledger: QuotaLedger) -> None:
    import json

    ledger.set_limit("c", 1000, thresholds=(50, 80))
    ledger.record_usage("c", provider="openai", input_tokens=300, output_tokens=100)
    info = ledger.get("c")
    assert info is not None
    status = info.to_dict()
    assert json.loads(json.dumps(status)) == status
    for key in (
        "config_id",
        "provider",
        "total_requests",
        "successful_requests",
        "failed_requests",
        "total_tokens",
        "quota_limit",
        "quota_remaining",
        "usage_percent",
        "alert_threshold_percent",
        "alert_triggered",
        "reset_at",
        "last_updated",
        "last_alert_sent",
        "input_tokens",
        "output_tokens",
        "period",
        "thresholds",
    ):
        assert key in status
    assert status["usage_percent"] == 40.0
    assert status["quota_remaining"] == 600
    assert status["reset_at"] == "2026-04-01T00:00:00+00:00"
    assert status["thresholds"] == [50.0, 80.0]
    assert status["last_alert_sent"] is None
    assert status["alert_triggered"] is False
