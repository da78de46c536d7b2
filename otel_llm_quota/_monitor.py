"""The asyncio monitor: periodic passes over the ledger, woken early by threshold crossings.

One pass evaluates the alert state machine (``_alerting``) and then dispatches the resulting
notifications (``_handlers``). Between passes the monitor waits on an ``asyncio.Event`` for at most
``interval`` seconds, less if a repeat or a period end is due sooner. ``record_usage`` on any thread
sets that event through ``loop.call_soon_threadsafe`` when usage crosses the next threshold, so an
alert is not late by a whole interval.

For applications without an event loop, ``MonitorThread`` runs the same monitor in a daemon thread
with its own loop.

The monitor outlives any failure of one pass (logged, retried next interval); handlers run in
their own queues (``_handlers``), so nothing they raise reaches it. Should the monitor end anyway,
``running`` turns False and the failure is logged. Stopping is bounded by one deadline.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from otel_llm_quota._alerting import evaluate_ledger
from otel_llm_quota._claims import FleetAlerts, encode
from otel_llm_quota._forecast import ForecastSettings
from otel_llm_quota._handlers import AnyAlertHandler, HandlerDispatcher
from otel_llm_quota._ledger import QuotaLedger
from otel_llm_quota._models import Alert

if TYPE_CHECKING:  # asyncio is imported where it runs: `import otel_llm_quota` need not load it
    import asyncio

__all__ = ["Monitor", "MonitorThread"]

_logger = logging.getLogger(__name__)

# The shortest wait between passes: keeps a misbehaving clock from turning the loop into a spin.
_MIN_WAIT_SECONDS = 0.001


class Monitor:
    """Runs monitor passes on the event loop it was started in."""

    def __init__(
        self,
        ledger: QuotaLedger,
        dispatcher: HandlerDispatcher,
        handlers: Callable[[], Sequence[AnyAlertHandler]],
        *,
        cooldown_seconds: float,
        send_resolved: bool,
        forecast: ForecastSettings | None = None,
    ) -> None:
        self._ledger = ledger
        self.forecast = forecast
        """Forecast alerts' settings (None: no forecasts)."""
        self._dispatcher = dispatcher
        self._handlers = handlers
        self.cooldown_seconds = cooldown_seconds
        self.send_resolved = send_resolved
        self._fleet_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.passes = 0
        """Completed passes (for tests and diagnostics)."""

    @property
    def running(self) -> bool:
        """True while the monitor task is alive (its loop not closed)."""
        task = self._task
        return task is not None and not task.done() and not task.get_loop().is_closed()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The monitor task, if started."""
        return self._task

    async def check(self) -> list[Alert]:
        """Run one pass now and deliver its notifications; return them.

        Safe beside a running monitor: each config is evaluated atomically under the ledger's lock,
        so two passes never notify the same change twice.
        """
        return await self._pass()

    async def _pass(self) -> list[Alert]:
        if self.fleet is not None:
            return await self._fleet_pass()
        return await self._pass_once()

    async def _pass_once(self) -> list[Alert]:
        fleet = self.fleet
        result = evaluate_ledger(
            self._ledger,
            self._ledger.clock(),
            self.cooldown_seconds,
            self.send_resolved,
            encoder=None if fleet is None else encode,
            forecast=self.forecast,
        )
        self._next_due = result.next_due
        if fleet is None:
            if result.alerts:
                await self._dispatcher.dispatch(self._handlers(), result.alerts)
            self.passes += 1
            return result.alerts
        # A shared store: dispatch only the notifications this replica claimed (see _claims).
        won = await fleet.claim([*result.changes, *fleet.candidates()])
        alerts = [alert for _, found, _ in won for alert in found]
        if alerts:
            await self._dispatcher.dispatch(self._handlers(), alerts)
        for state, _, ids in won:
            await fleet.delivered(state, ids)
        self.passes += 1
        return alerts

    async def _fleet_pass(self) -> list[Alert]:
        # Passes of one manager run one at a time in fleet mode, whatever loop or thread they
        # come from: a claim must start from the state its evaluation saw.
        import asyncio  # here: `import otel_llm_quota` need not load it

        lock = self._fleet_lock
        if not lock.acquire(blocking=False):
            acquired = asyncio.get_running_loop().run_in_executor(None, lock.acquire)
            try:
                await asyncio.shield(acquired)
            except asyncio.CancelledError:  # release what the worker thread will still get
                acquired.add_done_callback(lambda f: lock.release() if f.result() else None)
                raise
        try:
            fleet = self.fleet
            assert fleet is not None
            fleet.retry = False
            alerts = await self._pass_once()
            if fleet.retry:  # a claim was lost: evaluate again from the adopted state
                fleet.retry = False
                alerts += await self._pass_once()
            return alerts
        finally:
            lock.release()

    fleet: FleetAlerts | None = None
    """Set by the manager when it shares a store with other processes."""

    def wake(self) -> None:
        """Ask for a pass soon, from any thread."""
        self._wake_threadsafe()

    def start(self, interval: float) -> None:
        """Start the monitor task on the running loop (a second start only updates the interval)."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        self.interval = interval
        if self.running:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._event = asyncio.Event()
        self._ledger.set_wakeup(self._wake_threadsafe)
        self._task = loop.create_task(self._run(), name="otel-llm-quota-monitor")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Log a monitor that ended other than by ``stop()`` (``running`` is False from now)."""
        if task.cancelled():
            if not self._stopping:  # e.g. its loop shut down without stop_monitoring()
                _logger.info("otel-llm-quota monitor was cancelled: no more alerts are sent")
            return
        error = task.exception()
        if error is not None:
            _logger.error(
                "otel-llm-quota monitor died: no more alerts are sent",
                exc_info=(type(error), error, error.__traceback__),
            )

    def _wake_threadsafe(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    async def _run(self) -> None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        assert self._event is not None
        event = self._event
        while True:
            event.clear()
            stopping = self._stopping
            try:
                await self._pass()
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise  # this task is cancelled, or the app is told to stop: not ours to swallow
            except BaseException:  # the monitor must outlive any bug in one pass
                _logger.exception("otel-llm-quota monitor pass failed; retrying next interval")
                self._next_due = math.inf
            if stopping:
                return  # that was the final pass: what crossed before stop() is delivered
            if self._stopping:
                continue  # stop() came during the pass: one more (final) pass
            wait = self.interval
            if self._next_due != math.inf:
                wait = min(wait, max(self._next_due - self._ledger.clock(), _MIN_WAIT_SECONDS))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), wait)

    _next_due: float = math.inf
    _stopping: bool = False
    interval: float = 60.0

    def reinit_after_fork(self) -> None:
        """In a forked child: the parent's event loop and task do not run here."""
        self._fleet_lock = threading.Lock()  # a parent's pass may have held it
        self._task = None
        self._loop = None
        self._event = None
        self._stopping = False

    async def stop(self, timeout_seconds: float) -> None:
        """Stop the monitor gracefully within ``timeout_seconds``. Idempotent; call it on the loop
        the monitor runs on.

        A pass in progress finishes delivering its notifications, then one final pass delivers
        whatever crossed a threshold since (a flush). Should that not end in time, the task is
        cancelled (the notifications already queued stay in their handlers' queues).
        """
        import asyncio  # here: `import otel_llm_quota` need not load it

        task = self._task
        if task is None:
            return
        if task.get_loop().is_closed():  # its loop ended without stopping it: nothing runs
            self.reinit_after_fork()
            self._ledger.set_wakeup(None)
            return
        if task.get_loop() is not asyncio.get_running_loop():
            raise RuntimeError("the monitor runs on another event loop; stop it there")
        self._stopping = True
        if self._event is not None:
            self._event.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), max(timeout_seconds, 0.0))
        except asyncio.TimeoutError:
            _logger.warning(
                "otel-llm-quota monitor did not stop within %.3gs; cancelled", timeout_seconds
            )
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:  # already logged by _ended; nothing else to do at shutdown
            pass
        self._ledger.set_wakeup(None)
        self._task = None
        self._loop = None
        self._event = None
        self._stopping = False


