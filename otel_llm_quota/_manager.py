"""``LLMProviderManager``: the async-first public face of the ledger, the monitor and handlers."""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import tzinfo
from types import TracebackType
from typing import Any, Literal

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanContext

from otel_llm_quota import environment_variables as env
from otel_llm_quota._claims import FleetAlerts
from otel_llm_quota._env import env_bool, env_positive_int, env_seconds, env_str
from otel_llm_quota._forecast import DEFAULT_MIN_SAMPLES, ForecastSettings
from otel_llm_quota._fork import reinit_after_fork
from otel_llm_quota._handlers import DEFAULT_QUEUE_SIZE, AnyAlertHandler, HandlerDispatcher
from otel_llm_quota._ledger import (
    DEFAULT_MAX_CONFIGS,
    DEFAULT_PERIOD,
    DEFAULT_THRESHOLD_PERCENT,
    Clock,
    QuotaLedger,
)
from otel_llm_quota._metrics import instrument_metrics, shutdown_metrics
from otel_llm_quota._models import Alert, QuotaInfo, SpanRef
from otel_llm_quota._monitor import Monitor, MonitorThread
from otel_llm_quota._periods import resolve_timezone
from otel_llm_quota._pricing import PriceOverride, check_usd, parse_price_overrides
from otel_llm_quota._validation import (
    check_bool,
    check_count,
    check_positive_seconds,
    check_thresholds,
)
from otel_llm_quota.stores import QuotaStore, open_store
from otel_llm_quota.stores._flusher import DEFAULT_FLUSH_INTERVAL_SECONDS, StoreSync

__all__ = ["LLMProviderManager"]

_logger = logging.getLogger(__name__)

_DEFAULT_COOLDOWN_SECONDS = 3600.0
_DEFAULT_HANDLER_TIMEOUT_SECONDS = 10.0
_DEFAULT_MONITOR_INTERVAL_SECONDS = 60.0
_DEFAULT_STORE_TIMEOUT_SECONDS = 5.0
_FINAL_FLUSH_SECONDS = 5.0

# Managers with a store flush what is pending at interpreter exit (atexit), weakly held.
_STORES_TO_FLUSH: weakref.WeakSet[LLMProviderManager] = weakref.WeakSet()


def _flush_at_exit() -> None:
    for manager in list(_STORES_TO_FLUSH):
        try:
            manager._stop_store()
        except Exception:  # exiting: never raise
            _logger.debug("final flush at exit failed", exc_info=True)


atexit.register(_flush_at_exit)


def _exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM a normal exit (``SystemExit(143)``), so the final flush runs at exit.

    Python's default for SIGTERM ends the process without running ``atexit``: the usage not
    flushed yet would be lost on every ``kill``/``docker stop``/pod eviction. Only the default
    disposition is replaced, and only from the main thread: a handler the application (or its
    server: gunicorn, uvicorn) installed is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _sigterm_to_exit)
    except (ValueError, OSError, AttributeError):  # no signals here (embedded interpreters)
        pass


def _sigterm_to_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


_DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 30.0
MIN_MONITOR_INTERVAL_SECONDS = 0.1
"""The shortest monitor interval: below it a monitor would spin a core for nothing."""
MAX_COOLDOWN_SECONDS = 10 * 365 * 86400.0
"""The longest cooldown (ten years): repeat times beyond it would leave the calendar."""


