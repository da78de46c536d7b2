"""The flusher: keeps a ledger and a store in step, from its own thread, off the hot path.

Every ``flush_interval`` it takes what the ledger queued (per-config usage deltas, merged, and
changed settings), sends it as one ``FlushBatch`` and folds the store's answer (fleet totals)
back into the ledger; then it reads every other config, so that a record in one process shows in
every other within about two intervals. At most one batch is outstanding: a batch that failed or
timed out (it may have been applied) is retried, with the same idempotency key, before anything
new is taken, so a retry never counts twice and the buffer grows with the number of configs,
never with the number of calls. Failures are retried with capped exponential backoff; the first
is logged as a warning, the recovery at INFO.

All store I/O of a manager runs on this thread's event loop (``run``/``call``): the monitor's
alert claims and the manager's resets and deletes too, so the application's threads and loop
never wait on the store.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from otel_llm_quota._fork import reinit_after_fork
from otel_llm_quota.stores._base import (
    AlertRecord,
    ConfigRecord,
    ConfigSync,
    FlushBatch,
    QuotaStore,
)

__all__ = ["DEFAULT_FLUSH_INTERVAL_SECONDS", "StoreSync"]

_logger = logging.getLogger("otel_llm_quota.stores")

DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0
_MAX_BACKOFF_SECONDS = 30.0
_FLUSH_RETRY_SECONDS = 0.1

_T = TypeVar("_T")

if TYPE_CHECKING:  # the ledger imports this package's types: no import at run time
    import asyncio  # (imported where it runs: `import otel_llm_quota` need not load it)

    from otel_llm_quota._ledger import QuotaLedger, _ConfigState


class StoreSync:
    """Runs the flusher thread of one ledger and one store (see module doc).

    Args:
        ledger: the ledger to keep in step (it is switched to queueing with ``attach_store``).
        store: the store.
        flush_interval: seconds between two flushes.
        on_synced: called on the flusher thread with the states each sync touched (the alert
            layer adopts the alert records other replicas wrote); must not raise or block.
    """

    def __init__(
        self,
        ledger: QuotaLedger,
        store: QuotaStore,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_SECONDS,
        on_synced: Callable[[list[tuple[_ConfigState, AlertRecord | None]]], None] | None = None,
        reopen: Callable[[], QuotaStore] | None = None,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.flush_interval = flush_interval
        self._on_synced = on_synced
        self._reopen = reopen
        self.writer = uuid.uuid4().hex
        self._seq = 0
        self._outstanding: tuple[FlushBatch, list[ConfigRecord]] | None = None
        self._instance: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._started = threading.Event()
        self._first_sync = threading.Event()
        self._stopping = False
        self._waiters: list[concurrent.futures.Future[bool]] = []
        self._waiters_lock = threading.Lock()
        self._failing = False
        self._was_started = False
        self.errors: Counter[str] = Counter()
        """Failed store operations by name (``apply``, ``read``, ``put_config``, ...)."""
        self.last_success: float | None = None
        """POSIX time of the last fully successful sync."""
        self.last_flush_seconds: float | None = None
        """How long the last flush (apply + refresh) took."""
        self.flushes = 0
        """Successful syncs."""
        ledger.attach_store()
        reinit_after_fork(self._at_fork_reinit)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the flusher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, wait_seconds: float) -> bool:
        """Start the thread and wait up to ``wait_seconds`` for the first sync (the store's
        totals, limits and alert state). Returns True if it succeeded in time."""
        if self._thread is None:
            self._was_started = True
            self._started.clear()
            self._thread = threading.Thread(
                target=self._main, name="otel-llm-quota-flusher", daemon=True
            )
            self._thread.start()
            self._started.wait()
        return self._first_sync.wait(wait_seconds) and self._failing is False

    def stop(self, timeout_seconds: float) -> bool:
        """Flush what is pending, close the store and end the thread; True if it ended in time.

        Idempotent. A final flush that cannot reach the store gives up at the deadline: what it
        held is lost with the process (the docs say so).
        """
        thread, loop, wake = self._thread, self._loop, self._wake
        if thread is None:
            return True
        self._stopping = True
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass
        thread.join(timeout_seconds)
        if thread.is_alive():
            _logger.warning(
                "otel-llm-quota: the final flush to %s did not finish within %.3gs",
                self.store.url,
                timeout_seconds,
            )
            return False
        self._thread = None
        return True

    def _at_fork_reinit(self) -> None:
        # In a forked child: the thread is gone, and the usage counted before the fork is the
        # parent's to flush. The child flushes only what it counts itself, under its own id.
        self.writer = uuid.uuid4().hex
        self._seq = 0
        self._outstanding = None
        self._thread = None
        self._loop = None
        self._wake = None
        self._stopping = False
        self._waiters = []
        self._waiters_lock = threading.Lock()
        self._started = threading.Event()
        self._first_sync = threading.Event()
        self.ledger.after_fork_in_child()
        was_running = self._was_started
        self._was_started = False
        if self._reopen is not None:
            # Connections and file handles must not be shared with the parent.
            try:
                self.store = self._reopen()
            except Exception:
                _logger.exception("otel-llm-quota: re-opening %s after fork failed", self.store.url)
                return
        if was_running:
            self.start(0.0)  # the child flushes its own usage from now on

    # -- running work on the flusher's loop --------------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run ``coro`` on the flusher's event loop (where the store's connections live)."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        loop = self._loop
        if loop is None or loop.is_closed() or not self.running:
            coro.close()
            raise RuntimeError("the store's flusher is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    async def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Await ``coro`` run on the flusher's loop, from any event loop."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        return await asyncio.wrap_future(self.submit(coro))

    def call(self, coro: Coroutine[Any, Any, _T], timeout_seconds: float) -> _T:
        """Run ``coro`` on the flusher's loop and wait for it (for synchronous callers)."""
        return self.submit(coro).result(timeout_seconds)

    def request_flush(self) -> concurrent.futures.Future[bool]:
        """Ask for a sync now; the future is True once one succeeded after this call."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._waiters_lock:
            self._waiters.append(future)
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            future.set_result(False)
            return future
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:
            future.set_result(False)
        return future

    def flush(self, timeout_seconds: float) -> bool:
        """Sync now and wait; True once a sync succeeded, False if none did within the timeout.

        A failed sync is tried again (at most every ``_FLUSH_RETRY_SECONDS``) until the
        deadline: a store that just came back (a stale pooled connection fails first) or a
        server paused for a moment still counts as flushed in time."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                if self.request_flush().result(remaining):
                    return True
            except concurrent.futures.TimeoutError:
                return False
            if not self.running:
                return False
            pause = min(_FLUSH_RETRY_SECONDS, deadline - time.monotonic())
            if pause > 0:
                time.sleep(pause)  # between two attempts at a failing store

    @property
    def pending_configs(self) -> int:
        """Configs whose usage or settings wait to be flushed (or are in the unacknowledged
        batch)."""
        outstanding = self._outstanding
        extra = 0 if outstanding is None else len(outstanding[0].deltas) + len(outstanding[1])
        return self.ledger.pending_count() + extra

    # -- the thread --------------------------------------------------------------------------------

    def _main(self) -> None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        try:
            asyncio.run(self._run())
        except BaseException:  # never let the thread die silently
            _logger.exception("otel-llm-quota flusher thread failed")
        finally:
            self._started.set()
            self._first_sync.set()
            self._settle_waiters(False)

    async def _run(self) -> None:
        import asyncio  # here: `import otel_llm_quota` need not load it

        self._loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        self._started.set()
        failures = 0
        try:
            while True:
                stopping = self._stopping
                wake.clear()
                with self._waiters_lock:
                    waiters, self._waiters = self._waiters, []
                cycle_started = time.monotonic()
                # The final flush sends; refreshing the fleet's totals is for a reader left.
                ok = await self._cycle(refresh=not stopping)
                self._first_sync.set()
                for future in waiters:
                    if not future.done():
                        future.set_result(ok)
                if stopping:
                    # The final flush: a config crossing a period boundary sends its old window
                    # first and its new one in the next batch, so go on while work is left.
                    for _ in range(4):
                        if not ok or self.ledger.pending_count() == 0:
                            break
                        ok = await self._cycle(refresh=False)
                    return
                failures = 0 if ok else failures + 1
                # Fixed rate: a cycle starts every interval, however long the last one took
                # (so a record is in every other process's view within two intervals), with a
                # pause of a tenth of it at least, so a slow store never gets cycles back to back.
                elapsed = time.monotonic() - cycle_started
                delay = max(self.flush_interval - elapsed, self.flush_interval / 10)
                if failures:
                    delay = min(self.flush_interval * 2**failures, _MAX_BACKOFF_SECONDS)
                    delay *= random.uniform(0.5, 1.0)
                try:
                    await asyncio.wait_for(wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            try:
                await self.store.aclose()
            except Exception:
                _logger.debug("closing %s failed", self.store.url, exc_info=True)

    def _settle_waiters(self, ok: bool) -> None:
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(ok)

    async def _cycle(self, refresh: bool = True) -> bool:
        """Send what is pending (settings, then deltas) and, if ``refresh``, read every other
        config's fleet state (and the configs new in the store); True if the store answered."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        started = time.perf_counter()
        op = "instance_id"
        try:
            store = self.store
            ledger = self.ledger
            instance = await store.instance_id()
            if self._instance is not None and instance != self._instance:
                _logger.warning(
                    "otel-llm-quota: the store %s was emptied; re-sending this process's usage "
                    "of the current periods and its settings",
                    store.url,
                )
                ledger.store_lost()
                self._outstanding = None
            self._instance = instance
            if self._outstanding is None:
                deltas, records = ledger.take_deltas()
                if deltas or records:
                    self._seq += 1
                    self._outstanding = (FlushBatch(self.writer, self._seq, tuple(deltas)), records)
            touched: list[tuple[_ConfigState, AlertRecord | None]] = []
            flushed: set[str] = set()
            outstanding = self._outstanding
            if outstanding is not None:
                batch, records = outstanding
                op = "put_config"
                for record in records:
                    await store.put_config(record)
                op = "apply"
                syncs = await store.apply(batch) if batch.deltas else []
                self._outstanding = None
                starts = [d.window.start for d in batch.deltas]
                touched += self._fold(zip(syncs, starts, strict=True))
                flushed = {d.config_id for d in batch.deltas}
            op = "read"
            targets = (
                [] if not refresh else [t for t in ledger.sync_targets() if t[0] not in flushed]
            )
            known = {t[0] for t in targets} | flushed
            new_ids = (
                [] if not refresh else [cid for cid in await store.config_ids() if cid not in known]
            )
            # A config new here is read at the window a config of the default period has now
            # (its period is in the store's record, read by this very read): the ones whose
            # period turns out otherwise are read again below, the others are done.
            guess = ledger.default_window_start() if new_ids else 0
            targets += [(cid, guess) for cid in new_ids]
            if targets:
                syncs = await store.read(targets)
                touched += self._fold(zip(syncs, [t[1] for t in targets], strict=True))
            if new_ids:  # created here by that read: read again those at another window
                wanted = set(new_ids)
                again = [t for t in ledger.sync_targets() if t[0] in wanted and t[1] != guess]
                if again:
                    syncs = await store.read(again)
                    touched += self._fold(zip(syncs, [t[1] for t in again], strict=True))
            if touched and self._on_synced is not None:
                self._on_synced(touched)
        except (Exception, asyncio.CancelledError) as exc:
            # A store's CancelledError (or any error) must not end the flusher: count, retry.
            if isinstance(exc, asyncio.CancelledError) and self._cancelled():
                raise
            self.errors[op] += 1
            if not self._failing:
                self._failing = True
                _logger.warning(
                    "otel-llm-quota: store %s failed (%s: %s); counting goes on in memory and "
                    "the flush is retried",
                    self.store.url,
                    op,
                    exc,
                )
            return False
        self.flushes += 1
        self.last_success = self.ledger.clock()
        self.last_flush_seconds = time.perf_counter() - started
        if self._failing:
            self._failing = False
            _logger.info("otel-llm-quota: store %s reachable again", self.store.url)
        return True

    @staticmethod
    def _cancelled() -> bool:
        """Whether the flusher's own task is being cancelled (not a store's stray error)."""
        import asyncio  # here: `import otel_llm_quota` need not load it

        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        return bool(cancelling()) if callable(cancelling) else False

    def _fold(
        self, pairs: Iterable[tuple[ConfigSync, int]]
    ) -> list[tuple[_ConfigState, AlertRecord | None]]:
        return self.ledger.apply_syncs(pairs)
