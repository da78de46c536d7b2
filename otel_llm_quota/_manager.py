"""``LLMProviderManager``: the async-first public face of the ledger, the monitor and handlers."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import tzinfo
from types import TracebackType
from typing import Any

from opentelemetry.trace import SpanContext

from otel_llm_quota import environment_variables as env
from otel_llm_quota._env import env_bool, env_positive_int, env_seconds, env_str
from otel_llm_quota._fork import reinit_after_fork
from otel_llm_quota._handlers import AnyAlertHandler, HandlerDispatcher
from otel_llm_quota._ledger import (
    DEFAULT_MAX_CONFIGS,
    DEFAULT_PERIOD,
    DEFAULT_THRESHOLD_PERCENT,
    Clock,
    QuotaLedger,
)
from otel_llm_quota._models import Alert, QuotaInfo, SpanRef
from otel_llm_quota._monitor import Monitor, MonitorThread
from otel_llm_quota._validation import check_count, check_positive_seconds, check_thresholds

__all__ = ["LLMProviderManager"]

_logger = logging.getLogger(__name__)

_DEFAULT_COOLDOWN_SECONDS = 3600.0
_DEFAULT_HANDLER_TIMEOUT_SECONDS = 10.0
_DEFAULT_MONITOR_INTERVAL_SECONDS = 60.0


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
            (``OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS``, default 3600).
        handler_timeout_seconds: time limit of one handler call
            (``OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS``, default 10).
        send_resolved: tell handlers when alerts end (``OTEL_LLM_QUOTA_SEND_RESOLVED``, default
            true).
        default_period: period of configs created by usage before a limit is set
            (default ``"month"``).
        max_configs: configs without a limit (created by usage) kept at most; the usage of new
            ids beyond it counts in the ``_overflow`` config (``OTEL_LLM_QUOTA_MAX_CONFIGS``,
            default 2000, the SDK's default metric cardinality limit).
        idle_config_seconds: remove configs without a limit after this long without usage
            (``OTEL_LLM_QUOTA_IDLE_CONFIG_SECONDS``, default: never).
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
        max_configs: int | None = None,
        idle_config_seconds: float | None = None,
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
            timezone = env_str(env.OTEL_LLM_QUOTA_TIMEZONE)
            try:
                self._ledger = QuotaLedger(
                    clock=clock, timezone=timezone, default_period=default_period, **sizing
                )
            except ValueError:
                _logger.warning(
                    "%s=%r is not a known time zone; using UTC",
                    env.OTEL_LLM_QUOTA_TIMEZONE,
                    timezone,
                )
                self._ledger = QuotaLedger(clock=clock, default_period=default_period, **sizing)
        else:
            self._ledger = QuotaLedger(
                clock=clock, timezone=timezone, default_period=default_period, **sizing
            )
        cooldown = (
            env_seconds(env.OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS, _DEFAULT_COOLDOWN_SECONDS)
            if cooldown_seconds is None
            else check_positive_seconds("cooldown_seconds", cooldown_seconds)
        )
        timeout = (
            env_seconds(
                env.OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS, _DEFAULT_HANDLER_TIMEOUT_SECONDS
            )
            if handler_timeout_seconds is None
            else check_positive_seconds("handler_timeout_seconds", handler_timeout_seconds)
        )
        resolved = (
            env_bool(env.OTEL_LLM_QUOTA_SEND_RESOLVED, True)
            if send_resolved is None
            else bool(send_resolved)
        )
        self._handlers_lock = threading.Lock()
        self._handlers: tuple[AnyAlertHandler, ...] = ()
        self._dispatcher = HandlerDispatcher(timeout)
        self._monitor = Monitor(
            self._ledger,
            self._dispatcher,
            lambda: self._handlers,
            cooldown_seconds=cooldown,
            send_resolved=resolved,
        )
        self._thread = MonitorThread(self._monitor, on_exit=self._close_handlers)
        self._thread_interval: float | None = None
        self._closed = False
        reinit_after_fork(self._at_fork_reinit)

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
    def alerts_sent(self) -> Mapping[tuple[str, float, str], int]:
        """Notifications dispatched per (config id, threshold, ``firing``/``resolved``)."""
        return dict(self._dispatcher.delivered)

    # -- handlers --------------------------------------------------------------------------------

    def add_alert_handler(self, handler: AnyAlertHandler) -> None:
        """Register a handler: ``f(config_id, quota)`` or an object with ``handle_alert(alert)``.

        Either may be sync (run on a worker thread) or async. Adding the same handler twice
        registers it once.
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

    # -- limits ----------------------------------------------------------------------------------

    async def set_quota_limit(
        self,
        config_id: str,
        quota_limit: int,
        alert_threshold_percent: float | None = None,
        *,
        thresholds: Iterable[float] | None = None,
        period: str | None = DEFAULT_PERIOD,
        timezone: str | tzinfo | None = None,
        provider: str | None = None,
    ) -> QuotaInfo:
        """Set the token limit of ``config_id`` (created if unknown) and when to alert.

        ``alert_threshold_percent`` (default 80) and ``thresholds`` (e.g. ``(50, 80, 95, 100)``)
        are merged; each must be in (0, 100]. ``period`` is ``"hour"``, ``"day"``, ``"week"``,
        ``"month"`` (default) or ``None`` (never resets), aligned to the calendar in
        ``timezone`` (default: the manager's). Raises ValueError/TypeError naming the bad
        argument; the ledger is unchanged then. Returns the new state.
        """
        return self.set_quota_limit_sync(
            config_id,
            quota_limit,
            alert_threshold_percent,
            thresholds=thresholds,
            period=period,
            timezone=timezone,
            provider=provider,
        )

    def set_quota_limit_sync(
        self,
        config_id: str,
        quota_limit: int,
        alert_threshold_percent: float | None = None,
        *,
        thresholds: Iterable[float] | None = None,
        period: str | None = DEFAULT_PERIOD,
        timezone: str | tzinfo | None = None,
        provider: str | None = None,
    ) -> QuotaInfo:
        """The synchronous form of ``set_quota_limit`` (for configuration code without a loop)."""
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
        )

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
    ) -> None:
        """Record one request's usage synchronously, from any thread (see ``QuotaLedger``)."""
        self._ledger.record_usage(
            config_id,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total_tokens,
            success=success,
            span=span,
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

        Limits, thresholds and lifetime totals are kept; a firing alert is resolved.
        """
        self._ledger.reset(config_id)

    async def delete_config(self, config_id: str) -> bool:
        """Remove ``config_id``: its usage, limit, thresholds and alert state. True if it existed.

        A firing alert of the config is gone with it (no resolved notification). Usage recorded
        later for the id creates it again from zero, without a limit.
        """
        return self.delete_config_sync(config_id)

    def delete_config_sync(self, config_id: str) -> bool:
        """The synchronous form of ``delete_config``."""
        return self._ledger.delete(config_id)

    # -- monitoring ------------------------------------------------------------------------------

    async def start_monitoring(self, interval: float | None = None) -> None:
        """Start the monitor on the running event loop. Starting twice is harmless.

        ``interval`` (seconds, default ``OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS`` or 60) is the
        longest time between two passes; crossings wake the monitor at once.
        """
        self._check_open()
        seconds = self._interval(interval)
        if self._thread.running:
            raise RuntimeError("the monitor already runs in its own thread")
        self._monitor.start(seconds)

    async def stop_monitoring(self) -> None:
        """Stop the monitor, on this loop or in its thread, after a final pass. Idempotent.

        The final pass delivers what crossed a threshold since the last one; the pass then in
        progress finishes its deliveries first.
        """
        if self._thread.running:
            await asyncio.to_thread(self.stop_monitoring_thread)
        else:
            await self._monitor.stop()

    def start_monitoring_thread(self, interval: float | None = None) -> None:
        """Run the monitor in a daemon thread with its own event loop (apps without asyncio)."""
        self._check_open()
        seconds = self._interval(interval)
        if self._monitor.running and not self._thread.running:
            raise RuntimeError("the monitor already runs on an event loop")
        self._thread.start(seconds)
        self._thread_interval = seconds

    def stop_monitoring_thread(self, timeout_seconds: float | None = None) -> bool:
        """Stop the monitor thread; True if it ended within ``timeout_seconds``."""
        self._thread_interval = None
        return self._thread.stop(timeout_seconds)

    async def check_quotas(self) -> list[Alert]:
        """Run one monitor pass now, deliver its notifications, and return them."""
        return await self._monitor.check()

    # -- lifecycle -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the monitor (loop or thread) after a final pass that delivers what is pending,
        then close the handlers that hold connections (``aclose()``). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread.running:
            # Off the loop: joining the thread may take a handler timeout. The thread closes
            # the handlers on its own loop, where their connections live.
            await asyncio.to_thread(self.stop_monitoring_thread)
        else:
            await self._monitor.stop()
            await self._close_handlers()

    async def _close_handlers(self) -> None:
        await self._dispatcher.aclose_handlers(self._handlers)

    def close(self) -> None:
        """Synchronous close for apps that used ``start_monitoring_thread``.

        The handlers' ``aclose()`` runs on the monitor thread's loop before it ends.
        """
        if self._closed:
            return
        if self._monitor.running and not self._thread.running:
            raise RuntimeError("the monitor runs on an event loop: use 'await manager.aclose()'")
        self._closed = True
        if self._thread.running:
            self.stop_monitoring_thread()  # closes the handlers on the thread's loop
        elif any(callable(getattr(h, "aclose", None)) for h in self._handlers):
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: close the handlers on a fresh one
                asyncio.run(self._close_handlers())
            else:
                _logger.debug("close() inside an event loop: handlers not closed; use aclose()")

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
                env.OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS, _DEFAULT_MONITOR_INTERVAL_SECONDS
            )
        return check_positive_seconds("interval", interval)

    def __repr__(self) -> str:
        return (
            f"LLMProviderManager(configs={len(self._ledger)}, handlers={len(self._handlers)}, "
            f"monitoring={self.monitoring})"
        )
