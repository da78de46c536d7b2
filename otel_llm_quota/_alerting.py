"""The alert state machine: which notifications a configuration's usage calls for, and when.

Per configuration and period, the *active* thresholds are those notified in this period that usage
is still at or above. The rules:

* crossing a threshold not yet active notifies at once (one notification for the highest
  threshold crossed, however many were jumped over);
* staying above re-notifies the highest active threshold only once ``cooldown`` has passed since
  its last notification;
* no threshold is notified twice within ``cooldown`` in one period: one that usage falls below (a
  raised limit, resolved) and crosses again (a lowered limit) within the cooldown is *held*, not
  shown as firing, until its cooldown ends; then it fires again if usage is still above it. So
  what handlers were told and what the status shows always agree;
* a threshold newly crossed below one already firing (thresholds changed) is notified on its
  own, about that threshold;
* a period boundary or a usage reset resolves every active threshold (reason ``period_reset``);
  usage falling below active thresholds (a raised limit, changed thresholds) resolves those
  (reason ``limit_changed``). Resolved notifications can be turned off.

Everything here runs in the monitor under the ledger's lock and does no I/O: it only decides. The
handlers are called later, outside the lock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from otel_llm_quota._forecast import (
    MAX_SAMPLES,
    ForecastSettings,
    add_sample,
    burn_rate,
    window_for,
)
from otel_llm_quota._ledger import QuotaLedger, _ConfigState, _dt, _utc
from otel_llm_quota._models import Alert, AlertReason, AlertState, Forecast, QuotaInfo

__all__ = ["EvaluationResult", "evaluate", "evaluate_forecast", "evaluate_ledger"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """What one monitor pass decided."""

    alerts: list[Alert]
    next_due: float
    """The earliest POSIX time a time-based change (repeat, period end) is due; ``inf`` if none."""
    examined: int
    """How many configurations needed a look under the lock (the rest were skipped lock-free)."""
    changes: list[tuple[_ConfigState, str, list[Alert], int]] = field(default_factory=list)
    """With ``encoder``: each config whose alert state changed, with its encoded state before
    the pass, the pass's notifications for it and the alert record version it was evaluated
    from (for the fleet's claims, see ``_claims``)."""


def _quota(state: _ConfigState, alert_state: AlertState, threshold: float, now: float) -> QuotaInfo:
    """The notification's snapshot: its state, and its threshold in the field of its kind."""
    snapshot = state.snapshot(now)
    if state.limit_kind == "cost":
        return replace(snapshot, alert_state=alert_state, cost_alert_threshold=threshold)
    if alert_state is AlertState.FIRING:
        return replace(snapshot, alert_threshold=threshold)
    return replace(snapshot, alert_state=alert_state, alert_threshold=threshold)


def _resolved(
    state: _ConfigState,
    thresholds: list[float],
    reason: AlertReason,
    now: float,
    period_start: float,
) -> Alert:
    active = state.active or {}
    top = max(thresholds)
    return Alert(
        config_id=state.config_id,
        state=AlertState.RESOLVED,
        reason=reason,
        threshold_percent=top,
        thresholds=tuple(sorted(thresholds)),
        quota=_quota(state, AlertState.RESOLVED, top, now),
        started_at=_utc(min(active.get(t, now) for t in thresholds)),
        ended_at=_utc(now),
        period_start=_dt(period_start),
        limit_kind=state.limit_kind,
    )


def evaluate(state: _ConfigState, now: float, cooldown: float, send_resolved: bool) -> list[Alert]:
    """Advance one configuration's alert state to ``now``; return the notifications to send.

    Must be called with the ledger's lock held.
    """
    alerts: list[Alert] = []
    if now >= state.period_end:
        state.roll(now)
    active = state.active
    if state.alert_generation != state.generation:
        if active and send_resolved:
            # The period ended (or usage was reset) while alerts were firing: they are over.
            alerts.append(
                _resolved(
                    state, list(active), AlertReason.PERIOD_RESET, now, state.alert_period_start
                )
            )
        active = state.active = None
        state.sent = state.held = None
        state.alert_generation = state.generation
        state.alert_period_start = state.period_start
    total = state.total
    crossed = (
        []
        if state.limit is None
        else [
            t
            for t, tokens in zip(state.thresholds, state.threshold_tokens, strict=True)
            if total >= tokens
        ]
    )
    # Within one window usage only grows: a total below an active (or held) threshold means
    # its limit or thresholds changed, or, with a shared store, that this replica's view of the
    # fleet's usage is behind the replica that notified. Only the first is a reason to resolve.
    levels_changed = state.alert_levels != state.threshold_tokens
    if active and levels_changed:
        gone = [t for t in active if t not in crossed]
        if gone:
            if send_resolved:
                alerts.append(
                    _resolved(state, gone, AlertReason.LIMIT_CHANGED, now, state.period_start)
                )
            for t in gone:
                del active[t]
    held = state.held
    if held and levels_changed:
        for t in [t for t in held if t not in crossed]:
            del held[t]  # fell below again before it could be notified: nothing to tell
    sent = state.sent
    new: list[float] = []
    for t in crossed:
        if active and t in active:
            continue
        if held and t in held:
            if now < held[t]:
                continue
            del held[t]
        else:
            last = sent.get(t) if sent else None
            if last is not None and now - last < cooldown:
                # Notified, resolved and crossed again within the cooldown: wait for the cooldown
                # to end before it fires (and is shown as firing) again.
                if held is None:
                    held = state.held = {}
                held[t] = last + cooldown
                continue
        new.append(t)
    if new:
        if active is None:
            active = state.active = {}
        if sent is None:
            sent = state.sent = {}
        for t in new:
            active[t] = now
        alerts.append(
            _firing(state, max(new), AlertReason.THRESHOLD_CROSSED, now, cooldown, span=True)
        )
    elif active:
        assert sent is not None  # every active threshold was notified
        top = max(active)
        if now - sent[top] >= cooldown:
            alerts.append(_firing(state, top, AlertReason.REPEAT, now, cooldown, span=False))
    if not active:
        state.active = None
    if not held:
        state.held = None
    state.trigger_span = None
    state.alert_levels = state.threshold_tokens
    state.arm()
    return alerts


def _firing(
    state: _ConfigState,
    threshold: float,
    reason: AlertReason,
    now: float,
    cooldown: float,
    *,
    span: bool,
) -> Alert:
    active = state.active or {}
    sent = state.sent
    assert sent is not None
    for t in active:
        if t <= threshold:  # the notification lists them all: it covers those at or below it
            sent[t] = now
    state.last_alert_sent = now
    return Alert(
        config_id=state.config_id,
        state=AlertState.FIRING,
        reason=reason,
        threshold_percent=threshold,
        thresholds=tuple(sorted(active)),
        quota=_quota(state, AlertState.FIRING, threshold, now),
        started_at=_utc(active[threshold]),
        period_start=_dt(state.period_start),
        repeat_at=_utc(min(now + cooldown, state.period_end)),
        span=state.trigger_span if span else None,
        limit_kind=state.limit_kind,
    )


def evaluate_forecast(
    state: _ConfigState, now: float, settings: ForecastSettings, send_resolved: bool
) -> list[Alert]:
    """Sample ``state`` and advance its forecast alert (call under the lock, after ``evaluate``).

    Fires (reason ``FORECAST``) once per period when the projection at the reset reaches 100 %
    of the limit with at least the minimum lead time left and enough data (a full window and
    ``min_samples`` samples); resolves when the projection falls below ``resolve_percent``, or
    at the period's end. A forecast that resolved does not fire again in the same period.

    ``state`` is a config (its token limit) or its ``_CostAlerts`` (its cost limit: the same
    fields over the cost in micro-USD), each with a forecast state of its own.
    """
    alerts: list[Alert] = []
    if now >= state.period_end:
        state.roll(now)
    window = window_for(state.period_start, state.period_end, settings.window_seconds)
    state.forecast_due = now + window / MAX_SAMPLES
    found = state.forecast
    if found is not None and found[0] != state.generation:
        if not found[2] and send_resolved:  # the period ended (or a reset) while on pace
            alerts.append(_forecast_alert(state, now, AlertReason.PERIOD_RESET, None, found))
        found = state.forecast = None
    samples = state.samples
    if samples is None or state.samples_generation != state.generation:
        # A new window: a new period starts with 0 tokens at its start (also for a monitor
        # started mid-period); after a reset within the period, the samples start now.
        if not samples or samples[-1][0] < state.period_start:
            samples = state.samples = [(state.period_start, 0)]
        else:
            samples = state.samples = [(now, state.total)]
        state.samples_generation = state.generation
    add_sample(samples, now, state.total, window)
    limit = state.limit
    if limit is None or not math.isfinite(state.period_end):
        return alerts
    if found is None and (
        now - samples[0][0] < window or len(samples) < settings.min_samples or state.total >= limit
    ):
        return alerts  # not enough data yet (or already exhausted: the thresholds speak)
    if found is not None and found[2]:
        return alerts  # resolved: once per period
    rate = burn_rate(samples, state.period_start, now, state.total, window) or 0.0
    projected = (state.total + rate * (state.period_end - now)) * 100.0 / limit
    if found is None:
        if projected < 100.0:
            return alerts
        if (limit - state.total) / rate < settings.lead_for(state.period_start, state.period_end):
            return alerts  # too late to act: the threshold alerts say it
        found = state.forecast = [state.generation, now, False, state.period_start]
        state.last_alert_sent = now
        alerts.append(_forecast_alert(state, now, AlertReason.FORECAST, (projected, rate), found))
    elif projected < settings.resolve_percent:
        found[2] = True
        if send_resolved:
            alerts.append(
                _forecast_alert(state, now, AlertReason.FORECAST, (projected, rate), found)
            )
    return alerts


def _forecast_alert(
    state: _ConfigState,
    now: float,
    reason: AlertReason,
    pace: tuple[float, float] | None,
    found: list[Any],
) -> Alert:
    firing = reason is AlertReason.FORECAST and not found[2]
    if pace is None:
        projected, rate = 0.0, 0.0
    else:
        projected, rate = pace
    limit = state.limit or 0
    left = limit - state.total
    exhaustion = 0.0 if left <= 0 else (left / rate if rate > 0 else None)
    quota = state.snapshot(now)
    kind = state.limit_kind
    if kind == "cost":  # micro-USD per second to USD per second; no cost threshold either
        rate /= 1_000_000
        quota = replace(quota, cost_alert_threshold=None)
    return Alert(
        config_id=state.config_id,
        state=AlertState.FIRING if firing else AlertState.RESOLVED,
        reason=reason,
        threshold_percent=100.0,
        thresholds=(100.0,),
        # The notification's state, but no threshold: a forecast is about the pace (a plain
        # callable handler tells it by ``alert_threshold`` None).
        quota=replace(
            quota,
            alert_state=AlertState.FIRING if firing else AlertState.RESOLVED,
            alert_threshold=None,
        ),
        started_at=_utc(float(found[1])),
        ended_at=None if firing else _utc(now),
        period_start=_dt(float(found[3])),
        repeat_at=_utc(state.period_end) if firing else None,
        limit_kind=kind,
        forecast=Forecast(
            projected_percent=projected,
            burn_rate=rate,
            time_to_exhaustion=exhaustion,
            reset_at=quota.reset_at,
        ),
    )


def _next_due(state: _ConfigState, cooldown: float) -> float:
    """When this config needs another look even if no usage arrives."""
    due = math.inf
    if state.active:
        assert state.sent is not None
        due = state.sent[max(state.active)] + cooldown
    if state.held:
        due = min(due, *state.held.values())
    if due != math.inf:
        due = min(due, state.period_end)
    return due


def evaluate_ledger(
    ledger: QuotaLedger,
    now: float,
    cooldown: float,
    send_resolved: bool,
    encoder: Callable[[_ConfigState], str] | None = None,
    forecast: ForecastSettings | None = None,
) -> EvaluationResult:
    """One monitor pass over every configuration.

    A config with no active alert and usage below its lowest threshold needs nothing: it is skipped
    without taking the lock (evaluation keeps every crossed threshold active, so this test is
    exact, and a racing ``record_usage`` that crosses a threshold wakes the monitor again). Each
    of the others is evaluated in its own short critical section, so the hot path never waits
    for a whole pass.

    One config's failure never affects the others: it is logged, that config's notifications of
    this pass are not sent, and it is looked at again at the next pass; the others' are.
    """
    alerts: list[Alert] = []
    changes: list[tuple[_ConfigState, str, list[Alert], int]] = []
    next_due = math.inf
    examined = 0
    lock = ledger.lock
    forecasting = forecast is not None and forecast.enabled
    for state in ledger.states():
        # Forecasts: every config with a limit, a few times per estimator window (and one
        # with a forecast alert of an older period, to resolve it).
        ca = state.cost_alerts
        if (
            state.active is None
            and (not state.threshold_tokens or state.total < state.threshold_tokens[0])
            and (
                ca is None
                or (
                    ca.active is None
                    and (not ca.threshold_tokens or state.cost_total < ca.threshold_tokens[0])
                )
            )
        ):
            if not forecasting or not (
                (state.threshold_tokens and now >= state.forecast_due)
                or state.forecast is not None
                or (ca is not None and (now >= ca.forecast_due or ca.forecast is not None))
            ):
                continue  # the idle config's skip costs one more test without forecasts
            idle = True  # only a forecast is due: its thresholds need nothing
        else:
            idle = False
        # Which forecasts are due: the token limit's, the cost limit's (its own state).
        look = forecasting and (
            (bool(state.threshold_tokens) and now >= state.forecast_due)
            or state.forecast is not None
        )
        cost_look = (
            forecasting and ca is not None and (now >= ca.forecast_due or ca.forecast is not None)
        )
        examined += 1
        try:
            with lock:
                before = None if encoder is None else encoder(state)
                version = state.alert_version
                found = [] if idle else evaluate(state, now, cooldown, send_resolved)
                if look and forecast is not None:
                    found += evaluate_forecast(state, now, forecast, send_resolved)
                due = _next_due(state, cooldown)
                ca = state.cost_alerts
                if ca is not None and not idle:
                    # The cost limit: the same machine over the cost (``_CostAlerts``).
                    found += evaluate(ca, now, cooldown, send_resolved)  # type: ignore[arg-type]
                    due = min(due, _next_due(ca, cooldown))  # type: ignore[arg-type]
                if cost_look and ca is not None and forecast is not None:
                    # Its forecast: the same estimator and rules over the cost.
                    found += evaluate_forecast(ca, now, forecast, send_resolved)  # type: ignore[arg-type]
                if encoder is not None and (found or encoder(state) != before):
                    assert before is not None
                    changes.append((state, before, found, version))
        except Exception:  # a bug or bad data in one config must not cost the others alerts
            _logger.exception(
                "otel-llm-quota: evaluating the alerts of config %r failed; its notifications "
                "of this pass are lost, the other configs are unaffected",
                state.config_id,
            )
            continue
        alerts.extend(found)
        if due < next_due:
            next_due = due
    return EvaluationResult(alerts=alerts, next_due=next_due, examined=examined, changes=changes)
