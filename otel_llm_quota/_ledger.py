"""The quota ledger: thread-safe, synchronous, in-memory per-configuration counters.

Everything here is plain Python with one ``threading.Lock``; there is no asyncio and no I/O, so
``record_usage`` can be called from any thread, including the thread that ends an LLM span. The lock
is held only around the arithmetic. The async ``LLMProviderManager`` is a thin layer over this.

Periods roll over lazily: the first write or read after a period boundary folds the period's
counts into the lifetime totals and starts the new period from zero. Alert state lives beside the
counters (see ``_alerting``) and is only ever changed by the monitor, under the same lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone, tzinfo
from typing import Any, Final, TypeVar

from opentelemetry.trace import SpanContext

from otel_llm_quota._forecast import burn_rate, window_for
from otel_llm_quota._fork import reinit_after_fork
from otel_llm_quota._models import AlertState, QuotaInfo, SpanRef
from otel_llm_quota._periods import Period, period_bounds, resolve_timezone, validate_period
from otel_llm_quota._pricing import PriceOverride, Pricer
from otel_llm_quota._validation import (
    MAX_PERIOD_TOKENS,
    MAX_TOKENS,
    check_config_id,
    check_count,
    check_limit,
    check_optional_str,
    check_positive_seconds,
    check_thresholds,
)
from otel_llm_quota.stores._base import (
    ZERO,
    AlertRecord,
    ConfigRecord,
    ConfigSync,
    Counts,
    Delta,
    Window,
    add_counts,
    sub_counts,
)

__all__ = ["DEFAULT_MAX_CONFIGS", "OVERFLOW_CONFIG_ID", "Clock", "MetricRow", "QuotaLedger"]

_logger = logging.getLogger(__name__)

Clock = Callable[[], float]
"""A zero-argument callable returning the current POSIX time in seconds (``time.time``)."""

MetricRow = tuple[
    str, str | None, int, int | None, float, int, int, int, int, int, int, int, int | None, int
]
"""One config in ``QuotaLedger.metric_rows``: ``(config_id, provider, period_tokens, limit,
period_end, lifetime_input_tokens, lifetime_output_tokens, lifetime_other_tokens,
lifetime_successful_requests, lifetime_failed_requests, lifetime_cost_microusd,
period_cost_microusd, cost_limit_microusd, lifetime_unpriced_requests)``; ``period_end`` is POSIX
seconds (``inf`` for a quota that never resets). Lifetime values are this process's own, period
ones the fleet's."""

_INF: Final = math.inf
_SATURATED: Final = MAX_PERIOD_TOKENS + 1
"""``wake_at`` when no threshold is due: the hot path's one comparison also catches a total that
reaches the cap, so saturating costs nothing per call."""
_T = TypeVar("_T", bound=tuple[Any, ...])
DEFAULT_THRESHOLD_PERCENT: Final = 80.0
DEFAULT_PERIOD: Final[Period] = "month"
DEFAULT_MAX_CONFIGS: Final = 2_000
"""Configurations without a limit (the ones usage creates) a ledger holds by default: the
OpenTelemetry SDK's default cardinality limit per instrument, so that by default every config
has series of its own, and a flood of new ids keeps a metrics collection short (see
benchmarks/README.md)."""
OVERFLOW_CONFIG_ID: Final = "_overflow"
"""The reserved config that takes the usage of new config ids once ``max_configs`` configs
without a limit exist (like the SDK's ``otel.metric.overflow`` series): nothing is lost. It is
exempt from the cap and carries no provider."""


