"""The content of alert notifications, built in one place for every handler.

The shapes follow Prometheus Alertmanager: an alert is ``labels`` (what it is: identity, used for
grouping and deduplication) plus ``annotations`` (what to tell people), ``startsAt``/``endsAt``
and a ``fingerprint``. A firing ``Alert`` becomes one entry per active threshold, a resolved one
one entry per threshold it ends, so every (config, threshold, period) is opened and closed by the
same labels and fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final

from otel_llm_quota._models import Alert, AlertState

__all__ = [
    "ALERT_NAME",
    "WEBHOOK_VERSION",
    "alert_details",
    "alert_entries",
    "alert_labels",
    "format_percent",
    "is_critical",
    "printable",
    "rfc3339",
    "severity",
    "summary",
    "webhook_payload",
]

ALERT_NAME: Final = "LLMQuotaThreshold"
"""The ``alertname`` label of every alert."""

WEBHOOK_VERSION: Final = "4"
"""The Alertmanager webhook payload version our webhook body mirrors."""

_ZERO_TIME: Final = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended" endsAt in webhooks


def rfc3339(when: datetime) -> str:
    """``2026-03-14T15:09:26.000Z``: UTC with milliseconds, as Alertmanager writes times."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    utc = when.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_percent(value: float) -> str:
    """``80`` for 80.0, ``92.5`` for 92.5: thresholds and labels read naturally."""
    return f"{value:g}"


def severity(threshold_percent: float) -> str:
    """``critical`` for a threshold at or above 100 %, else ``warning`` (a stable label)."""
    return "critical" if threshold_percent >= 100 else "warning"


def is_critical(alert: Alert) -> bool:
    """A firing alert about a threshold at or above 100 %, or with usage at or above the limit."""
    if not alert.is_firing or alert.forecast is not None:  # a forecast warns ahead
        return False
    usage = alert.quota.cost_usage_percent if _cost(alert) else alert.quota.usage_percent
    return alert.threshold_percent >= 100 or (usage is not None and usage >= 100)


def printable(text: str) -> str:
    """``text`` with each unprintable character written as its Python escape (``\\n``, ``\\x00``).

    Config ids that come from spans may hold newlines or NULs (the API refuses them): where an id
    goes into a log line or a mail header it must not start a forged line or break the header.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cost(alert: Alert) -> bool:
    return alert.limit_kind == "cost"


def _usd(amount: float) -> str:
    """``50.00``, ``1,234.50``; small amounts with their digits: ``0.0001``."""
    return f"{amount:,.2f}" if amount >= 1 or amount == 0 else f"{amount:.6g}"


def summary(alert: Alert) -> str:
    """One line for subjects, headers and log messages (the config id escaped: ``printable``).

    A cost alert says so: ``LLM quota team cost crossed 80% (81.2% of 50.00 USD used)``."""
    config_id = printable(alert.config_id)
    quota = alert.quota
    if _cost(alert):
        config_id += " cost"
        usage = quota.cost_usage_percent
        limit = quota.cost_limit_usd
        used = (
            "" if usage is None or limit is None else f" ({usage:.1f}% of {_usd(limit)} USD used)"
        )
    else:
        usage = quota.usage_percent
        used = "" if usage is None else f" ({usage:.1f}% used)"
    forecast = alert.forecast
    if forecast is not None:
        resets = "" if forecast.reset_at is None else f" on {rfc3339(forecast.reset_at)}"
        if alert.is_firing:
            return (
                f"LLM quota {config_id} on pace to use {forecast.projected_percent:.0f}% of "
                f"the budget before it resets{resets}{used}"
            )
        return (
            f"LLM quota {config_id} back on a pace within the budget "
            f"({forecast.projected_percent:.0f}% projected){used}: {alert.reason.value}"
        )
    if alert.is_firing:
        return f"LLM quota {config_id} crossed {format_percent(alert.threshold_percent)}%{used}"
    levels = ", ".join(format_percent(t) + "%" for t in alert.thresholds)
    return f"LLM quota {config_id} back below {levels}{used}: {alert.reason.value}"


def alert_details(alert: Alert) -> dict[str, Any]:
    """Every fact of the notification as JSON-ready values (``None`` where unknown)."""
    quota = alert.quota
    usage = quota.usage_percent
    span = alert.span
    return {
        "config_id": alert.config_id,
        "provider": quota.provider,
        "state": alert.state.value,
        "reason": alert.reason.value,
        "threshold_percent": alert.threshold_percent,
        "thresholds": list(alert.thresholds),
        "usage_tokens": quota.total_tokens,
        "limit_tokens": quota.quota_limit,
        "remaining_tokens": quota.quota_remaining,
        "utilization": None if usage is None else usage / 100.0,
        "period": quota.period,
        "period_start": rfc3339(alert.period_start) if alert.period_start else None,
        "period_end": rfc3339(quota.reset_at) if quota.reset_at else None,
        "started_at": rfc3339(alert.started_at),
        "ended_at": rfc3339(alert.ended_at) if alert.ended_at else None,
        "fingerprint": alert.fingerprint,
        "trace_id": f"{span.trace_id:032x}" if span else None,
        "span_id": f"{span.span_id:016x}" if span else None,
        "limit_kind": alert.limit_kind,
        "cost_usd": quota.cost_usd,
        "cost_microusd": quota.cost_microusd,
        "cost_limit_usd": quota.cost_limit_usd,
        "cost_remaining_usd": quota.cost_remaining_usd,
        "cost_utilization": (
            None if quota.cost_usage_percent is None else quota.cost_usage_percent / 100.0
        ),
        "unpriced_requests": quota.unpriced_requests,
        **_forecast_details(alert),
    }


def _forecast_details(alert: Alert) -> dict[str, Any]:
    forecast = alert.forecast
    if forecast is None:
        return {}
    return {
        "kind": "forecast",
        "projected_percent": round(forecast.projected_percent, 2),
        # A cost forecast's pace is in USD (``Forecast.burn_rate``).
        ("burn_rate_usd_per_second" if _cost(alert) else "burn_rate_tokens_per_second"): (
            forecast.burn_rate
        ),
        "time_to_exhaustion_seconds": forecast.time_to_exhaustion,
    }


def alert_labels(
    alert: Alert, threshold_percent: float, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The identity of one (config, threshold) alert. ``extra`` labels never override ours."""
    labels = dict(extra or {})
    labels.update(
        alertname=ALERT_NAME,
        config_id=alert.config_id,
        threshold=format_percent(threshold_percent),
        severity=severity(threshold_percent),
    )
    if alert.forecast is not None:  # not the same alert as a 100 % threshold's
        labels["kind"] = "forecast"
        labels["severity"] = "warning"
    if alert.provider is not None:
        labels["provider"] = alert.provider
    if _cost(alert):  # a cost alert is another alert than the token one at the same threshold
        labels["limit_kind"] = "cost"
    return labels