class MonitorThread:
    """Runs a ``Monitor`` on a private event loop in a named daemon thread.

    ``on_exit(timeout_seconds)`` runs on that loop when the monitor ends (handlers' ``aclose()``
    close their connections on the loop they were used on).
    """

    def __init__(
        self, monitor: Monitor, on_exit: Callable[[float], Awaitable[None]] | None = None
    ) -> None:
        self._monitor = monitor
        self._on_exit = on_exit
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._deadline = math.inf

    @property
    def running(self) -> bool:
        """True while the thread and its monitor are alive."""
        return self._thread is not None and self._thread.is_alive() and self._monitor.running

    def start(self, interval: float) -> None:
        """Start the thread and return once its monitor runs. A second start is harmless."""
        if self.running:
            return
        if self._thread is not None and self._thread.is_alive():  # its monitor died: let it end
            self.stop(0.0)
        self._started.clear()
        self._deadline = math.inf
        self._thread = threading.Thread(
            target=self._main, args=(interval,), name="otel-llm-quota-monitor", daemon=True
        )
        self._thread.start()
        self._started.wait()

    def _remaining(self) -> float:
        return max(self._deadline - time.monotonic(), 0.0)

    def _main(self, interval: float) -> None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        async def run() -> None:
            import asyncio  # here: `import otel_llm_quota` need not load it

            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._monitor.start(interval)
            self._started.set()
            monitor = self._monitor.task
            assert monitor is not None
            stopping = asyncio.ensure_future(self._stop.wait())
            try:
                # The monitor logs its own death (Monitor._ended); the thread then ends too.
                await asyncio.wait({stopping, monitor}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                await self._monitor.stop(self._remaining())
                if self._on_exit is not None:
                    # Resources bound to this thread's loop (HTTP clients) close on it.
                    try:
                        await self._on_exit(self._remaining())
                    except Exception:
                        _logger.exception("otel-llm-quota monitor thread: cleanup failed")

        try:
            asyncio.run(run())
        except BaseException:  # a dying daemon thread must say why (else it dies silently)
            _logger.exception("otel-llm-quota monitor thread died: no more alerts are sent")
        finally:
            self._started.set()

    def stop(self, timeout_seconds: float | None = None) -> bool:
        """Ask the thread to stop and wait for it, at most ``timeout_seconds`` (the monitor's final
        pass and the handlers' ``aclose()`` share that deadline). True if it ended in time."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return True
        if timeout_seconds is not None:
            self._deadline = time.monotonic() + timeout_seconds
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        # A little beyond the deadline: the thread's own steps end at the deadline itself.
        thread.join(None if timeout_seconds is None else timeout_seconds + 1.0)
        if thread.is_alive():
            _logger.warning(
                "otel-llm-quota monitor thread did not stop within %.3gs; left behind (a daemon)",
                timeout_seconds,
            )
            return False
        self._thread = None
        self._loop = None
        self._stop = None
        return True