class _ConfigState:
    """Counters and alert state of one configuration. Only touched under the ledger's lock."""

    __slots__ = (
        "active",
        "alert_generation",
        "alert_levels",
        "alert_pending",
        "alert_period_start",
        "alert_version",
        "ancestors",
        "closed_cost",
        "closed_failures",
        "closed_input",
        "closed_other",
        "closed_output",
        "closed_successes",
        "closed_unpriced",
        "closing",
        "config_id",
        "configured",
        "cost",
        "cost_alerts",
        "dirty",
        "epoch",
        "failures",
        "flushed",
        "forecast",
        "forecast_due",
        "generation",
        "held",
        "input",
        "last_alert_sent",
        "last_updated",
        "life_flushed",
        "limit",
        "other",
        "others",
        "others_life",
        "output",
        "parent",
        "period",
        "period_end",
        "period_start",
        "provider",
        "record_dirty",
        "samples",
        "samples_generation",
        "sent",
        "stored",
        "successes",
        "synced_at",
        "threshold_tokens",
        "thresholds",
        "total",
        "trigger_span",
        "tz",
        "unpriced",
        "wake_at",
    )

    limit_kind = "tokens"
    """Which limit the alert fields of this object belong to (``_CostAlerts``: "cost")."""

    def __init__(
        self,
        config_id: str,
        provider: str | None,
        period: Period | None,
        tz: tzinfo,
        now: float,
    ) -> None:
        self.config_id = config_id
        self.provider = provider
        self.limit: int | None = None
        # Set by ``set_limit`` or a store record: exempt from ``max_configs`` and idle expiry
        # (a config may have settings but no token limit: a parent with only other limits).
        self.configured = False
        # Nested scopes: the parent's id, and the resolved chain of ancestor states (nearest
        # first, each once; None without ancestors), rebuilt by ``QuotaLedger._relink``
        # whenever a parent link or the set of configs changes, so the hot path walks a tuple.
        self.parent: str | None = None
        self.ancestors: tuple[_ConfigState, ...] | None = None
        # Usage samples ``[(time, total), ...]`` of the current window, kept by the monitor for
        # the burn-rate estimator (``_forecast``); never touched by the hot path.
        self.samples: list[tuple[float, int]] | None = None
        self.samples_generation = -1
        # Forecast alert state (``_alerting.evaluate_forecast``): [generation, first fired at,
        # resolved] once a forecast fired in the current period, and when to look again.
        self.forecast: list[Any] | None = None
        self.forecast_due = -_INF
        self.thresholds: tuple[float, ...] = (DEFAULT_THRESHOLD_PERCENT,)
        self.threshold_tokens: tuple[int, ...] = ()
        self.period = period
        self.tz = tz
        self.period_start, self.period_end = period_bounds(period, now, tz)
        self.generation = 0
        self.successes = 0
        self.failures = 0
        self.input = 0
        self.output = 0
        self.other = 0
        self.total = 0
        self.closed_successes = 0
        self.closed_failures = 0
        self.closed_input = 0
        self.closed_output = 0
        self.closed_other = 0
        # Cost (see _pricing): micro-USD of the priced requests and the count of unpriced ones,
        # this process's own in the period; ``cost_total`` adds the fleet's (``others[5]``).
        self.cost = 0
        self.unpriced = 0
        self.closed_cost = 0
        self.closed_unpriced = 0
        # The cost limit's alert state (None: no cost limit), see _CostAlerts.
        self.cost_alerts: _CostAlerts | None = None
        self.last_updated: float | None = None
        self.wake_at: float = _SATURATED
        self.trigger_span: SpanRef | None = None
        # Alert state, owned by _alerting: thresholds firing now -> first notification time, the
        # generation (period) they belong to, and the last notification time per threshold.
        self.active: dict[float, float] | None = None
        self.alert_generation = 0
        # The threshold token levels the alert state was last evaluated against (a change means
        # the limit or thresholds changed: the only way an active threshold can be "gone").
        self.alert_levels: tuple[int, ...] | None = None
        self.alert_period_start = self.period_start
        self.sent: dict[float, float] | None = None
        # Thresholds crossed again within their cooldown -> when they may fire again.
        self.held: dict[float, float] | None = None
        self.last_alert_sent: float | None = None
        # Shared-store bookkeeping (see QuotaLedger.attach_store). The counters above are this
        # process's own; ``others`` is what the rest of the fleet counted in the current window
        # (fleet total minus what this process flushed), so ``total`` is the fleet-wide view.
        # ``dirty`` is True while the config waits in the ledger's flush list, and always without
        # a store (so the hot path's one test never queues anything); ``flushed`` is None then.
        self.dirty = True
        self.epoch = 0
        self.others: Counts = ZERO
        self.flushed: Counts | None = None
        self.others_life: Counts = ZERO
        self.life_flushed: Counts = ZERO
        self.closing: dict[Window, Counts] | None = None
        self.record_dirty = False
        self.stored = False
        self.synced_at: float | None = None
        self.alert_version = 0
        # Notifications this fleet claimed and has not confirmed delivered (see _claims).
        self.alert_pending: list[dict[str, Any]] | None = None

    @property
    def cost_total(self) -> int:
        """The period's cost in micro-USD, fleet-wide: this process's plus the others' synced."""
        return self.cost + self.others[5]

    def own(self) -> Counts:
        """This process's counts in the current window."""
        return (
            self.successes,
            self.failures,
            self.input,
            self.output,
            self.other,
            self.cost,
            self.unpriced,
        )

    def window(self) -> Window:
        """The current period window, as stores name it."""
        if self.period_end == _INF:
            return Window(0, self.epoch, None)
        length = max(round(self.period_end - self.period_start), 1)
        return Window(round(self.period_start), self.epoch, 2 * length + 3600)

    def roll(self, now: float) -> None:
        """Start a new period containing ``now``: fold the counts into the lifetime totals."""
        old = self.window()
        self.period_start, self.period_end = period_bounds(self.period, now, self.tz)
        self.restart(old)

    def restart(self, old: Window | None = None) -> None:
        """Zero the period counters (keeping lifetime totals) and re-arm the thresholds.

        Lifetime totals saturate at ``MAX_PERIOD_TOKENS`` like the period's, so closed plus
        current always fits an int64. With a store, what this process counted in the old window
        and has not flushed yet is kept aside (``closing``) for the flusher: it still belongs to
        the old window.
        """
        flushed = self.flushed
        if flushed is not None:  # tracked by a store
            unflushed = sub_counts(self.own(), flushed)
            if unflushed != ZERO:
                if old is None:
                    old = self.window()
                closing = self.closing
                if closing is None:
                    closing = self.closing = {}
                closing[old] = add_counts(closing.get(old, ZERO), unflushed)
            self.flushed = ZERO
            self.others = ZERO
        cap = MAX_PERIOD_TOKENS
        self.closed_successes = min(self.closed_successes + self.successes, cap)
        self.closed_failures = min(self.closed_failures + self.failures, cap)
        self.closed_input = min(self.closed_input + self.input, cap)
        self.closed_output = min(self.closed_output + self.output, cap)
        self.closed_other = min(self.closed_other + self.other, cap)
        self.closed_cost += self.cost
        self.closed_unpriced += self.unpriced
        self.successes = self.failures = self.input = self.output = self.other = self.total = 0
        self.cost = self.unpriced = 0
        self.generation += 1
        self.trigger_span = None
        self.arm()
        cost_alerts = self.cost_alerts
        if cost_alerts is not None:
            cost_alerts.trigger_span = None
            cost_alerts.arm()

    def saturate(self) -> None:
        """Cap the period's token counters at ``MAX_PERIOD_TOKENS`` (int64-safe for every store
        and for OTLP); usage beyond the cap is not counted. Only this config is affected."""
        cap = MAX_PERIOD_TOKENS
        self.total = cap
        self.input = min(self.input, cap)
        self.output = min(self.output, cap)
        self.other = min(self.other, cap)

    def arm(self) -> None:
        """Set ``wake_at``: the usage at which the monitor must look at this config again."""
        if not self.threshold_tokens:  # no limit yet: nothing to cross
            self.wake_at = _SATURATED
            return
        current = self.alert_generation == self.generation
        active = self.active if current else None
        held = self.held if current else None
        for threshold, tokens in zip(self.thresholds, self.threshold_tokens, strict=True):
            if (active is None or threshold not in active) and (
                held is None or threshold not in held
            ):
                self.wake_at = tokens
                return
        self.wake_at = _SATURATED

    def exhaustion(self, now: float, window: float | None = None) -> float | None:
        """Seconds until the limit is reached at the current burn rate (see ``_forecast``); 0
        when reached, None without a limit or without usage to estimate a rate from."""
        limit = self.limit
        if limit is None:
            return None
        if self.total >= limit:
            return 0.0
        span = window_for(self.period_start, self.period_end, window)
        samples = self.samples if self.samples_generation == self.generation else None
        rate = burn_rate(samples, self.period_start, now, self.total, span)
        if rate is None or rate <= 0.0:
            return None
        return (limit - self.total) / rate

    def snapshot(self, now: float | None = None, window: float | None = None) -> QuotaInfo:
        """A consistent QuotaInfo of this state (call under the lock): fleet-wide counts with a
        store (what was synced plus this process's unflushed usage), this process's without.

        ``time_to_exhaustion`` is estimated at ``now`` (None when ``now`` is not given), over
        a burn-rate window of ``window`` seconds (default: a tenth of the period)."""
        active = self.active
        o = self.others
        lo = self.others_life
        successes = self.successes + o[0]
        failures = self.failures + o[1]
        ca = self.cost_alerts
        cost_active = None if ca is None else ca.active
        return QuotaInfo(
            config_id=self.config_id,
            provider=self.provider,
            total_requests=successes + failures,
            successful_requests=successes,
            failed_requests=failures,
            total_tokens=self.total,
            input_tokens=self.input + o[2],
            output_tokens=self.output + o[3],
            quota_limit=self.limit,
            alert_threshold_percent=self.thresholds[0],
            last_alert_sent=_dt(self.last_alert_sent),
            last_updated=_dt(self.last_updated),
            reset_at=_dt(self.period_end),
            thresholds=self.thresholds,
            period=self.period,
            period_start=_dt(self.period_start),
            timezone=_tz_name(self.tz),
            alert_state=AlertState.FIRING if active or cost_active else None,
            alert_threshold=max(active) if active else None,
            lifetime_input_tokens=self.closed_input + self.input + lo[2],
            lifetime_output_tokens=self.closed_output + self.output + lo[3],
            lifetime_other_tokens=self.closed_other + self.other + lo[4],
            lifetime_successful_requests=self.closed_successes + self.successes + lo[0],
            lifetime_failed_requests=self.closed_failures + self.failures + lo[1],
            last_sync=_dt(self.synced_at),
            cost_microusd=self.cost_total,
            unpriced_requests=self.unpriced + o[6],
            cost_limit_microusd=None if ca is None else ca.limit,
            cost_thresholds=() if ca is None else ca.thresholds,
            cost_alert_threshold=max(cost_active) if cost_active else None,
            lifetime_cost_microusd=self.closed_cost + self.cost + lo[5],
            lifetime_unpriced_requests=self.closed_unpriced + self.unpriced + lo[6],
            parent=self.parent,
            time_to_exhaustion=None if now is None else self.exhaustion(now, window),
            cost_time_to_exhaustion=(
                None if now is None or ca is None else ca.exhaustion(now, window)
            ),
        )