class LLMProviderManager:
    """Quota state for many LLM configurations, with threshold alerts.

    Usage is recorded with ``update_quota_usage`` (async) or ``record_usage`` (sync, any thread;
    this is what the span processor calls). Limits, thresholds and periods are set with
    ``set_quota_limit``. A monitor started with ``start_monitoring`` calls the registered alert
    handlers when usage crosses a threshold, repeats after a cooldown while usage stays above, and
    tells them when the alert ends.

    Every setting is taken from the argument, else its environment variable, else the default.

    Args:
        clock: returns POSIX seconds (default ``time.time``); inject a fake clock in tests.
        timezone: IANA name or tzinfo in which periods start
            (``OTEL_LLM_QUOTA_TIMEZONE``, default UTC).
        cooldown_seconds: repeat interval of a firing alert
            (``OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS``, default 3600, at most ten years).
        handler_timeout_seconds: time limit of one handler call
            (``OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS``, default 10).
        send_resolved: tell handlers when alerts end (``OTEL_LLM_QUOTA_SEND_RESOLVED``, default
            true); a bool, or one of true/false, 1/0, yes/no, on/off (anything else raises).
        default_period: period of configs created by usage before a limit is set
            (default ``"month"``).
        store: where state is kept and shared: a URL (``OTEL_LLM_QUOTA_STORE``; see
            ``otel_llm_quota.stores``) or a store object; default: this process only
            (``False``: this process only, whatever the environment says).
        flush_interval_seconds: seconds between two flushes to the store
            (``OTEL_LLM_QUOTA_FLUSH_INTERVAL_SECONDS``, default 1).
        store_timeout_seconds: how long the constructor waits for the store's state (totals,
            limits, alerts) before going on with what it has (default 5). A store that cannot
            be reached then is retried in the background; counting goes on meanwhile.
        shutdown_timeout_seconds: how long stopping the monitor and closing may take in all
            (``OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS``, default 30): the final pass, its
            deliveries and the handlers' ``aclose()``; whatever still runs then is abandoned.
        handler_queue_size: notifications each handler's queue holds before the oldest is
            dropped (default 1000; counted in ``handler_dropped``).
        max_configs: configs without a limit (created by usage) kept at most; the usage of new
            ids beyond it counts in the ``_overflow`` config (``OTEL_LLM_QUOTA_MAX_CONFIGS``,
            default 2000, the SDK's default metric cardinality limit).
        idle_config_seconds: remove configs without a limit after this long without usage
            (``OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS``, default: never).
        metrics: report the quotas as ``llm.quota.*`` metrics (``OTEL_LLM_QUOTA_METRICS_ENABLED``,
            default true): observable instruments read at collection time, so free until a
            reader collects, and without an SDK configured they report nowhere. ``close()``
            stops them; ``instrument_metrics(manager)`` returns them.
        meter_provider: where the metrics go (default: the global one, also when the
            application sets it only after this manager is created).
        forecast: forecast alerts, reason ``forecast`` (``OTEL_LLM_QUOTA_FORECAST_ENABLED``,
            default true): once per period when a config will pass its limit before the reset
            at the current burn rate (see the README's "Nested budgets and forecasts").
        forecast_window_seconds: the burn-rate window (``OTEL_LLM_QUOTA_FORECAST_WINDOW_SECONDS``,
            default a tenth of each config's period); ``time_to_exhaustion`` uses it too.
        forecast_min_lead_seconds: fire only while exhaustion is at least this far away
            (``OTEL_LLM_QUOTA_FORECAST_MIN_LEAD_SECONDS``, default a twentieth of the period).
        forecast_min_samples: samples a forecast needs besides a full window
            (``OTEL_LLM_QUOTA_FORECAST_MIN_SAMPLES``, default 4).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        timezone: str | tzinfo | None = None,
        cooldown_seconds: float | None = None,
        handler_timeout_seconds: float | None = None,
        send_resolved: bool | None = None,
        default_period: str | None = DEFAULT_PERIOD,
        store: str | QuotaStore | Literal[False] | None = None,
        flush_interval_seconds: float | None = None,
        store_timeout_seconds: float = _DEFAULT_STORE_TIMEOUT_SECONDS,
        shutdown_timeout_seconds: float | None = None,
        handler_queue_size: int = DEFAULT_QUEUE_SIZE,
        max_configs: int | None = None,
        idle_config_seconds: float | None = None,
        metrics: bool | None = None,
        meter_provider: MeterProvider | None = None,
        forecast: bool | None = None,
        forecast_window_seconds: float | None = None,
        forecast_min_lead_seconds: float | None = None,
        forecast_min_samples: int | None = None,
    ) -> None:
        sizing: dict[str, Any] = {
            "max_configs": (
                env_positive_int(env.OTEL_LLM_QUOTA_MAX_CONFIGS, DEFAULT_MAX_CONFIGS)
                if max_configs is None
                else max_configs
            ),
            "idle_config_seconds": (
                env_seconds(env.OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS, None)
                if idle_config_seconds is None
                else idle_config_seconds
            ),
        }
        if timezone is None:
            # Only the variable's value falls back (with a warning); a bad argument raises.
            timezone = env_str(env.OTEL_LLM_QUOTA_TIMEZONE)
            try:
                resolve_timezone(timezone)
            except ValueError:
                _logger.warning(
                    "%s=%r is not a known time zone; using UTC",
                    env.OTEL_LLM_QUOTA_TIMEZONE,
                    timezone,
                )
                timezone = None
        self._ledger = QuotaLedger(
            clock=clock, timezone=timezone, default_period=default_period, **sizing
        )
        cooldown = (
            env_seconds(
                env.OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS,
                _DEFAULT_COOLDOWN_SECONDS,
                maximum=MAX_COOLDOWN_SECONDS,
            )
            if cooldown_seconds is None
            else check_positive_seconds(
                "cooldown_seconds", cooldown_seconds, maximum=MAX_COOLDOWN_SECONDS
            )
        )
        timeout = (
            env_seconds(
                env.OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS, _DEFAULT_HANDLER_TIMEOUT_SECONDS
            )
            if handler_timeout_seconds is None
            else check_positive_seconds("handler_timeout_seconds", handler_timeout_seconds)
        )
        self._shutdown_timeout = (
            env_seconds(
                env.OTEL_LLM_QUOTA_SHUTDOWN_TIMEOUT_SECONDS, _DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
            )
            if shutdown_timeout_seconds is None
            else check_positive_seconds("shutdown_timeout_seconds", shutdown_timeout_seconds)
        )
        if check_count("handler_queue_size", handler_queue_size) == 0:
            raise ValueError("handler_queue_size must be > 0, got 0")
        resolved = (
            env_bool(env.OTEL_LLM_QUOTA_SEND_RESOLVED, True)
            if send_resolved is None
            else check_bool("send_resolved", send_resolved)
        )
        self._handlers_lock = threading.Lock()
        self._handlers: tuple[AnyAlertHandler, ...] = ()
        self._dispatcher = HandlerDispatcher(timeout, handler_queue_size)
        forecasting = _forecast_settings(
            forecast, forecast_window_seconds, forecast_min_lead_seconds, forecast_min_samples
        )
        self._ledger.forecast_window_seconds = forecasting.window_seconds
        self._monitor = Monitor(
            self._ledger,
            self._dispatcher,
            lambda: self._handlers,
            cooldown_seconds=cooldown,
            send_resolved=resolved,
            forecast=forecasting if forecasting.enabled else None,
        )
        self._thread = MonitorThread(self._monitor, on_exit=self._close_handlers)
        self._thread_interval: float | None = None
        self._closed = False
        self._sync: StoreSync | None = None
        self._fleet: FleetAlerts | None = None
        if (
            env_bool(env.OTEL_LLM_QUOTA_METRICS_ENABLED, True)
            if metrics is None
            else check_bool("metrics", metrics)
        ):
            instrument_metrics(self, meter_provider)
        if store is None:
            store = env_str(env.OTEL_LLM_QUOTA_STORE)
        if store is not None and store is not False:
            self._attach_store(store, flush_interval_seconds, store_timeout_seconds, timeout)
        reinit_after_fork(self._at_fork_reinit)

    def _attach_store(
        self,
        store: str | QuotaStore,
        flush_interval: float | None,
        wait_seconds: float,
        handler_timeout: float,
    ) -> None:
        reopen: Callable[[], QuotaStore] | None = None
        if isinstance(store, str):
            url = store
            store = open_store(url)  # ValueError/StoreError/ImportError: the caller's to see

            def reopen() -> QuotaStore:
                return open_store(url)

        elif not isinstance(store, QuotaStore):
            raise TypeError(f"store must be a URL or a QuotaStore, not {type(store).__name__}")
        interval = (
            env_seconds(env.OTEL_LLM_QUOTA_FLUSH_INTERVAL_SECONDS, DEFAULT_FLUSH_INTERVAL_SECONDS)
            if flush_interval is None
            else check_positive_seconds("flush_interval_seconds", flush_interval)
        )
        sync = StoreSync(
            self._ledger,
            store,
            flush_interval=interval,
            on_synced=self._on_synced,
            reopen=reopen,
        )
        self._sync = sync
        self._fleet = FleetAlerts(self._ledger, sync, lease_seconds=max(120.0, 3 * handler_timeout))
        self._monitor.fleet = self._fleet
        if not sync.start(wait_seconds):
            _logger.warning(
                "otel-llm-quota: no answer from the store %s yet; counting in memory until it "
                "answers",
                store.url,
            )
        _STORES_TO_FLUSH.add(self)
        if env_bool(env.OTEL_LLM_QUOTA_FLUSH_ON_SIGTERM, True):
            _exit_cleanly_on_sigterm()

    def _on_synced(self, synced: list[Any]) -> None:
        fleet = self._fleet
        if fleet is not None and fleet.on_synced(synced):
            self._monitor.wake()

    def _at_fork_reinit(self) -> None:
        # In a forked child the monitor thread and the handler threads are gone: restart the
        # monitor thread if the parent ran one, so each worker process keeps alerting.
        self._dispatcher.reinit_after_fork()
        self._monitor.reinit_after_fork()
        self._thread = MonitorThread(self._monitor, on_exit=self._close_handlers)
        if self._thread_interval is not None and not self._closed:
            self._thread.start(self._thread_interval)

    # -- properties ------------------------------------------------------------------------------

    @property
    def ledger(self) -> QuotaLedger:
        """The thread-safe ledger behind the manager."""
        return self._ledger

    @property
    def store(self) -> QuotaStore | None:
        """The store this manager shares its state through, or None (this process only)."""
        return None if self._sync is None else self._sync.store

    @property
    def store_sync(self) -> StoreSync | None:
        """The flusher of the store (its ``errors``, ``last_success``, ``pending_configs``)."""
        return self._sync

    def flush(self, timeout_seconds: float = _FINAL_FLUSH_SECONDS) -> bool:
        """Send pending usage to the store now and refresh the fleet's totals; True if that
        succeeded within the timeout (always True without a store)."""
        if self._sync is None:
            return True
        return self._sync.flush(timeout_seconds)

    async def aflush(self, timeout_seconds: float = _FINAL_FLUSH_SECONDS) -> bool:
        """``flush`` for coroutines (waits off the event loop)."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        if self._sync is None:
            return True
        return await asyncio.to_thread(self._sync.flush, timeout_seconds)

    @property
    def monitoring(self) -> bool:
        """True while the monitor runs (in this loop or in its own thread)."""
        return self._monitor.running or self._thread.running

    @property
    def alert_handlers(self) -> tuple[AnyAlertHandler, ...]:
        """The registered handlers, in registration order (a copy)."""
        return self._handlers

    @property
    def cooldown_seconds(self) -> float:
        """Seconds before a still-firing alert is notified again."""
        return self._monitor.cooldown_seconds

    @property
    def handler_timeout_seconds(self) -> float:
        """Seconds one handler call may take."""
        return self._dispatcher.timeout_seconds

    @property
    def shutdown_timeout_seconds(self) -> float:
        """Seconds that stopping the monitor and closing may take in all."""
        return self._shutdown_timeout

    @property
    def send_resolved(self) -> bool:
        """Whether handlers are told when alerts end."""
        return self._monitor.send_resolved

    @property
    def handler_failures(self) -> Mapping[str, int]:
        """Failed handler calls (exceptions and timeouts) per handler name."""
        return dict(self._dispatcher.failures)

    @property
    def handler_timeouts(self) -> Mapping[str, int]:
        """Timed-out handler calls per handler name."""
        return dict(self._dispatcher.timeouts)

    @property
    def handler_dropped(self) -> Mapping[str, int]:
        """Notifications dropped per handler name because its queue was full (never delivered)."""
        return dict(self._dispatcher.dropped)

    @property
    def alerts_sent(self) -> Mapping[tuple[str, float, str], int]:
        """Notifications dispatched per (config id, threshold, ``firing``/``resolved``)."""
        return dict(self._dispatcher.delivered)

    # -- handlers --------------------------------------------------------------------------------

    def add_alert_handler(self, handler: AnyAlertHandler) -> None:
        """Register a handler: ``f(config_id, quota)`` or an object with ``handle_alert(alert)``.

        Either may be sync (called on its own worker thread) or async (a task on the monitor's
        loop). Each handler receives the notifications in order from its own bounded queue.
        Adding the same handler twice registers it once.
        """
        if not callable(getattr(handler, "handle_alert", None)) and not callable(handler):
            raise TypeError(
                "handler must be a callable (config_id, quota) or have a handle_alert(alert) "
                f"method, not {type(handler).__name__}"
            )
        with self._handlers_lock:
            if handler not in self._handlers:
                self._handlers = (*self._handlers, handler)

    def remove_alert_handler(self, handler: AnyAlertHandler) -> None:
        """Unregister a handler; unknown handlers are ignored."""
        with self._handlers_lock:
            self._handlers = tuple(h for h in self._handlers if h != handler)
        self._dispatcher.forget(handler)

    # -- limits ----------------------------------------------------------------------------------

    async def set_quota_limit(
        self,
        config_id: str,
        quota_limit: int | None,
        alert_threshold_percent: float | None = None,
        *,
        thresholds: Iterable[float] | None = None,
        period: str | None = DEFAULT_PERIOD,
        timezone: str | tzinfo | None = None,
        provider: str | None = None,
        cost_limit_usd: float | None = None,
        cost_thresholds: Iterable[float] | None = None,
        parent: str | None = None,
    ) -> QuotaInfo:
        """Set the token limit of ``config_id`` (created if unknown) and when to alert.

        ``alert_threshold_percent`` (default 80) and ``thresholds`` (e.g. ``(50, 80, 95, 100)``)
        are merged; each must be in (0, 100]. ``period`` is ``"hour"``, ``"day"``, ``"week"``,
        ``"month"`` (default) or ``None`` (never resets), aligned to the calendar in
        ``timezone`` (default: the manager's). Raises ValueError/TypeError naming the bad
        argument; the ledger is unchanged then. Returns the new state.

        ``cost_limit_usd`` adds a cost limit in USD (see the README, "Cost budgets"), alerting at
        ``cost_thresholds`` (default: the token limit's thresholds) with an alert state of its
        own. The call sets both, so a limit left out is removed.

        Nested budgets: ``parent`` names a config (which must exist already) that this one's
        usage (tokens and cost) also counts toward, and so on up its own parents; each level
        keeps its own limits, period and alerts. ``quota_limit`` may be None for a config without
        a token limit (a parent that only aggregates, or one with a cost limit alone). Every
        setting is replaced: an omitted ``parent`` removes the link, as an omitted ``period``
        sets the monthly default.
        """
        return self.set_quota_limit_sync(
            config_id,
            quota_limit,
            alert_threshold_percent,
            thresholds=thresholds,
            period=period,
            timezone=timezone,
            provider=provider,
            cost_limit_usd=cost_limit_usd,
            cost_thresholds=cost_thresholds,
            parent=parent,
        )

    def set_quota_limit_sync(
        self,
        config_id: str,
        quota_limit: int | None,
        alert_threshold_percent: float | None = None,
        *,
        thresholds: Iterable[float] | None = None,
        period: str | None = DEFAULT_PERIOD,
        timezone: str | tzinfo | None = None,
        provider: str | None = None,
        cost_limit_usd: float | None = None,
        cost_thresholds: Iterable[float] | None = None,
        parent: str | None = None,
    ) -> QuotaInfo:
        """The synchronous form of ``set_quota_limit`` (for configuration code without a loop)."""
        cost_limit = None if cost_limit_usd is None else check_usd("cost_limit_usd", cost_limit_usd)
        levels: list[float] = []
        if alert_threshold_percent is not None:
            levels.extend(check_thresholds((alert_threshold_percent,), "alert_threshold_percent"))
        if thresholds is not None:
            levels.extend(check_thresholds(thresholds))
        if not levels:
            levels.append(DEFAULT_THRESHOLD_PERCENT)
        return self._ledger.set_limit(
            config_id,
            quota_limit,
            thresholds=levels,
            period=period,
            timezone=timezone,
            provider=provider,
            cost_limit=cost_limit,
            cost_thresholds=cost_thresholds,
            parent=parent,
        )

    def set_prices(
        self,
        prices: Iterable[PriceOverride | Mapping[str, Any]],
        *,
        use_genai_prices: bool = True,
    ) -> None:
        """Price requests with ``prices`` first (the config file's ``prices:`` entries: model
        and provider patterns, USD per million tokens, or ``free``), then with genai-prices.
        Raises ValueError for a bad entry, before anything changes."""
        self._ledger.set_prices(parse_price_overrides(prices), use_genai_prices=use_genai_prices)

    # -- usage -----------------------------------------------------------------------------------

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
        """Record one request's usage synchronously, from any thread (see ``QuotaLedger``).

        ``model`` and the cache-read/cache-write tokens (included in ``input_tokens``) price
        the request; without a model it is counted as unpriced."""
        self._ledger.record_usage(
            config_id,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total_tokens,
            success=success,
            span=span,
            model=model,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
        )

    async def update_quota_usage(
        self,
        config_id: str,
        provider: str | None = None,
        tokens_used: int = 0,
        success: bool = True,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Record one request (the seed API). ``config_id`` is created if unknown.

        ``tokens_used`` is the request's total; give ``input_tokens``/``output_tokens`` too when
        known (a ``tokens_used`` above their sum counts the excess as tokens of unspecified type).
        """
        total = check_count("tokens_used", tokens_used)
        self._ledger.record_usage(
            config_id,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total if total else None,
            success=success,
        )

    # -- reads -----------------------------------------------------------------------------------

    async def get_quota_usage(self, config_id: str) -> QuotaInfo | None:
        """The current ``QuotaInfo`` of ``config_id``, or None if unknown."""
        return self._ledger.get(config_id)

    async def get_quota_status(self, config_id: str) -> dict[str, Any] | None:
        """The status dictionary of ``config_id`` (see ``QuotaInfo.to_dict``), or None."""
        info = self._ledger.get(config_id)
        return None if info is None else info.to_dict()

    async def get_all_quota_statuses(self) -> list[dict[str, Any]]:
        """Status dictionaries of every configuration, in creation order."""
        return [info.to_dict() for info in self._ledger.get_all()]

    async def reset_quota_cache(self, config_id: str | None = None) -> None:
        """Start the current period's usage of ``config_id`` (or of every config) from zero.

        Limits, thresholds and lifetime totals are kept; a firing alert is resolved. With a
        store the reset is fleet-wide (a new, empty window every process moves to within a
        flush interval); raises ``StoreError`` if the store cannot be reached (after the
        store's own timeout: 2 s for Redis, ``busy_timeout_ms`` for SQLite).
        """
        sync = self._sync
        if sync is None:
            self._ledger.reset(config_id)
            return
        ids = [config_id] if config_id is not None else self._ledger.config_ids()
        for cid in ids:
            epoch = await sync.run(sync.store.reset(cid))
            self._ledger.restart_epoch(cid, epoch)

    async def delete_config(self, config_id: str) -> bool:
        """Remove ``config_id``: its usage, limit, thresholds and alert state; True if it existed.

        A firing alert of the config is gone with it (no resolved notification). Usage recorded
        later for the id creates it again from zero, without a limit. With a store the config
        is removed there too (raises ``StoreError`` if the store cannot be reached), and every
        other process drops it at its next sync.
        """
        sync = self._sync
        found = False
        if sync is not None:
            found = await sync.run(sync.store.delete(config_id))
        return self._ledger.delete(config_id) or found

    def delete_config_sync(self, config_id: str) -> bool:
        """The synchronous form of ``delete_config`` (waits up to the store's own timeouts)."""
        sync = self._sync
        found = False
        if sync is not None:
            found = sync.call(sync.store.delete(config_id), _FINAL_FLUSH_SECONDS * 2)
        return self._ledger.delete(config_id) or found

    # -- monitoring ------------------------------------------------------------------------------

    async def start_monitoring(self, interval: float | None = None) -> None:
        """Start the monitor on the running event loop. Starting twice is harmless.

        ``interval`` (seconds, at least 0.1; default ``OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS``
        or 60) is the longest time between two passes; crossings wake the monitor at once.
        """
        self._check_open()
        seconds = self._interval(interval)
        if self._thread.running:
            raise RuntimeError("the monitor already runs in its own thread")
        self._monitor.start(seconds)

    async def stop_monitoring(self) -> None:
        """Stop the monitor, on this loop or in its thread, after a final pass. Idempotent.

        The final pass delivers what crossed a threshold since the last one; the pass then in
        progress finishes its deliveries first; all within ``shutdown_timeout_seconds``.
        """
        import asyncio  # here: `import otel_llm_quota` need not load it

        if self._thread.running:
            await asyncio.to_thread(self.stop_monitoring_thread, self._shutdown_timeout)
        else:
            await self._monitor.stop(self._shutdown_timeout)

    def start_monitoring_thread(self, interval: float | None = None) -> None:
        """Run the monitor in a daemon thread with its own event loop (apps without asyncio)."""
        self._check_open()
        seconds = self._interval(interval)
        if self._monitor.running and not self._thread.running:
            raise RuntimeError("the monitor already runs on an event loop")
        self._thread.start(seconds)
        self._thread_interval = seconds

    def stop_monitoring_thread(self, timeout_seconds: float | None = None) -> bool:
        """Stop the monitor thread; True if it ended within ``timeout_seconds`` (default
        ``shutdown_timeout_seconds``)."""
        self._thread_interval = None
        return self._thread.stop(
            self._shutdown_timeout if timeout_seconds is None else timeout_seconds
        )

    async def check_quotas(self) -> list[Alert]:
        """Run one monitor pass now, deliver its notifications, and return them.

        When it returns, every handler has been called for those alerts (or the call failed or
        timed out); a handler still busy with a call that exceeded its timeout gets them later.
        """
        return await self._monitor.check()

    # -- lifecycle -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the monitor (loop or thread) after a final pass that delivers what is pending,
        then close the handlers that hold connections (``aclose()``, all at once). Idempotent.

        Takes at most ``shutdown_timeout_seconds`` in all, then, with a store, up to 5 s more
        for the final flush (what is pending reaches the store; past that it is lost with the
        process, and a warning says so).
        """
        import asyncio  # here: `import otel_llm_quota` need not load it

        if self._closed:
            return
        self._closed = True
        shutdown_metrics(self)
        deadline = time.monotonic() + self._shutdown_timeout
        self._thread_interval = None  # a forked child must not restart a closed manager's thread
        if self._thread.running:
            # Off the loop: joining the thread may take a while. The thread closes the
            # handlers on its own loop, where their connections live.
            await asyncio.to_thread(self._thread.stop, self._shutdown_timeout)
        else:
            await self._monitor.stop(self._shutdown_timeout)
            await self._close_handlers(_remaining(deadline))
        if self._sync is not None:
            await asyncio.to_thread(self._stop_store)

    def _stop_store(self) -> None:
        # The final flush: what is pending reaches the store before the process goes.
        sync = self._sync
        if sync is not None:
            sync.stop(_FINAL_FLUSH_SECONDS)
            _STORES_TO_FLUSH.discard(self)

    async def _close_handlers(self, timeout_seconds: float) -> None:
        await self._dispatcher.close()  # the worker threads and consumer tasks end
        await self._dispatcher.aclose_handlers(
            self._handlers, min(self._dispatcher.timeout_seconds, timeout_seconds)
        )

    def close(self) -> None:
        """Synchronous close for apps that used ``start_monitoring_thread`` (and at exit).

        The handlers' ``aclose()`` runs on the monitor thread's loop before it ends. Takes at
        most ``shutdown_timeout_seconds`` (a little more for the thread to end; with a store,
        up to 5 s more for the final flush): whatever is
        still running then is abandoned, so interpreter exit never hangs on a handler.
        """
        if self._closed:
            return
        if self._monitor.running and not self._thread.running:
            raise RuntimeError("the monitor runs on an event loop: use 'await manager.aclose()'")
        self._closed = True
        shutdown_metrics(self)
        self._thread_interval = None
        if self._thread.running:
            self._thread.stop(self._shutdown_timeout)  # closes the handlers on its loop
            self._stop_store()  # the final flush, as below
            return
        self._dispatcher.stop()  # the handlers' worker threads end
        if any(callable(getattr(h, "aclose", None)) for h in self._handlers):
            import asyncio  # here: `import otel_llm_quota` need not load it

            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: close the handlers on a fresh one
                self._close_handlers_in_thread()
            else:
                _logger.debug("close() inside an event loop: handlers not closed; use aclose()")
        self._stop_store()

    def _close_handlers_in_thread(self) -> None:
        """Run the handlers' ``aclose()`` on a fresh loop in a daemon thread, within the deadline
        (an ``aclose()`` that blocks its loop cannot be cancelled; it can be left behind)."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        timeout = self._shutdown_timeout
        closer = threading.Thread(
            target=asyncio.run,
            args=(self._close_handlers(timeout),),
            name="otel-llm-quota-close",
            daemon=True,
        )
        closer.start()
        closer.join(timeout + 1.0)
        if closer.is_alive():
            _logger.warning(
                "otel-llm-quota: closing the alert handlers did not end within %.3gs; left behind",
                timeout,
            )

    async def __aenter__(self) -> LLMProviderManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this LLMProviderManager is closed")

    @staticmethod
    def _interval(interval: float | None) -> float:
        if interval is None:
            return env_seconds(
                env.OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS,
                _DEFAULT_MONITOR_INTERVAL_SECONDS,
                minimum=MIN_MONITOR_INTERVAL_SECONDS,
            )
        return check_positive_seconds("interval", interval, minimum=MIN_MONITOR_INTERVAL_SECONDS)

    def __repr__(self) -> str:
        return (
            f"LLMProviderManager(configs={len(self._ledger)}, handlers={len(self._handlers)}, "
            f"monitoring={self.monitoring})"
        )


def _forecast_settings(
    enabled: bool | None,
    window: float | None,
    lead: float | None,
    samples: int | None,
) -> ForecastSettings:
    """The forecast knobs: each argument, else its environment variable, else the default."""
    return ForecastSettings(
        enabled=(
            env_bool(env.OTEL_LLM_QUOTA_FORECAST_ENABLED, True)
            if enabled is None
            else check_bool("forecast", enabled)
        ),
        window_seconds=(
            env_seconds(env.OTEL_LLM_QUOTA_FORECAST_WINDOW_SECONDS, None)
            if window is None
            else check_positive_seconds("forecast_window_seconds", window)
        ),
        min_lead_seconds=(
            env_seconds(env.OTEL_LLM_QUOTA_FORECAST_MIN_LEAD_SECONDS, None)
            if lead is None
            else check_positive_seconds("forecast_min_lead_seconds", lead)
        ),
        min_samples=(
            env_positive_int(env.OTEL_LLM_QUOTA_FORECAST_MIN_SAMPLES, DEFAULT_MIN_SAMPLES)
            if samples is None
            else _positive_int("forecast_min_samples", samples)
        ),
    )


def _positive_int(name: str, value: object) -> int:
    number = check_count(name, value)
    if number == 0:
        raise ValueError(f"{name} must be > 0, got 0")
    return number


def _remaining(deadline: float) -> float:
    """Seconds left until the monotonic ``deadline`` (never negative)."""
    return max(deadline - time.monotonic(), 0.0)
