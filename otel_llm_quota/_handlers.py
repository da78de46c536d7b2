"""Alert handlers: the plug-in interface, and their safe dispatch.

A handler is either

* a callable ``handler(config_id, quota)`` (the seed API), plain or ``async``; it learns what the
  notification is about from ``quota.alert_state`` and ``quota.alert_threshold``; or
* an object with a ``handle_alert(alert)`` method (plain or ``async``), the ``AlertHandler``
  protocol, which receives the full ``Alert`` (threshold, state, reason, fingerprint, span).

Dispatch never lets a handler hurt the monitor or the other handlers: each call has a timeout,
synchronous handlers run in a daemon thread per call (never on the event loop), and every
exception or timeout is logged and counted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from otel_llm_quota._models import Alert, QuotaInfo

__all__ = [
    "AlertCallback",
    "AlertHandler",
    "AnyAlertHandler",
    "HandlerDispatcher",
    "NoOpAlertHandler",
    "handler_name",
]

_logger = logging.getLogger(__name__)

AlertCallback = Callable[[str, QuotaInfo], Awaitable[None] | None]
"""The seed handler signature: ``(config_id, quota)``, sync or async."""


@runtime_checkable
class AlertHandler(Protocol):
    """A handler object that receives the full ``Alert``. ``handle_alert`` may be ``async``."""

    def handle_alert(self, alert: Alert) -> Awaitable[None] | None:
        """Deliver one notification. Exceptions are caught, logged and counted by the caller."""


AnyAlertHandler = AlertHandler | AlertCallback


class NoOpAlertHandler:
    """A handler that does nothing (a placeholder where a handler is required)."""

    def handle_alert(self, alert: Alert) -> None:
        """Ignore ``alert``."""


def handler_name(handler: object) -> str:
    """A readable, stable name for logs and metrics: ``name`` attribute, else qualified name."""
    name = getattr(handler, "name", None)
    if isinstance(name, str) and name:
        return name
    qualname = getattr(handler, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname
    return type(handler).__qualname__


def _is_async(target: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - async __call__ on an instance
    return call is not None and inspect.iscoroutinefunction(call)


class _HandlerBusy(Exception):
    """A synchronous handler is still running a call that already timed out."""


class HandlerDispatcher:
    """Calls handlers for alerts, with a per-call timeout and fault isolation.

    Synchronous handlers run in a daemon thread per call, never on the event loop. Python cannot
    stop a hung thread, so a handler whose previous call has not returned yet is skipped (and
    counted as a timeout) instead of being given another thread: one hung handler holds one
    thread, never starves the others, and never keeps the process from exiting.

    Args:
        timeout_seconds: how long one handler call may take.
        max_concurrency: handler calls in flight at once across all alerts of a pass.
    """

    def __init__(self, timeout_seconds: float, max_concurrency: int = 64):
        self.timeout_seconds = timeout_seconds
        self._max_concurrency = max_concurrency
        self._stats_lock = threading.Lock()
        self._busy: set[int] = set()
        self.failures: Counter[str] = Counter()
        """Failed calls (exception or timeout) per handler name."""
        self.timeouts: Counter[str] = Counter()
        """Timed-out calls per handler name (also counted in ``failures``), including calls
        skipped because the handler's previous call is still running."""
        self.delivered: Counter[tuple[str, float, str]] = Counter()
        """Notifications dispatched, per (config id, threshold, state)."""

    async def dispatch(self, handlers: Iterable[AnyAlertHandler], alerts: list[Alert]) -> None:
        """Deliver ``alerts`` to every handler.

        Alerts of one configuration are delivered in order (a resolved notification never
        overtakes the firing one it ends); different configurations and different handlers run
        concurrently, at most ``max_concurrency`` calls at a time.
        """
        handlers = tuple(handlers)
        if not alerts:
            return
        for alert in alerts:
            with self._stats_lock:
                self.delivered[(alert.config_id, alert.threshold_percent, alert.state.value)] += 1
        if not handlers:
            return
        by_config: dict[str, list[Alert]] = {}
        for alert in alerts:
            by_config.setdefault(alert.config_id, []).append(alert)
        semaphore = asyncio.Semaphore(self._max_concurrency)

        async def one_config(config_alerts: list[Alert]) -> None:
            for alert in config_alerts:
                await asyncio.gather(*(self._call(h, alert, semaphore) for h in handlers))

        await asyncio.gather(*(one_config(a) for a in by_config.values()))

    async def _call(
        self, handler: AnyAlertHandler, alert: Alert, semaphore: asyncio.Semaphore
    ) -> None:
        name = handler_name(handler)
        async with semaphore:
            try:
                await asyncio.wait_for(self._invoke(handler, alert), self.timeout_seconds)
            except _HandlerBusy:
                with self._stats_lock:
                    self.failures[name] += 1
                    self.timeouts[name] += 1
                _logger.warning(
                    "alert handler %s skipped: its previous call has not returned "
                    "(config %s, threshold %g%%, %s)",
                    name,
                    alert.config_id,
                    alert.threshold_percent,
                    alert.state.value,
                )
            except asyncio.TimeoutError as exc:
                # wait_for's timeout chains a CancelledError; a handler's own TimeoutError does not
                own = not isinstance(exc.__cause__, asyncio.CancelledError)
                with self._stats_lock:
                    self.failures[name] += 1
                    if not own:
                        self.timeouts[name] += 1
                _logger.warning(
                    "alert handler %s %s (config %s, threshold %g%%, %s)",
                    name,
                    "raised TimeoutError"
                    if own
                    else f"timed out after {self.timeout_seconds:.3g}s",
                    alert.config_id,
                    alert.threshold_percent,
                    alert.state.value,
                    exc_info=own,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                with self._stats_lock:
                    self.failures[name] += 1
                _logger.exception(
                    "alert handler %s failed (config %s, threshold %g%%, %s)",
                    name,
                    alert.config_id,
                    alert.threshold_percent,
                    alert.state.value,
                )

    async def _invoke(self, handler: AnyAlertHandler, alert: Alert) -> None:
        method = getattr(handler, "handle_alert", None)
        if callable(method):
            target: Callable[..., Any] = method
            args: tuple[Any, ...] = (alert,)
        elif callable(handler):
            target = handler
            args = (alert.config_id, alert.quota)
        else:  # registration refuses these; a defensive check for mutated objects
            raise TypeError(f"alert handler {handler!r} is not callable")
        if _is_async(target):
            await target(*args)
            return
        result = await self._in_thread(handler, target, args)
        if inspect.isawaitable(result):
            await result

    def _in_thread(
        self, handler: object, target: Callable[..., Any], args: tuple[Any, ...]
    ) -> asyncio.Future[Any]:
        """Run ``target(*args)`` in a new daemon thread; a future for its result on this loop."""
        key = id(handler)
        with self._stats_lock:
            if key in self._busy:
                raise _HandlerBusy
            self._busy.add(key)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(error: BaseException | None, value: Any) -> None:
            if future.done():  # timed out and cancelled meanwhile
                return
            if error is not None:
                if not isinstance(error, Exception):  # SystemExit & co. must not stop the monitor
                    error = RuntimeError(f"handler raised {type(error).__name__}: {error}")
                future.set_exception(error)
            else:
                future.set_result(value)

        def work() -> None:
            error: BaseException | None = None
            value: Any = None
            try:
                value = target(*args)
            except BaseException as exc:  # delivered to the awaiting side, which logs it
                error = exc
            finally:
                with self._stats_lock:
                    self._busy.discard(key)
            try:
                loop.call_soon_threadsafe(settle, error, value)
            except RuntimeError:  # the loop closed while the handler ran: nobody is waiting
                pass

        threading.Thread(target=work, name="otel-llm-quota-handler", daemon=True).start()
        return future

    async def aclose_handlers(self, handlers: Iterable[AnyAlertHandler]) -> None:
        """Call ``aclose()`` on each handler that has one (HTTP clients, connections).

        Each gets the dispatch timeout; failures are logged, never raised: closing must finish.
        """
        for handler in handlers:
            closer = getattr(handler, "aclose", None)
            if not callable(closer):
                continue
            try:
                await asyncio.wait_for(closer(), self.timeout_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:
                _logger.warning(
                    "closing alert handler %s failed", handler_name(handler), exc_info=True
                )

    def reinit_after_fork(self) -> None:
        """In a forked child: the parent's handler threads did not survive the fork."""
        self._stats_lock = threading.Lock()
        self._busy = set()
