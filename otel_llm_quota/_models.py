"""The value objects handed to users: ``QuotaInfo`` snapshots and ``Alert`` notifications."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any

__all__ = ["Alert", "AlertReason", "AlertState", "Forecast", "QuotaInfo", "SpanRef"]


class AlertState(str, Enum):
    """Whether an alert notification opens (or repeats) an alert, or closes it."""

    FIRING = "firing"
    RESOLVED = "resolved"


class AlertReason(str, Enum):
    """Why the monitor sent a notification."""

    THRESHOLD_CROSSED = "threshold_crossed"
    """Usage crossed a threshold not yet notified in this period."""
    REPEAT = "repeat"
    """Usage is still above the threshold and the cooldown has passed since the last one."""
    PERIOD_RESET = "period_reset"
    """The quota period ended (or the usage was reset): usage starts again from zero."""
    LIMIT_CHANGED = "limit_changed"
    """The limit or the thresholds changed and usage is no longer above the alerted threshold."""
    FORECAST = "forecast"
    """At the current burn rate usage will pass the limit before the period resets (firing), or
    the pace fell back (resolved); see ``Alert.forecast``."""


@dataclass(frozen=True, slots=True)
class SpanRef:
    """The trace context of the span whose usage crossed a threshold (W3C ids as integers)."""

    trace_id: int
    span_id: int
    trace_flags: int = 1


@dataclass(frozen=True, slots=True)
class Forecast:
    """What a forecast notification is about: the pace and where it leads by the reset."""

    projected_percent: float
    """Usage at ``reset_at`` at the current burn rate, as a percentage of the limit."""
    burn_rate: float
    """Tokens per second (USD per second for a cost forecast, ``Alert.limit_kind`` ``"cost"``),
    by the estimator of the README's "Nested budgets and forecasts"."""
    time_to_exhaustion: float | None
    """Seconds until the limit is reached at that rate (None: never at this rate)."""
    reset_at: datetime | None
    """When the period resets."""


@dataclass(frozen=True, slots=True)
class QuotaInfo:
    """A consistent snapshot of one configuration's quota state.

    Token and request counts are those of the current quota period (they start from zero at each
    period boundary); the ``lifetime_*`` fields never go backwards. Datetimes are timezone-aware
    (UTC), or ``None`` where unknown.
    """

    config_id: str
    provider: str | None = None
    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    quota_limit: int | None = None
    alert_threshold_percent: float = 80.0
    last_alert_sent: datetime | None = None
    last_updated: datetime | None = None
    reset_at: datetime | None = None
    thresholds: tuple[float, ...] = (80.0,)
    period: str | None = "month"
    period_start: datetime | None = None
    timezone: str = "UTC"
    alert_state: AlertState | None = None
    """``FIRING`` while usage is above a notified threshold in this period, else ``None``. In the
    snapshot handed to a handler with a notification: that notification's state (``RESOLVED``
    when it tells that an alert ended)."""
    alert_threshold: float | None = None
    """The highest active threshold (or, in a notification, the threshold it is about)."""
    lifetime_input_tokens: int = 0
    lifetime_output_tokens: int = 0
    lifetime_other_tokens: int = 0
    lifetime_successful_requests: int = 0
    lifetime_failed_requests: int = 0
    last_sync: datetime | None = None
    """With a shared store: when this process last synchronised this config with it (the counts
    are the fleet's as of then plus this process's own since); ``None`` without a store or
    before the first successful sync."""
    cost_microusd: int = 0
    """The cost of this period's priced requests, in micro-USD (exact; see ``cost_usd``)."""
    unpriced_requests: int = 0
    """This period's requests whose model has no known price (their cost is not included)."""
    cost_limit_microusd: int | None = None
    """The cost limit in micro-USD, or ``None`` without one."""
    cost_thresholds: tuple[float, ...] = ()
    """The cost limit's alert thresholds (percent); empty without a cost limit."""
    cost_alert_threshold: float | None = None
    """The highest active threshold of the cost limit (``alert_threshold`` is the tokens')."""
    lifetime_cost_microusd: int = 0
    lifetime_unpriced_requests: int = 0
    parent: str | None = None
    """The config this one's usage also counts toward (nested budgets), or ``None``."""
    time_to_exhaustion: float | None = None
    """Seconds until the limit is reached at the current burn rate (``0`` once reached), or
    ``None`` without a limit or a rate (see "Nested budgets and forecasts" in the README)."""
    cost_time_to_exhaustion: float | None = None
    """The same for the cost limit (``0`` once reached; ``None`` without a cost limit or a
    rate), by the same estimator over the cost."""

    @property
    def other_tokens(self) -> int:
        """Tokens reported without an input/output split (e.g. ``tokens_used=`` or a total)."""
        return self.total_tokens - self.input_tokens - self.output_tokens

    @property
    def quota_remaining(self) -> int | None:
        """Tokens left in this period (never negative), or ``None`` without a limit."""
        if self.quota_limit is None:
            return None
        return max(self.quota_limit - self.total_tokens, 0)

    @property
    def usage_percent(self) -> float | None:
        """Usage as a percentage of the limit (may exceed 100), or ``None`` without a limit."""
        if self.quota_limit is None:
            return None
        return self.total_tokens * 100.0 / self.quota_limit

    @property
    def cost_usd(self) -> float:
        """This period's cost in USD (a float; ``cost_microusd`` is the exact integer)."""
        return self.cost_microusd / 1_000_000

    @property
    def cost_limit_usd(self) -> float | None:
        """The cost limit in USD, or ``None`` without one."""
        limit = self.cost_limit_microusd
        return None if limit is None else limit / 1_000_000

    @property
    def cost_remaining_usd(self) -> float | None:
        """USD left in this period (never negative), or ``None`` without a cost limit."""
        limit = self.cost_limit_microusd
        return None if limit is None else max(limit - self.cost_microusd, 0) / 1_000_000

    @property
    def cost_usage_percent(self) -> float | None:
        """Cost as a percentage of the cost limit (may exceed 100), or ``None`` without one."""
        limit = self.cost_limit_microusd
        return None if limit is None else self.cost_microusd * 100.0 / limit

    @property
    def alert_triggered(self) -> bool:
        """True while an alert is firing for this configuration."""
        return self.alert_state is AlertState.FIRING

    def to_dict(self) -> dict[str, Any]:
        """The status dictionary of ``LLMProviderManager.get_quota_status``.

        Datetimes become ISO-8601 strings, enums their values, tuples lists: the result is ready
        for ``json.dumps``.
        """
        out: dict[str, Any] = {}
        # The fields by name (not ``asdict``, which deep-copies every value: 10x slower, and
        # ``status --json`` of 10,000 configs makes 10,000 of these); no field holds a mutable
        # container or a dataclass, so nothing needs copying.
        for key in _QUOTA_INFO_FIELDS:
            value = getattr(self, key)
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, Enum):
                out[key] = value.value
            elif isinstance(value, tuple):
                out[key] = list(value)
            else:
                out[key] = value
        out["other_tokens"] = self.other_tokens
        out["quota_remaining"] = self.quota_remaining
        usage = self.usage_percent
        out["usage_percent"] = None if usage is None else round(usage, 4)
        out["alert_triggered"] = self.alert_triggered
        out["cost_usd"] = self.cost_usd
        out["cost_limit_usd"] = self.cost_limit_usd
        out["cost_remaining_usd"] = self.cost_remaining_usd
        cost_usage = self.cost_usage_percent
        out["cost_usage_percent"] = None if cost_usage is None else round(cost_usage, 4)
        return out