def _annotations(alert: Alert, threshold_percent: float) -> dict[str, str]:
    quota = alert.quota
    if _cost(alert):
        return _cost_annotations(alert, threshold_percent)
    usage = quota.usage_percent
    limit = "none" if quota.quota_limit is None else str(quota.quota_limit)
    out = {
        "summary": summary(alert),
        "description": (
            f"{printable(alert.config_id)}: {quota.total_tokens} of {limit} tokens used in this "
            "period; "
            f"threshold {format_percent(threshold_percent)}%."
        ),
        "usage_tokens": str(quota.total_tokens),
        "limit_tokens": limit,
        "utilization": "" if usage is None else f"{usage / 100.0:.4f}",
        "reason": alert.reason.value,
    }
    if quota.reset_at is not None:
        out["period_end"] = rfc3339(quota.reset_at)
    if alert.span is not None:
        out["trace_id"] = f"{alert.span.trace_id:032x}"
    return out


def _cost_annotations(alert: Alert, threshold_percent: float) -> dict[str, str]:
    quota = alert.quota
    usage = quota.cost_usage_percent
    limit = quota.cost_limit_usd
    shown = "none" if limit is None else _usd(limit)
    unpriced = f" ({quota.unpriced_requests} requests unpriced)" if quota.unpriced_requests else ""
    out = {
        "summary": summary(alert),
        "description": (
            f"{printable(alert.config_id)}: {quota.cost_usd:.6f} of {shown} USD spent in this "
            f"period{unpriced}; cost threshold {format_percent(threshold_percent)}%."
        ),
        "cost_usd": f"{quota.cost_usd:.6f}",
        "cost_limit_usd": "none" if limit is None else f"{limit:.6f}",
        "utilization": "" if usage is None else f"{usage / 100.0:.4f}",
        "reason": alert.reason.value,
    }
    if quota.reset_at is not None:
        out["period_end"] = rfc3339(quota.reset_at)
    if alert.span is not None:
        out["trace_id"] = f"{alert.span.trace_id:032x}"
    return out


def alert_entries(
    alert: Alert,
    *,
    extra_labels: Mapping[str, str] | None = None,
    generator_url: str | None = None,
    firing_ends_at: datetime | None = None,
    webhook_style: bool = False,
) -> list[dict[str, Any]]:
    """Alertmanager alerts for ``alert``: one per threshold it covers.

    ``firing_ends_at`` is the ``endsAt`` of firing entries (``None``: left out, or Alertmanager's
    zero time with ``webhook_style``); resolved entries end at ``alert.ended_at``.
    ``webhook_style`` adds ``status`` and ``fingerprint`` as Alertmanager's webhook does.
    """
    entries: list[dict[str, Any]] = []
    firing = alert.state is AlertState.FIRING
    for threshold in sorted(alert.thresholds, reverse=True):
        entry: dict[str, Any] = {
            "labels": alert_labels(alert, threshold, extra_labels),
            "annotations": _annotations(alert, threshold),
            "startsAt": rfc3339(alert.started_at),
        }
        if firing:
            if firing_ends_at is not None:
                entry["endsAt"] = rfc3339(firing_ends_at)
            elif webhook_style:
                entry["endsAt"] = _ZERO_TIME
        else:
            entry["endsAt"] = rfc3339(alert.ended_at or alert.started_at)
        if generator_url:
            entry["generatorURL"] = generator_url
        if webhook_style:
            entry["status"] = alert.state.value
            entry["fingerprint"] = alert.fingerprint_for(threshold)
        entries.append(entry)
    return entries


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def webhook_payload(
    alert: Alert,
    *,
    receiver: str,
    extra_labels: Mapping[str, str] | None = None,
    external_url: str = "",
) -> dict[str, Any]:
    """The webhook body, modelled on Alertmanager's webhook payload (version 4).

    Adds ``details`` (``alert_details``): the facts as numbers rather than label strings.
    """
    entries = alert_entries(alert, extra_labels=extra_labels, webhook_style=True)
    group_labels = {"alertname": ALERT_NAME, "config_id": alert.config_id}
    return {
        "version": WEBHOOK_VERSION,
        "receiver": receiver,
        "status": alert.state.value,
        "groupKey": f'{{}}:{{alertname="{ALERT_NAME}", config_id="{alert.config_id}"}}',
        "groupLabels": group_labels,
        "commonLabels": _common([e["labels"] for e in entries]),
        "commonAnnotations": _common([e["annotations"] for e in entries]),
        "externalURL": external_url,
        "truncatedAlerts": 0,
        "alerts": entries,
        "details": alert_details(alert),
    }