class _CostAlerts:
    """The alert state of a config's cost limit: the same state machine as the token limit's
    (``_alerting.evaluate`` runs on this object), over ``cost_total`` in micro-USD.

    It holds the alert fields of its own and reads the period, counters and snapshot of its
    config. Only touched under the ledger's lock.
    """

    __slots__ = (
        "active",
        "alert_generation",
        "alert_levels",
        "alert_period_start",
        "forecast",
        "forecast_due",
        "held",
        "limit",
        "parent",
        "samples",
        "samples_generation",
        "sent",
        "threshold_tokens",
        "thresholds",
        "trigger_span",
        "wake_at",
    )

    limit_kind = "cost"

    def __init__(self, parent: _ConfigState, limit: int, thresholds: tuple[float, ...]) -> None:
        self.parent = parent
        self.limit: int | None = limit
        self.thresholds = thresholds
        self.threshold_tokens = _shared(threshold_tokens(limit, thresholds))
        """The cost levels (micro-USD) of the thresholds (named as the token state's field)."""
        self.active: dict[float, float] | None = None
        self.sent: dict[float, float] | None = None
        self.held: dict[float, float] | None = None
        self.alert_generation = parent.generation
        self.alert_levels: tuple[int, ...] | None = None
        self.alert_period_start = parent.period_start
        self.trigger_span: SpanRef | None = None
        self.wake_at: float = _SATURATED
        # The cost forecast: samples of ``cost_total`` and the forecast alert state, as the
        # config's own for its tokens (``_alerting.evaluate_forecast`` runs on this object too).
        self.samples: list[tuple[float, int]] | None = None
        self.samples_generation = -1
        self.forecast: list[Any] | None = None
        self.forecast_due = -_INF
        self.arm()

    def set(self, limit: int, thresholds: tuple[float, ...]) -> None:
        self.limit = limit
        self.thresholds = thresholds
        self.threshold_tokens = _shared(threshold_tokens(limit, thresholds))
        self.arm()

    # What the state machine reads of the config.
    @property
    def config_id(self) -> str:
        return self.parent.config_id

    @property
    def total(self) -> int:
        return self.parent.cost_total

    @property
    def generation(self) -> int:
        return self.parent.generation

    @property
    def period_start(self) -> float:
        return self.parent.period_start

    @property
    def period_end(self) -> float:
        return self.parent.period_end

    @property
    def last_alert_sent(self) -> float | None:
        return self.parent.last_alert_sent

    @last_alert_sent.setter
    def last_alert_sent(self, value: float | None) -> None:
        self.parent.last_alert_sent = value

    def roll(self, now: float) -> None:
        self.parent.roll(now)

    def snapshot(self, now: float | None = None, window: float | None = None) -> QuotaInfo:
        return self.parent.snapshot(now, window)

    def arm(self) -> None:
        """Set ``wake_at`` (micro-USD): as ``_ConfigState.arm``."""
        _ConfigState.arm(self)  # type: ignore[arg-type]  # the same fields, duck-typed

    def exhaustion(self, now: float, window: float | None = None) -> float | None:
        """Seconds until the cost limit is reached: as ``_ConfigState.exhaustion``, over the
        cost's samples and ``cost_total``."""
        return _ConfigState.exhaustion(self, now, window)  # type: ignore[arg-type]  # duck-typed


class _OverflowState(_ConfigState):
    """The ``_overflow`` config: usage of many ids and providers, so it keeps no provider."""

    __slots__ = ()

    @property  # a None that ignores writes shadows the slot of the base class
    def provider(self) -> str | None:
        return None

    @provider.setter
    def provider(self, value: str | None) -> None:
        pass  # the hot path sets the provider of a new config's first record: ignored here


def _new_state(
    config_id: str, provider: str | None, period: Period | None, tz: tzinfo, now: float
) -> _ConfigState:
    if config_id == OVERFLOW_CONFIG_ID:
        return _OverflowState(config_id, None, period, tz, now)
    return _ConfigState(config_id, provider, period, tz, now)


def _span_ref(span: SpanRef | SpanContext | None) -> SpanRef | None:
    # Off the common path: only when usage crosses a threshold.
    if span is None or type(span) is SpanRef:
        return span
    return SpanRef(span.trace_id, span.span_id, int(span.trace_flags))


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _dt(ts: float | None) -> datetime | None:
    if ts is None or ts == _INF:
        return None
    return datetime.fromtimestamp(ts, timezone.utc)


def _tz_name(tz: tzinfo) -> str:
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else str(tz.tzname(None) or tz)


def threshold_tokens(limit: int, thresholds: Iterable[float]) -> tuple[int, ...]:
    """The token counts at which each threshold is crossed: ``total >= ceil(limit * t / 100)``.

    Computed once when the limit is set, so the hot path and the monitor compare integers and can
    never disagree about whether a threshold was crossed.
    """
    return tuple(math.ceil(limit * t / 100.0) for t in thresholds)


_SHARED: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_SHARED_MAX = 4096


def _shared(value: _T) -> _T:
    """One shared copy of a small immutable tuple (thresholds repeat across many configs).

    Saves about 250 bytes per config when thousands share the same limit and thresholds. The
    table is bounded; past it, tuples are simply not shared.
    """
    found = _SHARED.get(value)
    if found is not None:
        return found  # type: ignore[return-value]  # equal tuple of the same type
    if len(_SHARED) < _SHARED_MAX:
        _SHARED[value] = value
    return value


