"""Quota state as OpenTelemetry metrics, read from the ledger at collection time.

Every instrument is observable: nothing is recorded on the hot path, and each collection reads the
ledger once (``QuotaLedger.metric_rows``, one short critical section) and turns the rows into
observations. Attribute dicts are built once per configuration and reused across collections.
Cardinality is bounded by the number of configurations (times the few token types, outcomes,
thresholds and alert states).

Counters (``llm.quota.tokens``, ``llm.quota.requests``) report lifetime totals, which the ledger
keeps across period resets, so they never go backwards when a period starts again from zero.

With a shared store the two kinds differ on purpose: the quota-state gauges (``usage``,
``limit``, ``remaining``, ``utilization``, ``time_until_reset``) are fleet-wide values, the same
in every replica (aggregate them with ``max``), while ``llm.quota.tokens`` and
``llm.quota.requests`` count this process's own contributions (summing replicas is right).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from opentelemetry.metrics import (
    CallbackOptions,
    MeterProvider,
    Observation,
    get_meter,
    get_meter_provider,
)

from otel_llm_quota import _names as n
from otel_llm_quota._fork import reinit_after_fork
from otel_llm_quota._ledger import MetricRow
from otel_llm_quota.version import __version__

if TYPE_CHECKING:  # pragma: no cover - typing only
    from opentelemetry.sdk.metrics.view import View

    from otel_llm_quota._manager import LLMProviderManager
    from otel_llm_quota.stores._flusher import StoreSync

__all__ = ["DEFAULT_MAX_CONFIGS", "QuotaMetrics", "instrument_metrics", "quota_metric_views"]

_logger = logging.getLogger(__name__)

DEFAULT_MAX_CONFIGS: Final = 10_000
"""Configurations a ``quota_metric_views`` view makes room for by default."""

# Series per configuration in the widest instrument: llm.quota.alerts has one per threshold and
# state; 4 thresholds x 2 states is typical, 32 leaves room for long threshold lists.
_SERIES_PER_CONFIG: Final = 32

_Attributes = dict[str, str | float]


class _ConfigAttributes:
    """The attribute dicts of one configuration, built once and reused every collection."""

    __slots__ = ("base", "failure", "input", "other", "output", "provider", "success")

    def __init__(self, config_id: str, provider: str | None) -> None:
        self.provider = provider
        base: _Attributes = {n.ATTR_CONFIG_ID: config_id}
        if provider is not None:
            base[n.ATTR_PROVIDER] = provider
        self.base = base
        self.input = {**base, n.ATTR_TOKEN_TYPE: "input"}
        self.output = {**base, n.ATTR_TOKEN_TYPE: "output"}
        self.other = base  # tokens reported only as a total carry no token type
        self.success = {**base, n.ATTR_REQUEST_OUTCOME: "success"}
        self.failure = {**base, n.ATTR_REQUEST_OUTCOME: "failure"}


class QuotaMetrics:
    """Observable instruments that report a manager's quotas (see the README's metrics table).

    An ``LLMProviderManager`` creates one itself (``metrics=True``, the default); get it, or one
    for another meter provider, with ``instrument_metrics``. It holds the manager weakly: once the
    manager is garbage-collected or closed, or after ``shutdown()``, the instruments report
    nothing.

    Args:
        manager: the ``LLMProviderManager`` to report.
        meter_provider: where the instruments are created; default the global one.
    """

    def __init__(
        self, manager: LLMProviderManager, meter_provider: MeterProvider | None = None
    ) -> None:
        self._manager_ref = weakref.ref(manager)
        self._lock = threading.Lock()
        self._rows: list[MetricRow] = []
        self._now = 0.0
        self._attrs: dict[str, _ConfigAttributes] = {}
        self._closed = False
        self._meter_provider = meter_provider
        reinit_after_fork(self._at_fork_reinit)
        meter = _SharedInstruments.of(meter_provider)
        self._shared = meter
        # The first instrument's callback takes the snapshot the others of the same collection
        # read: the SDK calls observable callbacks one after the other, in creation order.
        meter.create_observable_gauge(
            n.METRIC_USAGE,
            callbacks=[self._observe_usage],
            unit="{token}",
            description="Tokens used in the current quota period.",
        )
        meter.create_observable_gauge(
            n.METRIC_LIMIT,
            callbacks=[self._observe_limit],
            unit="{token}",
            description="Token limit of the quota period (configs with a limit only).",
        )
        meter.create_observable_gauge(
            n.METRIC_REMAINING,
            callbacks=[self._observe_remaining],
            unit="{token}",
            description="Tokens left in the current quota period, never negative.",
        )
        meter.create_observable_gauge(
            n.METRIC_UTILIZATION,
            callbacks=[self._observe_utilization],
            unit="1",
            description="Usage divided by the limit (1 = quota used up; may exceed 1).",
        )
        meter.create_observable_counter(
            n.METRIC_TOKENS,
            callbacks=[self._observe_tokens],
            unit="{token}",
            description="Tokens recorded since the start, by gen_ai.token.type; never reset.",
        )
        meter.create_observable_counter(
            n.METRIC_REQUESTS,
            callbacks=[self._observe_requests],
            unit="{request}",
            description="Requests recorded since the start, by outcome; never reset.",
        )
        meter.create_observable_gauge(
            n.METRIC_TIME_UNTIL_RESET,
            callbacks=[self._observe_time_until_reset],
            unit="s",
            description="Seconds until the quota period ends (periodic quotas only).",
        )
        meter.create_observable_gauge(
            n.METRIC_TIME_TO_EXHAUSTION,
            callbacks=[self._observe_time_to_exhaustion],
            unit="s",
            description=(
                "Seconds until the limit is reached at the current burn rate (0 once reached; "
                "configs with a limit and a rate only)."
            ),
        )
        meter.create_observable_counter(
            n.METRIC_ALERTS,
            callbacks=[self._observe_alerts],
            unit="{alert}",
            description="Alert notifications dispatched, by threshold and state.",
        )
        meter.create_observable_counter(
            n.METRIC_HANDLER_FAILURES,
            callbacks=[self._observe_handler_failures],
            unit="{failure}",
            description="Alert-handler calls that raised or timed out, by handler.",
        )
        meter.create_observable_counter(
            n.METRIC_HANDLER_DROPPED,
            callbacks=[self._observe_handler_dropped],
            unit="{notification}",
            description="Notifications a handler never received: its queue was full, by handler.",
        )

        meter.create_observable_gauge(
            n.METRIC_STORE_PENDING,
            callbacks=[self._observe_store_pending],
            unit="{config}",
            description="Configs with usage or settings not yet flushed to the store.",
        )
        meter.create_observable_counter(
            n.METRIC_STORE_ERRORS,
            callbacks=[self._observe_store_errors],
            unit="{error}",
            description="Failed store operations, by operation.",
        )
        meter.create_observable_gauge(
            n.METRIC_STORE_FLUSH_DURATION,
            callbacks=[self._observe_store_flush_duration],
            unit="s",
            description="Duration of the last successful flush and refresh with the store.",
        )
        meter.create_observable_counter(
            n.METRIC_COST,
            callbacks=[self._observe_cost],
            unit="USD",
            description="Cost of the priced requests recorded since the start (this process's); "
            "never reset.",
        )
        meter.create_observable_gauge(
            n.METRIC_COST_USAGE,
            callbacks=[self._observe_cost_usage],
            unit="USD",
            description="Cost of the priced requests in the current quota period.",
        )
        meter.create_observable_gauge(
            n.METRIC_COST_TIME_TO_EXHAUSTION,
            callbacks=[self._observe_cost_time_to_exhaustion],
            unit="s",
            description=(
                "Seconds until the cost limit is reached at the current burn rate (0 once "
                "reached; configs with a cost limit and a rate only)."
            ),
        )
        meter.create_observable_gauge(
            n.METRIC_COST_LIMIT,
            callbacks=[self._observe_cost_limit],
            unit="USD",
            description="Cost limit of the quota period (configs with a cost limit only).",
        )
        meter.create_observable_counter(
            n.METRIC_UNPRICED_REQUESTS,
            callbacks=[self._observe_unpriced],
            unit="{request}",
            description="Requests whose model has no known price (not in the cost), since the "
            "start (this process's).",
        )
        meter.create_observable_counter(
            n.METRIC_OVERFLOW_RECORDS,
            callbacks=[self._observe_overflow],
            unit="{record}",
            description="Usage records counted in the _overflow config: max_configs was reached.",
        )
        meter.join(self)

    def _at_fork_reinit(self) -> None:
        # In a forked child: a collecting thread of the parent may have held the lock.
        self._lock = threading.Lock()

    def _reopen(self) -> None:
        with self._lock:
            self._closed = False
        self._shared.join(self)

    def shutdown(self) -> None:
        """Stop reporting (the instruments stay registered but observe nothing). Idempotent."""
        with self._lock:
            self._closed = True
            self._rows = []
            self._attrs = {}
        self._shared.leave(self)

    # -- snapshot --------------------------------------------------------------------------------

    def _manager(self) -> LLMProviderManager | None:
        if self._closed:
            return None
        return self._manager_ref()

    def _attributes(self, config_id: str, provider: str | None) -> _ConfigAttributes:
        attrs = self._attrs.get(config_id)
        if attrs is None or attrs.provider != provider:
            attrs = self._attrs[config_id] = _ConfigAttributes(config_id, provider)
        return attrs

    # -- callbacks -------------------------------------------------------------------------------

    # The observations are generated lazily: the SDK turns each into a measurement and drops it,
    # so a collection never holds ~9 objects per config at once (less memory, fewer GC passes).

    def _observe_usage(self, options: CallbackOptions) -> Iterable[Observation]:
        manager = self._manager()
        if manager is None:
            return ()
        ledger = manager.ledger
        now = ledger.clock()
        rows = ledger.metric_rows(now)
        with self._lock:
            if len(self._attrs) > 2 * len(rows) + 64:  # deleted or expired configs: let them go
                live = {row[0] for row in rows}
                self._attrs = {k: v for k, v in self._attrs.items() if k in live}
            attributes = self._attributes
            bases = [attributes(row[0], row[1]).base for row in rows]
            self._rows, self._now = rows, now
        return (Observation(row[2], base) for row, base in zip(rows, bases, strict=True))

    def _rows_and_attrs(self) -> tuple[list[MetricRow], dict[str, _ConfigAttributes]]:
        # Every config in the rows got its attributes in _observe_usage of this collection.
        with self._lock:
            return self._rows, self._attrs

    def _observe_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        return (Observation(row[3], attrs[row[0]].base) for row in rows if row[3] is not None)

    def _observe_remaining(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        return (
            Observation(max(row[3] - row[2], 0), attrs[row[0]].base)
            for row in rows
            if row[3] is not None
        )

    def _observe_utilization(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        return (
            Observation(row[2] / row[3], attrs[row[0]].base) for row in rows if row[3] is not None
        )

    def _observe_tokens(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        for row in rows:
            a = attrs[row[0]]
            yield Observation(row[5], a.input)
            yield Observation(row[6], a.output)
            if row[7]:
                yield Observation(row[7], a.other)

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        for row in rows:
            a = attrs[row[0]]
            yield Observation(row[8], a.success)
            yield Observation(row[9], a.failure)

    def _observe_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        return (Observation(row[10] / 1_000_000, attrs[row[0]].base) for row in rows)

    def _observe_cost_usage(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        return (Observation(row[11] / 1_000_000, attrs[row[0]].base) for row in rows)

    def _observe_cost_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        return (
            Observation(row[12] / 1_000_000, attrs[row[0]].base)
            for row in rows
            if row[12] is not None
        )

    def _observe_unpriced(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        return (Observation(row[13], attrs[row[0]].base) for row in rows if row[13])

    def _observe_time_until_reset(self, options: CallbackOptions) -> Iterable[Observation]:
        rows, attrs = self._rows_and_attrs()
        now = self._now
        return (
            Observation(max(row[4] - now, 0.0), attrs[row[0]].base)
            for row in rows
            if row[4] != math.inf
        )

    def _observe_time_to_exhaustion(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._exhaustions(cost=False)

    def _observe_cost_time_to_exhaustion(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._exhaustions(cost=True)

    def _exhaustions(self, *, cost: bool) -> Iterable[Observation]:
        """The seconds to exhaustion of the token limits (or the cost limits) of the configs
        this collection reports."""
        manager = self._manager()
        if manager is None:
            return ()
        with self._lock:
            now, attrs = self._now, self._attrs
        ledger = manager.ledger
        found = ledger.cost_exhaustion_rows(now) if cost else ledger.exhaustion_rows(now)
        return (
            Observation(seconds, attrs[config_id].base)
            for config_id, seconds in found
            if config_id in attrs
        )

    def _observe_alerts(self, options: CallbackOptions) -> Iterable[Observation]:
        manager = self._manager()
        if manager is None:
            return []
        sent = manager.alerts_sent
        if not sent:
            return []
        rows, attrs = self._rows_and_attrs()
        providers = {row[0]: row[1] for row in rows}
        out: list[Observation] = []
        for (config_id, threshold, state), count in sorted(sent.items()):
            known = attrs.get(config_id)
            base = (
                known.base
                if known is not None
                else _ConfigAttributes(config_id, providers.get(config_id)).base
            )
            out.append(
                Observation(
                    count, {**base, n.ATTR_THRESHOLD: float(threshold), n.ATTR_ALERT_STATE: state}
                )
            )
        return out

    def _observe_overflow(self, options: CallbackOptions) -> Iterable[Observation]:
        manager = self._manager()
        if manager is None:
            return []
        count = manager.ledger.overflowed_records
        return [Observation(count)] if count else []

    def _observe_handler_failures(self, options: CallbackOptions) -> Iterable[Observation]:
        manager = self._manager()
        if manager is None:
            return []
        failures = manager.handler_failures
        timeouts = manager.handler_timeouts
        out: list[Observation] = []
        for name in sorted(failures):
            timed_out = timeouts.get(name, 0)
            raised = failures[name] - timed_out
            if raised:
                out.append(
                    Observation(raised, {n.ATTR_HANDLER_NAME: name, n.ATTR_ERROR_TYPE: "exception"})
                )
            if timed_out:
                out.append(
                    Observation(
                        timed_out, {n.ATTR_HANDLER_NAME: name, n.ATTR_ERROR_TYPE: "timeout"}
                    )
                )
        return out

    def _store_sync(self) -> StoreSync | None:
        manager = self._manager()
        return None if manager is None else manager.store_sync

    def _observe_store_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        sync = self._store_sync()
        return [] if sync is None else [Observation(sync.pending_configs)]

    def _observe_store_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        sync = self._store_sync()
        if sync is None:
            return []
        errors = dict(sync.errors)
        return [Observation(count, {n.ATTR_STORE_OPERATION: op}) for op, count in errors.items()]

    def _observe_store_flush_duration(self, options: CallbackOptions) -> Iterable[Observation]:
        sync = self._store_sync()
        if sync is None or sync.last_flush_seconds is None:
            return []
        return [Observation(sync.last_flush_seconds)]

    def _observe_handler_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        manager = self._manager()
        if manager is None:
            return []
        dropped = manager.handler_dropped
        return [
            Observation(dropped[name], {n.ATTR_HANDLER_NAME: name})
            for name in sorted(dropped)
            if dropped[name]
        ]


def instrument_metrics(
    manager: LLMProviderManager, meter_provider: MeterProvider | None = None
) -> QuotaMetrics:
    """Report ``manager``'s quotas as OpenTelemetry metrics through ``meter_provider``.

    ``meter_provider`` defaults to the global one (``opentelemetry.metrics.get_meter_provider``).
    A manager already reports through the global provider (or its ``meter_provider``) unless it
    was created with ``metrics=False``: for that provider this returns the manager's existing
    ``QuotaMetrics`` rather than registering the instruments twice (resumed if it had been shut
    down); for another provider it creates one more ``QuotaMetrics``, which the manager's
    ``close()`` shuts down too.
    Values are read from the ledger when the provider's readers collect, so recording usage costs
    nothing extra. With more than ~2,000 configurations, give the SDK ``MeterProvider`` the views
    of ``quota_metric_views`` (the SDK's default cardinality limit is 2,000 series per
    instrument). Call ``shutdown()`` on the result to stop reporting.
    """
    with _exports_lock:
        exports = _exports.setdefault(manager, [])
        for metrics in exports:
            if _same_provider(metrics._meter_provider, meter_provider):
                metrics._reopen()
                return metrics
        metrics = QuotaMetrics(manager, meter_provider)
        exports.append(metrics)
        return metrics


# The QuotaMetrics of each manager, so that one manager never reports twice through one meter
# provider (its series would be observed twice per collection).
_exports_lock = threading.RLock()


def _reinit_exports_lock() -> None:
    # In a forked child: another thread of the parent may have held the lock.
    global _exports_lock
    _exports_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_exports_lock)
_exports: weakref.WeakKeyDictionary[LLMProviderManager, list[QuotaMetrics]] = (
    weakref.WeakKeyDictionary()
)


_Callback = Callable[[CallbackOptions], Iterable[Observation]]


class _SharedInstruments:
    """The ``llm.quota.*`` instruments of one meter provider, shared by every ``QuotaMetrics``.

    The SDK registers an instrument name once per meter: a second ``create_observable_gauge``
    of the same name returns the first instrument and drops the new callbacks, so a second
    manager reporting through the same provider would report nothing. Each instrument is created
    once here, and its callback asks every member in turn (in creation order, so each member's
    usage callback, which takes its snapshot, still runs before its other callbacks).
    """

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        self._meter = get_meter(n.METER_NAME, __version__, meter_provider=meter_provider)
        self._created: set[str] = set()
        self._members: tuple[QuotaMetrics, ...] = ()  # replaced under the lock, read without

    @classmethod
    def of(cls, meter_provider: MeterProvider | None) -> _SharedInstruments:
        """The instruments that report to ``meter_provider`` (None: the global provider)."""
        global _global_instruments
        with _exports_lock:
            current = get_meter_provider()
            target = current if meter_provider is None else meter_provider
            shared = _instruments_by_provider.get(target)
            if shared is None and target is current:
                shared = _global_instruments  # created through the proxy, forwarded to it
            if shared is None:
                shared = cls(meter_provider)
                if meter_provider is None:
                    _global_instruments = shared
                else:
                    _instruments_by_provider[meter_provider] = shared
            return shared

    def join(self, member: QuotaMetrics) -> None:
        with _exports_lock:
            if member not in self._members:
                self._members = (*self._members, member)

    def leave(self, member: QuotaMetrics) -> None:
        with _exports_lock:
            self._members = tuple(m for m in self._members if m is not member)

    def _create(
        self, kind: str, name: str, callback: _Callback, unit: str, description: str
    ) -> None:
        with _exports_lock:
            if name in self._created:
                return
            self._created.add(name)
        method = callback.__name__  # each member's own bound method of that name is asked
        getattr(self._meter, kind)(
            name, callbacks=[self._fan_out(method)], unit=unit, description=description
        )

    def _fan_out(self, method: str) -> _Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for member in self._members:
                try:
                    yield from getattr(member, method)(options)
                except Exception:  # one manager's failure must not hide the others' series
                    _logger.debug("otel-llm-quota: %s failed", method, exc_info=True)

        return observe

    def create_observable_gauge(
        self, name: str, callbacks: list[_Callback], unit: str, description: str
    ) -> None:
        self._create("create_observable_gauge", name, callbacks[0], unit, description)

    def create_observable_counter(
        self, name: str, callbacks: list[_Callback], unit: str, description: str
    ) -> None:
        self._create("create_observable_counter", name, callbacks[0], unit, description)


_global_instruments: _SharedInstruments | None = None
_instruments_by_provider: weakref.WeakKeyDictionary[MeterProvider, _SharedInstruments] = (
    weakref.WeakKeyDictionary()
)


def _same_provider(existing: MeterProvider | None, requested: MeterProvider | None) -> bool:
    """Whether instruments created through ``existing`` report to ``requested`` (None: global).

    Instruments created through the global provider before the application set it were created
    on the API's proxy, which forwards them to the provider set later.
    """
    if existing is requested:
        return True
    current = get_meter_provider()
    return (existing is None and requested is current) or (
        requested is None and existing is current
    )


def shutdown_metrics(manager: LLMProviderManager, keep: QuotaMetrics | None = None) -> None:
    """Shut down every ``QuotaMetrics`` of ``manager`` but ``keep`` (its close calls this)."""
    with _exports_lock:
        exports = list(_exports.get(manager, ()))
    for metrics in exports:
        if metrics is not keep:
            metrics.shutdown()


def quota_metric_views(max_configs: int = DEFAULT_MAX_CONFIGS) -> list[View]:
    """SDK views that raise the cardinality limit of the ``llm.quota.*`` instruments.

    Pass them to ``opentelemetry.sdk.metrics.MeterProvider(views=...)`` so that ``max_configs``
    configurations report without series falling into the SDK's overflow bucket. With an SDK
    older than 1.45.2, which has no per-instrument cardinality limit (so nothing to raise), the
    list is empty.
    """
    if type(max_configs) is not int or max_configs < 1:
        raise ValueError(f"max_configs must be a positive int, got {max_configs!r}")
    # Imported here: the SDK's metrics package costs ~20 ms to import, which an application that
    # never builds these views (or has no SDK metrics at all) should not pay at start-up.
    from opentelemetry.sdk.metrics.view import View

    if "aggregation_cardinality_limit" not in inspect.signature(View.__init__).parameters:
        return []
    return [
        View(
            instrument_name="llm.quota.*",
            meter_name=n.METER_NAME,
            aggregation_cardinality_limit=max_configs * _SERIES_PER_CONFIG,
        )
    ]
