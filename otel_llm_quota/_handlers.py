"""Alert handlers: the plug-in interface, and their safe dispatch.

A handler is either

* a callable ``handler(config_id, quota)`` (the seed API), plain or ``async``; it learns what the
  notification is about from ``quota.alert_state`` and ``quota.alert_threshold``; or
* an object with a ``handle_alert(alert)`` method (plain or ``async``), the ``AlertHandler``
  protocol, which receives the full ``Alert`` (threshold, state, reason, fingerprint, span).

Dispatch never lets a handler hurt the monitor or the other handlers: each handler has its own
ordered, bounded queue, consumed by one daemon worker thread (sync handlers, never on the event
loop) or one task (async handlers); each call has a timeout, and every exception (of any kind)
or timeout is logged and counted. ``dispatch`` returns an awaitable that completes when every
handler has an outcome for every alert of the batch.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from otel_llm_quota._models import Alert, QuotaInfo

if TYPE_CHECKING:  # asyncio is imported where it runs: `import otel_llm_quota` need not load it
    import asyncio

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "DELIVERED",
    "DROPPED",
    "FAILED",
    "PENDING",
    "TIMED_OUT",
    "AlertCallback",
    "AlertHandler",
    "AnyAlertHandler",
    "Dispatch",
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


def _target(handler: object) -> tuple[Callable[..., Any], bool]:
    """The function to call (``handle_alert`` or the callable) and whether it takes the Alert."""
    method = getattr(handler, "handle_alert", None)
    if callable(method):
        return method, True
    if callable(handler):
        return handler, False
    # Registration refuses these; a defensive check for mutated objects.
    raise TypeError(f"alert handler {handler!r} is not callable")


def _call_args(takes_alert: bool, alert: Alert) -> tuple[Any, ...]:
    return (alert,) if takes_alert else (alert.config_id, alert.quota)


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


DELIVERED: Final = "delivered"
"""Outcome: the handler returned within the timeout."""
FAILED: Final = "failed"
"""Outcome: the handler raised (any exception, ``BaseException`` included)."""
TIMED_OUT: Final = "timed_out"
"""Outcome: the call ran longer than the handler timeout."""
DROPPED: Final = "dropped"
"""Outcome: the handler's queue was full and this, its oldest notification, was dropped; or the
event loop of the handler's consumer stopped during the call."""
PENDING: Final = "pending"
"""Outcome: still queued behind a call that exceeded its timeout (or whose consumer's event loop
stopped); it is delivered when the handler returns, but nobody waits for it."""