class QuotaLedger:
    """Per-configuration quota counters, safe to update from any thread.

    Args:
        clock: returns the current POSIX time; inject a fake one in tests.
        timezone: default time zone for calendar periods (IANA name or tzinfo; default UTC).
        default_period: the period of configs created by usage before any limit is set.
        max_configs: how many configs without a limit (the ones usage creates) may exist; the
            usage of a new id beyond that counts in the ``_overflow`` config (one warning, and
            ``overflowed_records``). Configs given a limit are never refused nor counted here.
        idle_config_seconds: configs without a limit whose last usage is older than this are
            removed (checked when a config is created or metrics are read, at most every quarter
            of this time; ``expire_idle`` does it now). None (default): they are kept.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        timezone: str | tzinfo | None = None,
        default_period: str | None = DEFAULT_PERIOD,
        max_configs: int = DEFAULT_MAX_CONFIGS,
        idle_config_seconds: float | None = None,
        pricer: Pricer | None = None,
    ) -> None:
        if type(max_configs) is not int or max_configs < 1:
            raise ValueError(f"max_configs must be a positive int, got {max_configs!r}")
        if idle_config_seconds is not None:
            idle_config_seconds = check_positive_seconds("idle_config_seconds", idle_config_seconds)
        self._clock: Clock = clock if clock is not None else time.time
        self._tz = resolve_timezone(timezone)
        self._default_period = validate_period(default_period)
        self._lock = threading.Lock()
        self._states: dict[str, _ConfigState] = {}
        self._max_configs = max_configs
        self._unlimited = 0  # configs without a limit, _overflow excepted: what the cap bounds
        self._overflowed = 0
        self._warned = False
        self._idle_seconds = idle_config_seconds
        self._next_sweep = -_INF
        self._wakeup: Callable[[], None] | None = None
        # With a store: the configs whose usage or settings wait for the flusher (each once).
        self._tracking = False
        self._dirty: list[_ConfigState] = []
        self._pricer = pricer if pricer is not None else Pricer()
        self._price_cache = self._pricer._cache
        # Nested scopes: whether any config has a parent, and the ids named as parents.
        self._linked = False
        self._parent_names: set[str] = set()
        self.forecast_window_seconds: float | None = None
        """The burn-rate window of ``time_to_exhaustion`` (None: a tenth of the period); the
        manager sets it to the monitor's forecast window."""
        reinit_after_fork(self._at_fork_reinit)

    def _at_fork_reinit(self) -> None:
        # In a forked child: a thread of the parent may have held the lock at fork time.
        self._lock = threading.Lock()
        self._wakeup = None

    # -- configuration -------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock the ledger reads."""
        return self._clock

    @property
    def max_configs(self) -> int:
        """How many configs without a limit usage may create before it overflows."""
        return self._max_configs

    @property
    def idle_config_seconds(self) -> float | None:
        """Idle time after which a config without a limit is removed (None: never)."""
        return self._idle_seconds

    @property
    def overflowed_records(self) -> int:
        """Usage records counted in ``_overflow`` because ``max_configs`` was reached."""
        return self._overflowed

    @property
    def pricer(self) -> Pricer:
        """What prices the requests (see ``_pricing``)."""
        return self._pricer

    def set_prices(
        self, overrides: Iterable[PriceOverride], *, use_genai_prices: bool = True
    ) -> None:
        """Price requests with ``overrides`` first, then genai-prices (from the next request)."""
        pricer = Pricer(overrides, use_genai_prices=use_genai_prices)
        self._pricer = pricer
        self._price_cache = pricer._cache

    def set_wakeup(self, callback: Callable[[], None] | None) -> None:
        """Register the callable that wakes the monitor when usage crosses a threshold.

        It is called outside the lock, from whichever thread recorded the usage, at most once per
        threshold crossing; it must be thread-safe and must not block.
        """
        self._wakeup = callback

    def _wake(self) -> None:
        callback = self._wakeup
        if callback is not None:
            try:
                callback()
            except Exception:  # a dead event loop must not break the recorder
                pass

    def set_limit(
        self,
        config_id: str,
        quota_limit: int | None,
        *,
        thresholds: Iterable[float] = (DEFAULT_THRESHOLD_PERCENT,),
        period: str | None = DEFAULT_PERIOD,
        timezone: str | tzinfo | None = None,
        provider: str | None = None,
        cost_limit: int | None = None,
        cost_thresholds: Iterable[float] | None = None,
        parent: str | None = None,
    ) -> QuotaInfo:
        """Create or update a configuration's limit, thresholds and period.

        All arguments are checked before anything changes, so a bad call leaves the ledger as it
        was; ``quota_limit`` is an int in [1, ``MAX_TOKENS``] (2**53). Changing the period keeps
        the counts of the current period and re-anchors the window on the new period's current
        boundary (nothing counted is lost). Returns the new snapshot.

        ``quota_limit`` None: a config with settings but no token limit (a parent that only
        aggregates, or has a cost limit only). ``parent``: the config this one's usage (tokens
        and cost) also counts toward (with its ancestors); it must exist already, and may not be
        this config or one of its descendants (ValueError naming it). Like the period, the parent
        is replaced: None removes it.

        ``cost_limit`` is a cost limit in micro-USD (an int in [1, 2**53]) with its own
        ``cost_thresholds`` (default: ``thresholds``) and alert state. The call sets both kinds:
        None for either removes that limit.
        """
        config_id = check_config_id(config_id)
        limit = None if quota_limit is None else check_limit(quota_limit)
        cost = None if cost_limit is None else check_limit(cost_limit)
        if parent is not None:
            parent = check_config_id(parent)
        levels = check_thresholds(thresholds)
        cost_levels = (
            levels
            if cost_thresholds is None
            else check_thresholds(cost_thresholds, "cost_thresholds")
        )
        period_name = validate_period(period)
        tz = resolve_timezone(timezone) if timezone is not None else self._tz
        provider = check_optional_str("provider", provider)
        levels = _shared(levels)
        cost_levels = _shared(cost_levels)
        tokens = () if limit is None else _shared(threshold_tokens(limit, levels))
        now = self._clock()  # everything checked before the lock: nothing half-set
        with self._lock:
            state = self._states.get(config_id)
            if parent is not None:
                self._check_parent(config_id, parent)
            if state is None:
                state = self._states[config_id] = _new_state(
                    config_id, provider, period_name, tz, now
                )
                if self._tracking:
                    state.flushed = ZERO
                    state.dirty = False
            else:
                if not state.configured and config_id != OVERFLOW_CONFIG_ID:
                    self._unlimited -= 1  # settings take it out of the cap's count
                if now >= state.period_end:
                    state.roll(now)
            state.configured = True
            if parent != state.parent:
                state.parent = parent
                self._relink()
            elif state.ancestors is None and self._linked and config_id in self._parent_names:
                self._relink()  # a new config that others name as their parent
            if provider is not None:
                state.provider = provider
            if period_name != state.period or tz != state.tz:
                _change_period(state, period_name, tz, now)
            state.limit = limit
            state.thresholds = levels
            state.threshold_tokens = tokens
            state.arm()
            _set_cost_limit(state, cost, cost_levels)
            if self._tracking:
                state.record_dirty = True
                if not state.dirty:
                    state.dirty = True
                    self._dirty.append(state)
            ca = state.cost_alerts
            wake = (
                bool(state.active)
                or state.total >= state.wake_at
                or (ca is not None and (bool(ca.active) or state.cost_total >= ca.wake_at))
            )
            info = state.snapshot(now, self.forecast_window_seconds)
        if wake:
            self._wake()
        return info

    def _check_parent(self, config_id: str, parent: str) -> None:
        # Under the lock, before anything changes: the parent exists and is no descendant.
        if parent == config_id:
            raise ValueError(f"config {config_id!r} cannot be its own parent")
        found = self._states.get(parent)
        if found is None:
            raise ValueError(
                f"parent {parent!r} of config {config_id!r} does not exist: create it first"
            )
        seen = {parent}
        while found is not None and found.parent is not None:
            if found.parent == config_id:
                raise ValueError(
                    f"parent {parent!r} of config {config_id!r} would make a cycle "
                    f"({parent!r} is below {config_id!r})"
                )
            if found.parent in seen:
                break
            seen.add(found.parent)
            found = self._states.get(found.parent)

    def _relink(self) -> None:
        """Rebuild every config's ancestor chain (under the lock; only when links change).

        A missing parent ends a chain (usage counts up to the last known ancestor; it is linked
        again when the parent appears) and each ancestor is counted once, so even a cycle the
        store might hand over (two processes racing) cannot count usage twice."""
        states = self._states
        names: set[str] = set()
        for state in states.values():
            parent = state.parent
            if parent is None:
                state.ancestors = None
                continue
            names.add(parent)
            chain: list[_ConfigState] = []
            seen = {state.config_id}
            while parent is not None and parent not in seen:
                found = states.get(parent)
                if found is None:
                    break
                chain.append(found)
                seen.add(parent)
                parent = found.parent
            state.ancestors = tuple(chain) if chain else None
        self._parent_names = names
        self._linked = bool(names)

    def link_new(self, config_id: str, parent: str) -> bool:
        """Create ``config_id`` (as usage would: no limit, subject to ``max_configs``) with
        ``parent``, unless it exists; True if it was created. For span rules whose configs
        count toward a parent (``ConfigRule(parent=...)``); an unknown parent links it once
        the parent exists. Never raises for a refused id (the record that follows decides)."""
        now = self._clock()
        with self._lock:
            if config_id in self._states:
                return False
            try:
                state = self._create(config_id, None, now)
            except ValueError:
                return False
            if state.config_id != config_id:  # the cap: its usage counts in _overflow
                return False
            state.parent = parent
            # Only this config's chain is new (nobody names it as a parent, or _create linked it).
            chain: list[_ConfigState] = []
            seen = {config_id}
            step: str | None = parent
            while step is not None and step not in seen:
                found = self._states.get(step)
                if found is None:
                    break
                chain.append(found)
                seen.add(step)
                step = found.parent
            state.ancestors = tuple(chain) if chain else None
            self._parent_names.add(parent)
            self._linked = True
            return True

    def ancestors(self, config_id: str) -> list[str]:
        """The ids ``config_id``'s usage also counts toward, nearest first ([] if none)."""
        with self._lock:
            state = self._states.get(config_id)
            if state is None or state.ancestors is None:
                return []
            return [a.config_id for a in state.ancestors]

    # -- the hot path ----------------------------------------------------------------------------

    def record_usage(
        self,
        config_id: str,
        *,
        provider: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        total_tokens: int | None = None,
        success: bool = True,
        span: SpanRef | SpanContext | None = None,
        model: str | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> None:
        """Add one request's usage to ``config_id`` (created on first use). Thread-safe.

        ``total_tokens`` is for callers that know only a total (or a total larger than
        input + output): the excess is counted as tokens of unspecified type. Raises TypeError or
        ValueError on bad arguments, before anything is counted.

        Each count is at most ``MAX_TOKENS`` (2**53); a period's total saturates at
        ``MAX_PERIOD_TOKENS`` (2**62 - 1), beyond which usage is not counted. ``success`` must be
        a bool and a new ``config_id`` printable (see ``check_config_id``).

        ``span`` is kept (as a ``SpanRef``) only when this usage crosses a threshold. An OTel
        ``SpanContext`` is accepted as is and converted only then, so the span processor does not
        build a ``SpanRef`` for every span.

        ``model`` and the cache-read/cache-write tokens (part of ``input_tokens``) price the
        request (see ``record_checked``).
        """
        if type(input_tokens) is not int or not 0 <= input_tokens <= MAX_TOKENS:
            input_tokens = check_count("input_tokens", input_tokens)
        if type(output_tokens) is not int or not 0 <= output_tokens <= MAX_TOKENS:
            output_tokens = check_count("output_tokens", output_tokens)
        other = 0
        if total_tokens is not None:
            if type(total_tokens) is not int or not 0 <= total_tokens <= MAX_TOKENS:
                total_tokens = check_count("total_tokens", total_tokens)
            other = total_tokens - input_tokens - output_tokens
            if other < 0:
                other = 0
        if type(config_id) is not str or config_id not in self._states:
            check_config_id(config_id)  # only new ids: the span processor's may be unprintable
        if provider is not None and (type(provider) is not str or not provider):
            check_optional_str("provider", provider)
        if success.__class__ is not bool:
            raise TypeError(f"success must be a bool, not {type(success).__name__}")
        if span is not None and type(span) is not SpanRef and not isinstance(span, SpanContext):
            raise TypeError(
                f"span must be a SpanRef, a SpanContext or None, not {type(span).__name__}"
            )
        if model is not None and (type(model) is not str or not model):
            check_optional_str("model", model)
        if type(cache_read_tokens) is not int or not 0 <= cache_read_tokens <= MAX_TOKENS:
            cache_read_tokens = check_count("cache_read_tokens", cache_read_tokens)
        if type(cache_write_tokens) is not int or not 0 <= cache_write_tokens <= MAX_TOKENS:
            cache_write_tokens = check_count("cache_write_tokens", cache_write_tokens)
        self.record_checked(
            config_id,
            provider,
            input_tokens,
            output_tokens,
            other,
            success,
            span,
            model,
            cache_read_tokens,
            cache_write_tokens,
        )

    def record_checked(
        self,
        config_id: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        other_tokens: int,
        success: bool,
        span: SpanRef | SpanContext | None,
        model: str | None = None,
        cache_read: int = 0,
        cache_write: int = 0,
    ) -> None:
        """``record_usage`` for callers that checked their values already (the span processor).

        Positional, and nothing is re-checked: the counts must be ints in [0, ``MAX_TOKENS``],
        ``other_tokens`` the tokens beyond input + output, ``config_id`` a str, ``provider`` None
        or a non-empty str, ``success`` a bool and ``span`` a SpanRef, SpanContext or None. A new
        config id is still validated (non-blank, at most 256 characters; control characters are
        allowed, as spans carry them) before it is created: a ValueError then, with nothing
        counted.

        ``model`` (None or a str) and the cache-read/cache-write input tokens (ints, included in
        ``input_tokens``) price the request (see ``_pricing``): its cost in micro-USD is added to
        the config, or, for a model without a price, it is counted as unpriced.
        """
        # Pricing, before the lock: two dict look-ups in the common case (resolved once). A
        # request without a provider is priced as one of its config's provider.
        priced_as = provider
        if priced_as is None:
            known = self._states.get(config_id)
            if known is not None:
                priced_as = known.provider
        try:
            rates = self._price_cache[model][priced_as]
        except KeyError:
            rates = self._pricer.rates(priced_as, model)
        cost = 0
        if rates is not None:
            fast = rates.fast
            if fast is not None and not (other_tokens or cache_read or cache_write):
                # _Rates.micro inlined for the common case (no tiers, no cache tokens).
                cost = (input_tokens * fast[0] + output_tokens * fast[1] + fast[2]) // fast[3]
            elif other_tokens:  # tokens of unknown kind: pricing them would be a guess
                rates = None
            else:
                cost = rates.micro(input_tokens, output_tokens, cache_read, cache_write)
        now = self._clock()
        # acquire/release rather than ``with``: on CPython 3.11 ``with lock`` costs about 80 ns more
        # (it looks up and binds ``__enter__``/``__exit__``), about a fifth of this method.
        up = False
        lock = self._lock
        lock.acquire()
        try:
            state = self._states.get(config_id)
            if state is None:
                state = self._create(config_id, provider, now)
            elif now >= state.period_end:
                state.roll(now)
            if success:
                state.successes += 1
            else:
                state.failures += 1
            state.input += input_tokens
            state.output += output_tokens
            if other_tokens:
                state.other += other_tokens
            total = state.total = state.total + input_tokens + output_tokens + other_tokens
            if rates is None:
                state.unpriced += 1
            elif cost:
                state.cost += cost
                cost_alerts = state.cost_alerts
                if cost_alerts is not None and state.cost_total >= cost_alerts.wake_at:
                    cost_alerts.wake_at = _SATURATED
                    cost_alerts.trigger_span = _span_ref(span)
                    up = True
            state.last_updated = now
            if not state.dirty:  # always True without a store: one attribute test
                state.dirty = True
                self._dirty.append(state)
            if provider is not None and state.provider is None:
                state.provider = provider
            if state.ancestors is not None:  # nested scopes: the parent, its parent, ...
                up = (
                    self._add_up(
                        state.ancestors,
                        now,
                        input_tokens,
                        output_tokens,
                        other_tokens,
                        success,
                        span,
                        -1 if rates is None else cost,
                    )
                    or up
                )
            if total < state.wake_at:
                return
            if total > MAX_PERIOD_TOKENS:
                state.saturate()
                if state.wake_at == _SATURATED:  # the cap, not a threshold
                    return
            state.wake_at = _SATURATED
            if span is None or type(span) is SpanRef:
                state.trigger_span = span
            else:
                state.trigger_span = SpanRef(span.trace_id, span.span_id, int(span.trace_flags))
            up = True
        finally:
            lock.release()
            if up:
                self._wake()

    def _add_up(
        self,
        ancestors: tuple[_ConfigState, ...],
        now: float,
        input_tokens: int,
        output_tokens: int,
        other_tokens: int,
        success: bool,
        span: SpanRef | SpanContext | None,
        cost: int,
    ) -> bool:
        # Under the lock: count one request toward each ancestor, in its own period window,
        # with its cost in micro-USD (-1: unpriced). True if one of them crossed its next token
        # or cost threshold (the monitor must look).
        up = False
        tokens = input_tokens + output_tokens + other_tokens
        for state in ancestors:
            if now >= state.period_end:
                state.roll(now)
            if success:
                state.successes += 1
            else:
                state.failures += 1
            state.input += input_tokens
            state.output += output_tokens
            if other_tokens:
                state.other += other_tokens
            total = state.total = state.total + tokens
            if cost < 0:
                state.unpriced += 1
            elif cost:
                state.cost += cost
                cost_alerts = state.cost_alerts
                if cost_alerts is not None and state.cost_total >= cost_alerts.wake_at:
                    cost_alerts.wake_at = _SATURATED
                    cost_alerts.trigger_span = _span_ref(span)
                    up = True
            state.last_updated = now
            if not state.dirty:
                state.dirty = True
                self._dirty.append(state)
            if total < state.wake_at:
                continue
            if total > MAX_PERIOD_TOKENS:
                state.saturate()
                if state.wake_at == _SATURATED:
                    continue
            state.wake_at = _SATURATED
            if span is None or type(span) is SpanRef:
                state.trigger_span = span
            else:
                state.trigger_span = SpanRef(span.trace_id, span.span_id, int(span.trace_flags))
            up = True
        return up

    def _create(self, config_id: str, provider: str | None, now: float) -> _ConfigState:
        # Under the lock. Validation, expiry and the cap happen here, off the hot path: only new
        # ids reach it (and every record of an id refused by the cap).
        check_config_id(config_id, printable=False)
        if now >= self._next_sweep and self._idle_seconds is not None:
            self._sweep(now)
        if config_id != OVERFLOW_CONFIG_ID:
            if self._unlimited < self._max_configs:
                self._unlimited += 1
                state = self._states[config_id] = _ConfigState(
                    config_id, provider, self._default_period, self._tz, now
                )
                if self._tracking:
                    self._track(state)
                if self._linked and config_id in self._parent_names:
                    self._relink()
                return state
            self._overflowed += 1
            if not self._warned:
                self._warned = True
                _logger.warning(
                    "%d quota configs without a limit exist (max_configs): the usage of new "
                    "config ids (first: %.80r) is counted in %r from now on",
                    self._max_configs,
                    config_id,
                    OVERFLOW_CONFIG_ID,
                )
        state = self._states.get(OVERFLOW_CONFIG_ID)  # type: ignore[assignment]
        if state is None:
            state = self._states[OVERFLOW_CONFIG_ID] = _OverflowState(
                OVERFLOW_CONFIG_ID, None, self._default_period, self._tz, now
            )
            if self._tracking:
                self._track(state)
        elif now >= state.period_end:
            state.roll(now)
        return state

    def _track(self, state: _ConfigState) -> None:
        # Under the lock: from now on the state's usage is flushed to the store.
        if state.flushed is None:
            state.flushed = ZERO
        state.dirty = True
        self._dirty.append(state)

    # -- removal ---------------------------------------------------------------------------------

    def delete(self, config_id: str) -> bool:
        """Remove ``config_id`` with its counters, limit and alert state; True if it existed.

        Atomic under the ledger's lock. A later record for the id creates it afresh (subject to
        ``max_configs``), with no limit.
        """
        with self._lock:
            return self._drop(config_id)

    def _drop(self, config_id: str) -> bool:
        # Under the lock.
        state = self._states.pop(config_id, None)
        if state is None:
            return False
        if not state.configured and config_id != OVERFLOW_CONFIG_ID:
            self._unlimited -= 1
        if self._linked:
            self._relink()
        return True

    def expire_idle(self, now: float | None = None) -> int:
        """Remove the configs without a limit idle for ``idle_config_seconds``; how many went.

        Does nothing (returns 0) when ``idle_config_seconds`` is None.
        """
        if self._idle_seconds is None:
            return 0
        if now is None:
            now = self._clock()
        with self._lock:
            return self._sweep(now)

    def _sweep(self, now: float) -> int:
        # Under the lock: one pass over the configs, at most every quarter of the idle time.
        idle = self._idle_seconds
        assert idle is not None
        self._next_sweep = now + idle / 4
        cutoff = now - idle
        states = self._states
        stale = [
            config_id
            for config_id, state in states.items()
            if not state.configured
            and state.last_updated is not None
            and state.last_updated <= cutoff
            and config_id != OVERFLOW_CONFIG_ID
        ]
        for config_id in stale:
            del states[config_id]
        self._unlimited -= len(stale)
        if stale and self._linked:
            self._relink()
        return len(stale)

    # -- reads -----------------------------------------------------------------------------------

    def get(self, config_id: str) -> QuotaInfo | None:
        """A snapshot of ``config_id``, or None if it is unknown."""
        if type(config_id) is not str:
            check_config_id(config_id, printable=False)  # a TypeError that names the argument
        now = self._clock()
        with self._lock:
            state = self._states.get(config_id)
            if state is None:
                return None
            if now >= state.period_end:
                state.roll(now)
            return state.snapshot(now, self.forecast_window_seconds)

    def get_all(self) -> list[QuotaInfo]:
        """Snapshots of every configuration, in creation order."""
        now = self._clock()
        out: list[QuotaInfo] = []
        with self._lock:
            for state in self._states.values():
                if now >= state.period_end:
                    state.roll(now)
                out.append(state.snapshot(now, self.forecast_window_seconds))
        return out

    def config_ids(self) -> list[str]:
        """The known configuration ids, in creation order."""
        with self._lock:
            return list(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, config_id: object) -> bool:
        return config_id in self._states

    # -- resets ----------------------------------------------------------------------------------

    def reset(self, config_id: str | None = None) -> int:
        """Start the current period's usage of one config (or all) again from zero.

        Lifetime totals keep what was counted; a firing alert is resolved by the monitor's next
        pass. Returns how many configs were reset (0 for an unknown id).
        """
        if config_id is not None and type(config_id) is not str:
            check_config_id(config_id, printable=False)
        now = self._clock()
        with self._lock:
            if config_id is None:
                states = list(self._states.values())
            else:
                one = self._states.get(config_id)
                states = [] if one is None else [one]
            wake = False
            for state in states:
                if now >= state.period_end:
                    state.roll(now)
                else:
                    state.restart()
                wake = wake or bool(state.active)
        if wake:
            self._wake()
        return len(states)

    # -- monitor access --------------------------------------------------------------------------

    def states(self) -> list[_ConfigState]:
        """The state objects, for the monitor's lock-free pre-scan (see ``_alerting``)."""
        with self._lock:
            return list(self._states.values())

    @property
    def lock(self) -> threading.Lock:
        """The ledger's lock, for the monitor's short critical sections."""
        return self._lock

    # -- metrics access --------------------------------------------------------------------------

    def metric_rows(self, now: float | None = None) -> list[MetricRow]:
        """Plain tuples of every configuration's counters, for metric collection.

        Much cheaper than ``get_all`` (no ``QuotaInfo``, no datetimes): one tuple per config, built
        under the lock after the same lazy period roll-over as ``get``. See ``MetricRow`` for the
        field order. ``now`` defaults to the ledger's clock.
        """
        if now is None:
            now = self._clock()
        with self._lock:
            if now >= self._next_sweep and self._idle_seconds is not None:
                self._sweep(now)
            rows: list[MetricRow] = []
            append = rows.append
            for state in self._states.values():
                if now >= state.period_end:
                    state.roll(now)
                append(
                    (
                        state.config_id,
                        state.provider,
                        state.total,
                        state.limit,
                        state.period_end,
                        state.closed_input + state.input,
                        state.closed_output + state.output,
                        state.closed_other + state.other,
                        state.closed_successes + state.successes,
                        state.closed_failures + state.failures,
                        state.closed_cost + state.cost,
                        state.cost_total,
                        None if state.cost_alerts is None else state.cost_alerts.limit,
                        state.closed_unpriced + state.unpriced,
                    )
                )
            return rows

    def exhaustion_rows(self, now: float | None = None) -> list[tuple[str, float]]:
        """``(config_id, seconds)`` of every config with a limit and a burn rate: the
        ``time_to_exhaustion`` of its snapshot, for the metric of that name."""
        if now is None:
            now = self._clock()
        window = self.forecast_window_seconds
        taken: list[tuple[str, int, int, float, float, tuple[tuple[float, int], ...] | None]] = []
        with self._lock:  # only copies under the lock; the estimates are computed after it
            for state in self._states.values():
                limit = state.limit
                if limit is None or now >= state.period_end:
                    continue
                samples = state.samples
                taken.append(
                    (
                        state.config_id,
                        limit,
                        state.total,
                        state.period_start,
                        state.period_end,
                        tuple(samples)
                        if samples and state.samples_generation == state.generation
                        else None,
                    )
                )
        out: list[tuple[str, float]] = []
        for config_id, limit, total, start, end, points in taken:
            if total >= limit:
                out.append((config_id, 0.0))
                continue
            if points is None:  # no samples (no monitor): the period's average rate
                rate = total / (now - start) if now > start else 0.0
            else:
                rate = burn_rate(points, start, now, total, window_for(start, end, window)) or 0.0
            if rate > 0.0:
                out.append((config_id, (limit - total) / rate))
        return out

    def cost_exhaustion_rows(self, now: float | None = None) -> list[tuple[str, float]]:
        """``(config_id, seconds)`` of every config with a cost limit and a burn rate: the
        ``cost_time_to_exhaustion`` of its snapshot, for the metric of that name. Computed
        under the lock (configs with a cost limit are few; each is a few float operations)."""
        if now is None:
            now = self._clock()
        window = self.forecast_window_seconds
        out: list[tuple[str, float]] = []
        with self._lock:
            for state in self._states.values():
                cost_alerts = state.cost_alerts
                if cost_alerts is None or cost_alerts.limit is None or now >= state.period_end:
                    continue
                seconds = cost_alerts.exhaustion(now, window)
                if seconds is not None:
                    out.append((state.config_id, seconds))
        return out

    # -- shared store ----------------------------------------------------------------------------

    @property
    def tracking(self) -> bool:
        """True once a store is attached: usage is queued for the flusher."""
        return self._tracking

    def attach_store(self) -> None:
        """Start queueing usage and settings for a store (the flusher calls ``take_deltas``).

        Every config already known is queued, so usage counted before the store was attached is
        flushed too.
        """
        with self._lock:
            self._tracking = True
            for state in self._states.values():
                state.dirty = False
                state.flushed = ZERO
                state.record_dirty = state.configured
                self._track(state)

    def take_deltas(self) -> tuple[list[Delta], list[ConfigRecord]]:
        """Everything to flush since the last call: usage deltas and changed settings.

        What is taken counts as flushed: the caller must keep retrying it until the store
        acknowledges it (the flusher keeps one batch outstanding at a time).
        """
        now = self._clock()
        with self._lock:
            dirty, self._dirty = self._dirty, []
            deltas: list[Delta] = []
            records: list[ConfigRecord] = []
            later: list[_ConfigState] = []
            states = self._states
            for state in dirty:
                state.dirty = False
                if states.get(state.config_id) is not state:  # deleted meanwhile
                    continue
                if now >= state.period_end:
                    state.roll(now)
                provider = None if state.stored else state.provider
                if state.record_dirty:
                    state.record_dirty = False
                    records.append(_record(state, now))
                closing = state.closing
                if closing:
                    # One delta per config and batch (the stores' idempotency marks are per
                    # config): an old window's first, the current one's in the next flush.
                    window = next(iter(closing))
                    counts = closing.pop(window)
                    if not closing:
                        state.closing = None
                    deltas.append(Delta(state.config_id, window, counts, provider))
                    state.life_flushed = add_counts(state.life_flushed, counts)
                    later.append(state)
                    continue
                flushed = state.flushed
                assert flushed is not None
                own = state.own()
                delta = sub_counts(own, flushed)
                if delta != ZERO:
                    deltas.append(Delta(state.config_id, state.window(), delta, provider))
                    state.flushed = own
                    state.life_flushed = add_counts(state.life_flushed, delta)
            for state in later:
                state.dirty = True
                self._dirty.append(state)
            return deltas, records

    def requeue_records(self, records: list[ConfigRecord]) -> None:
        """Settings whose write failed: queue them again (unless changed meanwhile)."""
        with self._lock:
            for record in records:
                state = self._states.get(record.config_id)
                if state is not None and not state.record_dirty:
                    state.record_dirty = True
                    if not state.dirty:
                        state.dirty = True
                        self._dirty.append(state)

    def default_window_start(self) -> int:
        """The window start (as ``_ConfigState.window`` names it) that a config of the default
        period and time zone has now: the flusher's guess for a config it has not seen yet."""
        if self._default_period is None:
            return 0
        start, _ = period_bounds(self._default_period, self._clock(), self._tz)
        return round(start)

    def sync_targets(self) -> list[tuple[str, int]]:
        """``(config_id, window_start)`` of every config, for a refresh read."""
        now = self._clock()
        with self._lock:
            out = []
            for state in self._states.values():
                if now >= state.period_end:
                    state.roll(now)
                out.append((state.config_id, state.window().start))
            return out

    def apply_syncs(
        self, syncs: Iterable[tuple[ConfigSync, int]]
    ) -> list[tuple[_ConfigState, AlertRecord | None]]:
        """Fold the store's answers in: fleet counts, settings written elsewhere, resets, new
        and deleted configs. Returns each state synced with the store's alert record of it (the
        alert layer adopts those, see ``_claims``)."""
        now = self._clock()
        wake = False
        touched: list[tuple[_ConfigState, AlertRecord | None]] = []
        with self._lock:
            states = self._states
            for sync, start in syncs:
                state = states.get(sync.config_id)
                if not sync.exists:
                    if state is None or not state.stored:
                        continue
                    if sync.deleted:  # deleted by another process (or the CLI)
                        self._drop(sync.config_id)
                        if state.dirty:  # usage since this process's last flush: a new config
                            self._renew(state, now)
                    else:  # lost (a store node restarted empty): send our share again
                        self._reseed(state)
                    continue
                if state is None:
                    state = self._from_store(sync, now)
                state.stored = True
                record = sync.record
                if not state.record_dirty:
                    if record is not None:
                        self._adopt_settings(state, record, now)
                    elif state.configured and state.stored:
                        # Settings this process had from the store are gone there: the config
                        # was deleted and usage re-created it bare. Follow the store.
                        state.limit = None
                        state.threshold_tokens = ()
                        state.configured = False
                        state.arm()
                        state.cost_alerts = None
                        self._unlimited += 1
                        if state.parent is not None:
                            state.parent = None
                            self._relink()
                if state.provider is None and sync.provider is not None:
                    state.provider = sync.provider
                if now >= state.period_end:
                    state.roll(now)
                if sync.epoch > state.epoch:  # reset elsewhere: a new, empty window
                    state.restart()
                    state.epoch = sync.epoch
                flushed = state.flushed
                assert flushed is not None
                if sync.epoch == state.epoch and start == state.window().start:
                    others = sub_counts(sync.window_counts, flushed)
                    state.others = others
                    state.total = min(
                        state.input
                        + state.output
                        + state.other
                        + others[2]
                        + others[3]
                        + others[4],
                        MAX_PERIOD_TOKENS,
                    )
                state.others_life = sub_counts(sync.lifetime, state.life_flushed)
                state.synced_at = now
                if state.total >= state.wake_at and state.wake_at != _SATURATED:
                    # The fleet's usage crossed a threshold: the monitor must look.
                    state.wake_at = _SATURATED
                    wake = True
                ca = state.cost_alerts
                if ca is not None and state.cost_total >= ca.wake_at != _SATURATED:
                    ca.wake_at = _SATURATED
                    wake = True
                touched.append((state, sync.alert))
        if wake:
            self._wake()
        return touched

    def _from_store(self, sync: ConfigSync, now: float) -> _ConfigState:
        # Under the lock: a config another process created.
        record = sync.record
        period: Period | None = self._default_period
        tz = self._tz
        if record is not None:
            period = validate_period(record.period)
            tz = resolve_timezone(record.timezone)
        state = self._states[sync.config_id] = _ConfigState(
            sync.config_id, sync.provider, period, tz, now
        )
        if record is None:
            self._unlimited += 1  # counted like a config created here (see max_configs)
        else:
            state.configured = True
        state.flushed = ZERO
        state.dirty = False
        state.epoch = sync.epoch
        if self._linked and sync.config_id in self._parent_names:
            self._relink()  # a parent others named arrived
        return state

    def _adopt_settings(self, state: _ConfigState, record: ConfigRecord, now: float) -> None:
        # Under the lock: settings written by another process win (last write wins).
        period = validate_period(record.period)
        tz = resolve_timezone(record.timezone)
        if record.provider is not None:
            state.provider = record.provider
        if not state.configured:
            state.configured = True
            if state.config_id != OVERFLOW_CONFIG_ID:
                self._unlimited -= 1
        if record.parent != state.parent:
            state.parent = record.parent
            self._relink()
        if period != state.period or _tz_name(tz) != _tz_name(state.tz):
            _change_period(state, period, tz, now)
        thresholds = tuple(record.thresholds)
        if record.limit != state.limit or thresholds != state.thresholds:
            state.limit = record.limit
            state.thresholds = _shared(thresholds)
            state.threshold_tokens = (
                () if record.limit is None else _shared(threshold_tokens(record.limit, thresholds))
            )
            state.arm()
        _set_cost_limit(state, record.cost_limit, _shared(tuple(record.cost_thresholds)))

    def restart_epoch(self, config_id: str, epoch: int) -> bool:
        """Apply a store reset: ``config_id`` moves to reset epoch ``epoch`` (a new window)."""
        with self._lock:
            state = self._states.get(config_id)
            if state is None:
                return False
            if epoch > state.epoch:
                state.restart()
                state.epoch = epoch
            active = bool(state.active)
        if active:
            self._wake()
        return True

    def pending_count(self) -> int:
        """Configs queued for the flusher."""
        return len(self._dirty)

    def after_fork_in_child(self) -> None:
        """In a forked child: what was counted before the fork is the parent's to flush."""
        with self._lock:
            self._dirty = []
            for state in self._states.values():
                flushed = state.flushed
                if flushed is None:
                    continue
                own = state.own()
                unflushed = sub_counts(own, flushed)
                for counts in (state.closing or {}).values():
                    unflushed = add_counts(unflushed, counts)
                state.life_flushed = add_counts(state.life_flushed, unflushed)
                state.flushed = own
                state.closing = None
                state.dirty = False
                state.record_dirty = False

    def _renew(self, old: _ConfigState, now: float) -> None:
        # Under the lock: ``old`` was deleted in the store while this process had usage not yet
        # flushed: that usage (only) starts the config again, with no settings, as any usage
        # recorded after the delete would.
        assert old.flushed is not None
        unflushed = sub_counts(old.own(), old.flushed)
        if unflushed == ZERO:
            return
        state = self._create(old.config_id, old.provider, now)
        (
            state.successes,
            state.failures,
            state.input,
            state.output,
            state.other,
            state.cost,
            state.unpriced,
        ) = unflushed
        state.total = min(unflushed[2] + unflushed[3] + unflushed[4], MAX_PERIOD_TOKENS)
        state.last_updated = old.last_updated

    def _reseed(self, state: _ConfigState) -> None:
        # Under the lock: the store no longer has this config; queue this process's share of
        # its current window (and its settings) to be sent again.
        state.flushed = ZERO
        state.life_flushed = ZERO
        state.others = ZERO
        state.others_life = ZERO
        state.total = min(state.input + state.output + state.other, MAX_PERIOD_TOKENS)
        state.epoch = 0  # the store starts the config afresh at epoch 0: the same window
        state.stored = False
        state.alert_version = 0
        state.record_dirty = state.configured
        if not state.dirty:
            state.dirty = True
            self._dirty.append(state)

    def store_lost(self) -> None:
        """The store was emptied (a Redis restarted without persistence): send it again what
        this process counted in the current windows, and its settings.

        Each process re-sends only its own share, so the rebuilt totals are exact for the
        processes alive, never N-fold (usage of processes gone is lost with the store).
        """
        with self._lock:
            for state in self._states.values():
                if state.flushed is not None:
                    self._reseed(state)


def _change_period(state: _ConfigState, period: Period | None, tz: tzinfo, now: float) -> None:
    """Give ``state`` a new period or time zone (under the lock).

    Without a store the counts of the current period are kept, re-anchored on the new period's
    current boundary (nothing counted is lost). With a store the window is a shared key: what
    was counted stays in the old window (and in the lifetime totals) and the new period's
    window starts from what the fleet counted in it.
    """
    if state.flushed is not None:
        state.restart()  # stashes this process's unflushed usage under the old window
    state.period, state.tz = period, tz
    state.period_start, state.period_end = period_bounds(period, now, tz)


def _set_cost_limit(
    state: _ConfigState, cost_limit: int | None, thresholds: tuple[float, ...]
) -> None:
    """Give ``state`` a cost limit (micro-USD) with ``thresholds``, or none (under the lock).

    Removing it drops its alert state: like a deleted config, nothing more is told about it."""
    if cost_limit is None:
        state.cost_alerts = None
    elif state.cost_alerts is None:
        state.cost_alerts = _CostAlerts(state, cost_limit, thresholds)
    elif state.cost_alerts.limit != cost_limit or state.cost_alerts.thresholds != thresholds:
        state.cost_alerts.set(cost_limit, thresholds)


def _record(state: _ConfigState, now: float) -> ConfigRecord:
    ca = state.cost_alerts
    return ConfigRecord(
        config_id=state.config_id,
        provider=state.provider,
        limit=state.limit,
        thresholds=state.thresholds,
        period=state.period,
        timezone=_tz_name(state.tz),
        updated_at=now,
        cost_limit=None if ca is None else ca.limit,
        cost_thresholds=() if ca is None else ca.thresholds,
        parent=state.parent,
    )