_QUOTA_INFO_FIELDS = tuple(f.name for f in fields(QuotaInfo))


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification from the monitor, for handlers that want more than ``(config_id, quota)``.

    A handler object with a ``handle_alert(alert)`` method receives these; plain callables receive
    ``(alert.config_id, alert.quota)`` as in the seed API (``quota.alert_state`` and
    ``quota.alert_threshold`` tell them the same).
    """

    config_id: str
    state: AlertState
    reason: AlertReason
    threshold_percent: float
    """The threshold this notification is about: the highest one it covers."""
    thresholds: tuple[float, ...]
    """Every threshold it covers: all active ones when firing, all ended ones when resolved."""
    quota: QuotaInfo
    """The quota as it was when the monitor decided to notify."""
    started_at: datetime
    """When this alert (config, period, threshold) first fired."""
    ended_at: datetime | None = None
    """When it was resolved; ``None`` while firing."""
    period_start: datetime | None = None
    """Start of the quota period the alert belongs to (alerts never span periods)."""
    repeat_at: datetime | None = None
    """For a firing notification: when the monitor notifies again if usage is still above the
    threshold (the cooldown's end, or the period's end, when the alert resolves instead).
    Receivers that expire alerts (Alertmanager's ``endsAt``) use it so that an alert whose
    sender died resolves by itself soon after, while one still firing never lapses."""
    span: SpanRef | None = field(default=None, compare=False)
    """The span whose recorded usage crossed the threshold, when usage came from a span."""
    limit_kind: str = "tokens"
    """Which limit fired: ``"tokens"`` (the token limit) or ``"cost"`` (the cost limit, whose
    thresholds are percentages of ``quota.cost_limit_microusd``)."""
    forecast: Forecast | None = None
    """Set on forecast notifications (firing with reason ``FORECAST``, and their resolution),
    which are about the pace, not a threshold crossed: ``threshold_percent`` is 100."""

    @property
    def provider(self) -> str | None:
        """The provider of the configuration, if known."""
        return self.quota.provider

    @property
    def is_firing(self) -> bool:
        """True for a firing (or repeated) notification, False for a resolved one."""
        return self.state is AlertState.FIRING

    @property
    def fingerprint(self) -> str:
        """A stable id for (config, threshold, period): the same across repeats and resolution."""
        return self.fingerprint_for(self.threshold_percent)

    def fingerprint_for(self, threshold_percent: float) -> str:
        """The stable id of this alert's config and period at another threshold it covers."""
        period = self.period_start.isoformat() if self.period_start else "-"
        key = f"{self.config_id}\x00{threshold_percent:g}\x00{period}"
        if self.limit_kind != "tokens":  # token alerts keep the fingerprints they always had
            key += f"\x00{self.limit_kind}"
        import hashlib  # here: `import otel_llm_quota` need not load it (OpenSSL's bindings)

        if self.forecast is not None:  # not the same alert as a 100 % threshold's
            key += "\x00forecast"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