class Dispatch:
    """One ``dispatch`` call: an awaitable completed when every handler has an outcome for every
    alert of the batch. Its result counts the outcomes (``DELIVERED``, ``FAILED``, ...).

    Thread-safe: deliveries are settled from handler worker threads and other event loops.
    """

    __slots__ = ("_future", "_lock", "_loop", "_outcomes", "_remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self._loop = loop
        self._future: asyncio.Future[Counter[str]] = loop.create_future()
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._remaining = count
        if count == 0:
            self._future.set_result(self._outcomes)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the batch was dispatched from (and is awaited on)."""
        return self._loop

    def done(self) -> bool:
        """True once every delivery of the batch has an outcome."""
        return self._future.done()

    def __await__(self) -> Generator[Any, None, Counter[str]]:
        return self._future.__await__()

    def settle(self, outcome: str) -> None:
        """Record one delivery's outcome (each delivery settles exactly once)."""
        with self._lock:
            self._outcomes[outcome] += 1
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            try:
                self._loop.call_soon_threadsafe(self._finish)
            except RuntimeError:  # the loop closed: nobody waits for this batch any more
                pass

    def _finish(self) -> None:
        if not self._future.done():  # the waiter may have been cancelled
            self._future.set_result(Counter(self._outcomes))


class _Delivery:
    """One alert for one handler, in that handler's queue; ``alert`` None marks a flush."""

    __slots__ = ("alert", "batch")

    def __init__(self, alert: Alert | None, batch: Dispatch) -> None:
        self.alert = alert
        self.batch: Dispatch | None = batch

    def report(self, outcome: str) -> None:
        """Tell the batch (once); later reports of a released delivery are ignored."""
        batch, self.batch = self.batch, None
        if batch is not None:
            batch.settle(outcome)


class _Lane:
    """A handler's bounded, ordered delivery queue and its consumer (see subclasses).

    ``lock`` guards the queue and the consumer's state; it is never held across a handler call.
    """

    def __init__(self, dispatcher: HandlerDispatcher, handler: AnyAlertHandler) -> None:
        self.dispatcher = dispatcher
        self.handler = handler
        self.name = handler_name(handler)
        self.queue: deque[_Delivery] = deque()
        self.lock = threading.Condition(threading.Lock())

    def put(self, deliveries: list[_Delivery]) -> None:
        """Enqueue in order; a full queue drops its oldest delivery (counted, logged once)."""
        dropped = 0
        with self.lock:
            limit = self.dispatcher.queue_size
            for delivery in deliveries:
                if delivery.alert is not None and len(self.queue) >= limit:
                    oldest = self.queue.popleft()
                    oldest.report(DROPPED)
                    if oldest.alert is not None:  # a flush marker is no notification
                        dropped += 1
                self.queue.append(delivery)
                self._accepted(delivery)
            self._wake()
        if dropped:
            self.dispatcher._count_dropped(self.name, dropped)

    def _accepted(self, delivery: _Delivery) -> None:
        """Called under the lock for each new delivery."""

    def _wake(self) -> None:
        """Called under the lock after enqueueing: make the consumer run."""
        raise NotImplementedError

    def idle(self) -> bool:
        """True when nothing is queued or running."""
        raise NotImplementedError

    def stop(self) -> asyncio.Task[None] | None:
        """Let the consumer end once its queue is empty (a later ``put`` starts a new one);
        return the consumer task to await, if it runs on this thread's loop."""
        raise NotImplementedError


class _ThreadLane(_Lane):
    """A sync handler: one long-lived named daemon thread calls it, one delivery at a time.

    Python cannot stop a hung thread, so a call that exceeds the timeout is counted as a timeout
    when a timer on the waiting batch's loop fires; its batch, and every delivery queued behind
    it, stop being waited for (``PENDING``) and are delivered, late, once the call returns.
    """

    def __init__(self, dispatcher: HandlerDispatcher, handler: AnyAlertHandler) -> None:
        super().__init__(dispatcher, handler)
        self.thread: threading.Thread | None = None
        self.current: _Delivery | None = None
        self.call_id = 0
        self.started = 0.0
        self.armed = False
        self.overran = False
        self.closing = False

    def idle(self) -> bool:
        with self.lock:
            return not self.queue and self.current is None

    def stop(self) -> asyncio.Task[None] | None:
        with self.lock:
            self.closing = True
            self.lock.notify()
        return None

    def _wake(self) -> None:
        self.closing = False
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._work, name=f"otel-llm-quota-handler-{self.name}", daemon=True
            )
            self.thread.start()
        self.lock.notify()

    def _accepted(self, delivery: _Delivery) -> None:
        if self.current is None or delivery.batch is None:
            return
        if self.overran:  # stuck behind a call that already timed out: nobody should wait
            delivery.report(PENDING)
        elif not self.armed:  # the running call has no timer yet (its batch was released)
            self._arm(delivery.batch.loop, self.started + self.dispatcher.timeout_seconds)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Time the running call out at ``deadline`` (monotonic), on ``loop``."""
        call_id = self.call_id

        def schedule() -> None:
            loop.call_later(max(deadline - time.monotonic(), 0.0), self._expire, call_id)

        try:
            loop.call_soon_threadsafe(schedule)
        except RuntimeError:  # that loop closed: nobody waits on it
            return
        self.armed = True

    def _expire(self, call_id: int) -> None:
        with self.lock:
            if self.current is None or self.call_id != call_id or self.overran:
                return
            self.overran = True
            current = self.current
            for queued in self.queue:
                queued.report(PENDING)
        assert current.alert is not None  # flush markers are never called
        self.dispatcher._count_timeout(self.name, current.alert)
        current.report(TIMED_OUT)

    def _work(self) -> None:
        timeout = self.dispatcher.timeout_seconds
        while True:
            with self.lock:
                while not self.queue:
                    if self.closing:
                        self.thread = None  # the next put starts a new worker
                        return
                    self.lock.wait()
                delivery = self.queue.popleft()
                alert = delivery.alert
                if alert is None:  # a flush marker: everything before it has an outcome
                    delivery.report(DELIVERED)
                    continue
                self.current = delivery
                self.call_id += 1
                self.started = time.monotonic()
                self.armed = self.overran = False
                waiter = delivery.batch or next((d.batch for d in self.queue if d.batch), None)
                if waiter is not None:
                    self._arm(waiter.loop, self.started + timeout)
            error = self._call(alert)
            elapsed = time.monotonic() - self.started
            with self.lock:
                self.current = None
                overran = self.overran
                self.overran = False
            if overran:  # already counted and reported by the timer
                continue
            if error is not None:
                self.dispatcher._count_failure(self.name, alert, error)
                delivery.report(FAILED)
            elif elapsed > timeout:  # nobody's timer saw it (released batch), still a timeout
                self.dispatcher._count_timeout(self.name, alert)
                delivery.report(TIMED_OUT)
            else:
                delivery.report(DELIVERED)

    def _call(self, alert: Alert) -> BaseException | None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        try:
            target, takes_alert = _target(self.handler)
            result = target(*_call_args(takes_alert, alert))
            if inspect.isawaitable(result):  # a plain callable that returned a coroutine
                asyncio.run(_await(result))
        except BaseException as exc:  # SystemExit & co. included: a handler stops nothing
            return exc
        return None


class _TaskLane(_Lane):
    """An async handler: one consumer task on an event loop calls it, one delivery at a time.

    The consumer runs on the loop of the dispatch that created it (the monitor's); dispatches
    from other threads wake it thread-safely. If that loop stops, the next dispatch starts a
    new consumer on its own loop.
    """

    def __init__(self, dispatcher: HandlerDispatcher, handler: AnyAlertHandler) -> None:
        super().__init__(dispatcher, handler)
        self.target, self.takes_alert = _target(handler)
        self.consumer: asyncio.Task[None] | None = None
        self.event: asyncio.Event | None = None
        self.busy = False

    def idle(self) -> bool:
        with self.lock:
            return not self.queue and not self.busy

    def stop(self) -> asyncio.Task[None] | None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        with self.lock:
            consumer, self.consumer = self.consumer, None
        if consumer is None or consumer.done():
            return None
        loop = consumer.get_loop()
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is here:
            consumer.cancel()
            return consumer
        if loop.is_running():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: it is gone anyway
                loop.call_soon_threadsafe(consumer.cancel)
        return None

    def _wake(self) -> None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        consumer, event = self.consumer, self.event
        if consumer is not None and event is not None and not consumer.done():
            loop = consumer.get_loop()
            if loop.is_running():
                try:
                    loop.call_soon_threadsafe(event.set)
                    return
                except RuntimeError:  # closed meanwhile: start a new consumer below
                    pass
        loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.consumer = loop.create_task(
            self._consume(self.event), name=f"otel-llm-quota-handler-{self.name}"
        )

    async def _consume(self, event: asyncio.Event) -> None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        me = asyncio.current_task()
        delivery: _Delivery | None = None
        try:
            while True:
                with self.lock:
                    if self.consumer is not me:
                        return  # replaced by a consumer on a live loop
                    if self.queue:
                        delivery = self.queue.popleft()
                        self.busy = True
                    else:
                        delivery = None
                        event.clear()
                if delivery is None:
                    await event.wait()
                    continue
                alert = delivery.alert
                # None is a flush marker: everything before it has an outcome.
                outcome = DELIVERED if alert is None else await self._call(alert)
                with self.lock:
                    self.busy = False
                delivery.report(outcome)
                delivery = None
        except asyncio.CancelledError:
            # This consumer is cancelled (its loop is stopping): the call in progress is lost,
            # the queued deliveries wait for the next consumer, and nobody waits for them now.
            with self.lock:
                self.busy = False
                if self.consumer is me:
                    self.consumer = None
                for queued in self.queue:
                    queued.report(PENDING)
            if delivery is not None and delivery.alert is not None:
                self.dispatcher._count_interrupted(self.name, delivery.alert)
                delivery.report(DROPPED)
            raise

    async def _call(self, alert: Alert) -> str:
        """Call the handler in a task of its own, so that its exceptions (``CancelledError``,
        ``SystemExit`` included) are told apart from a cancellation of the consumer."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        args = _call_args(self.takes_alert, alert)

        async def guarded() -> BaseException | None:
            import asyncio  # here: `import otel_llm_quota` need not load it

            try:
                await self.target(*args)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # SystemExit & co.: must never leave the event loop
                return exc
            return None

        call = asyncio.get_running_loop().create_task(guarded())
        try:
            done, _ = await asyncio.wait({call}, timeout=self.dispatcher.timeout_seconds)
        except asyncio.CancelledError:  # this consumer is cancelled: so is the call
            call.cancel()
            raise
        if not done:
            call.cancel()
            call.add_done_callback(_retrieve)
            self.dispatcher._count_timeout(self.name, alert)
            return TIMED_OUT
        if call.cancelled():  # we did not cancel it: the handler raised CancelledError itself
            error: BaseException | None = asyncio.CancelledError("raised by the handler")
        else:
            error = call.result()
        if error is not None:
            self.dispatcher._count_failure(self.name, alert, error)
            return FAILED
        return DELIVERED


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Consume a timed-out call's late result, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


DEFAULT_QUEUE_SIZE: Final = 1000
"""Notifications a handler's queue holds before the oldest is dropped."""


class HandlerDispatcher:
    """Delivers alerts to handlers through one ordered, bounded queue per handler.

    A sync handler gets one long-lived daemon worker thread, an async handler one consumer task
    (on the loop of the monitor): each handler receives every notification in order, one call
    at a time, so a slow handler gets them late rather than some never, and a hung one only
    delays its own queue. Each call has a timeout; every exception (``BaseException`` included)
    and every timeout is logged and counted, never raised. A full queue drops its oldest
    notification, counted in ``dropped`` and logged once per handler.

    Args:
        timeout_seconds: how long one handler call may take.
        queue_size: notifications one handler's queue holds (default ``DEFAULT_QUEUE_SIZE``).
    """

    def __init__(self, timeout_seconds: float, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if type(queue_size) is not int or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, got {queue_size!r}")
        self.timeout_seconds = timeout_seconds
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._lanes: dict[int, _Lane] = {}
        self._warned_dropped: set[str] = set()
        self.failures: Counter[str] = Counter()
        """Failed calls (exception or timeout) per handler name."""
        self.timeouts: Counter[str] = Counter()
        """Calls that exceeded the timeout, per handler name (also counted in ``failures``)."""
        self.dropped: Counter[str] = Counter()
        """Notifications dropped (queue full) per handler name; they never reached the handler."""
        self.delivered: Counter[tuple[str, float, str]] = Counter()
        """Notifications dispatched, per (config id, threshold, state)."""

    def dispatch(self, handlers: Iterable[AnyAlertHandler], alerts: Sequence[Alert]) -> Dispatch:
        """Queue ``alerts``, in order, for every handler; call on an event loop.

        Returns at once a ``Dispatch``: await it to wait until every handler has an outcome for
        every alert (delivered, failed, timed out, dropped, or pending behind a call that
        exceeded its timeout); its result counts the outcomes. Alerts of one handler are
        delivered in the order given, so a resolved notification never overtakes the firing
        one it ends.
        """
        import asyncio  # here: `import otel_llm_quota` need not load it

        handlers = tuple(handlers)
        loop = asyncio.get_running_loop()
        with self._lock:
            for alert in alerts:
                self.delivered[(alert.config_id, alert.threshold_percent, alert.state.value)] += 1
            lanes = [self._lane(handler) for handler in handlers]
        batch = Dispatch(loop, len(lanes) * len(alerts))
        if alerts:
            for lane in lanes:
                lane.put([_Delivery(alert, batch) for alert in alerts])
        return batch

    def flush(self) -> Dispatch:
        """An awaitable completed once every notification queued so far, to every handler, has
        an outcome (like ``dispatch``; a marker queued behind them). Call on an event loop."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        loop = asyncio.get_running_loop()
        with self._lock:
            lanes = list(self._lanes.values())
        batch = Dispatch(loop, len(lanes))
        for lane in lanes:
            lane.put([_Delivery(None, batch)])
        return batch

    def _lane(self, handler: AnyAlertHandler) -> _Lane:
        # Lanes hold their handler, so an id is never reused while its lane exists.
        lane = self._lanes.get(id(handler))
        if lane is None:
            try:
                is_async = _is_async(_target(handler)[0])
            except TypeError:
                is_async = False  # fails, and is counted, when the worker calls it
            lane = (_TaskLane if is_async else _ThreadLane)(self, handler)
            self._lanes[id(handler)] = lane
        return lane

    def forget(self, handler: AnyAlertHandler) -> None:
        """Drop the lane of an unregistered handler once it is idle (its thread stays parked)."""
        with self._lock:
            lane = self._lanes.get(id(handler))
            if lane is not None and lane.handler is handler and lane.idle():
                del self._lanes[id(handler)]

    def idle(self) -> bool:
        """True when no handler has a notification queued or in progress."""
        with self._lock:
            lanes = list(self._lanes.values())
        return all(lane.idle() for lane in lanes)

    # -- accounting (called from handler threads and consumer tasks) --------------------------

    def _count_failure(self, name: str, alert: Alert, error: BaseException) -> None:
        with self._lock:
            self.failures[name] += 1
        _logger.error(
            "alert handler %s failed (config %s, threshold %g%%, %s)",
            name,
            alert.config_id,
            alert.threshold_percent,
            alert.state.value,
            exc_info=(type(error), error, error.__traceback__),
        )

    def _count_timeout(self, name: str, alert: Alert) -> None:
        with self._lock:
            self.failures[name] += 1
            self.timeouts[name] += 1
        _logger.warning(
            "alert handler %s timed out after %.3gs (config %s, threshold %g%%, %s)",
            name,
            self.timeout_seconds,
            alert.config_id,
            alert.threshold_percent,
            alert.state.value,
        )

    def _count_interrupted(self, name: str, alert: Alert) -> None:
        """A call cut short because its consumer's event loop stopped: counted as dropped."""
        with self._lock:
            self.dropped[name] += 1
        _logger.warning(
            "alert handler %s: delivery interrupted because its event loop stopped "
            "(config %s, threshold %g%%, %s); counted as dropped",
            name,
            alert.config_id,
            alert.threshold_percent,
            alert.state.value,
        )

    def _count_dropped(self, name: str, count: int) -> None:
        with self._lock:
            self.dropped[name] += count
            first = name not in self._warned_dropped
            self._warned_dropped.add(name)
        if first:
            _logger.warning(
                "alert handler %s cannot keep up: its queue of %d notifications is full, the "
                "oldest are dropped (counted in llm.quota.handler.dropped; logged once)",
                name,
                self.queue_size,
            )

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> list[asyncio.Task[None]]:
        """End the worker threads (once their queues are empty) and the consumer tasks; return
        the consumer tasks of this thread's loop, cancelled, for ``close`` to await.

        Queued notifications of a sync handler are still delivered by its daemon thread; a
        later ``dispatch`` starts new consumers.
        """
        with self._lock:
            lanes = list(self._lanes.values())
        return [task for task in (lane.stop() for lane in lanes) if task is not None]

    async def close(self) -> None:
        """``stop``, then wait for this loop's consumer tasks to end."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        tasks = self.stop()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose_handlers(
        self, handlers: Iterable[AnyAlertHandler], timeout_seconds: float | None = None
    ) -> None:
        """Call ``aclose()`` on every handler that has one (HTTP clients, connections), all at
        once, for at most ``timeout_seconds`` (default: the handler timeout) in all.

        Failures (any exception) are logged, never raised: closing must finish.
        """
        import asyncio  # here: `import otel_llm_quota` need not load it

        closers = [(handler, getattr(handler, "aclose", None)) for handler in handlers]
        calls = [(handler, closer) for handler, closer in closers if callable(closer)]
        if not calls:
            return
        limit = self.timeout_seconds if timeout_seconds is None else timeout_seconds

        async def close(closer: Callable[[], Awaitable[None]]) -> BaseException | None:
            import asyncio  # here: `import otel_llm_quota` need not load it

            try:
                await closer()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # SystemExit & co. included: closing must finish
                return exc
            return None

        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(close(closer)): handler for handler, closer in calls}
        done, pending = await asyncio.wait(tasks, timeout=max(limit, 0.0))
        for task in pending:
            task.cancel()
            task.add_done_callback(_retrieve)
            _logger.warning(
                "closing alert handler %s timed out after %.3gs", handler_name(tasks[task]), limit
            )
        for task in done:
            error = None if task.cancelled() else task.result()
            if task.cancelled():
                error = asyncio.CancelledError("raised by the handler's aclose()")
            if error is not None:
                _logger.warning(
                    "closing alert handler %s failed",
                    handler_name(tasks[task]),
                    exc_info=(type(error), error, error.__traceback__),
                )

    def reinit_after_fork(self) -> None:
        """In a forked child: the parent's worker threads and consumer tasks are gone, and the
        notifications queued in the parent are the parent's to deliver."""
        self._lock = threading.Lock()
        self._lanes = {}
