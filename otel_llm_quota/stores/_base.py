"""The store interface: what a shared, durable quota store keeps and the operations it offers.

A store holds, for every configuration, the state that all processes pointing at it share:

* its **config record** (provider, limit, thresholds, period, time zone, reset epoch): last
  write wins;
* its usage **per period window** (``Window``: the period start and the reset epoch), so that a
  period boundary or a reset is simply a new window, never a delete-then-increment race; old
  windows expire after two periods;
* its **lifetime** counters;
* its **alert record** (a version number and an opaque JSON document owned by the alert state
  machine), changed only by compare-and-set, which is how exactly one replica wins the right to
  send each notification (see ``_fleet``).

Usage reaches a store in ``FlushBatch``es built by the flusher thread. A batch carries an
idempotency key, ``(writer, seq)``: the store applies a batch of a writer only if its ``seq`` is
above the last one it applied for that writer and config, so a batch retried after a timeout (it
may or may not have been applied) is counted exactly once.

Every operation is ``async``: the flusher runs them on its own event loop, off the application's
threads. Implementations: ``MemoryStore`` (in-process), ``SQLiteStore``, ``RedisStore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "TOMBSTONE_SECONDS",
    "ZERO",
    "AlertRecord",
    "ConfigRecord",
    "ConfigSync",
    "Counts",
    "Delta",
    "FlushBatch",
    "QuotaStore",
    "StoreError",
    "Window",
    "add_counts",
    "sub_counts",
]

Counts = tuple[int, int, int, int, int, int, int]
"""Usage counters in a fixed order: ``(successes, failures, input, output, other, cost,
unpriced)``: requests, tokens, the cost of the priced requests in micro-USD and the number of
unpriced requests (see ``_pricing``). ``sum(c[2:5])`` is the total of tokens."""

ZERO: Counts = (0, 0, 0, 0, 0, 0, 0)

TOMBSTONE_SECONDS = 86_400
"""How long a store remembers that a config was deleted (see ``ConfigSync.deleted``)."""


def add_counts(a: Counts, b: Counts) -> Counts:
    """Element-wise ``a + b``."""
    return (
        a[0] + b[0],
        a[1] + b[1],
        a[2] + b[2],
        a[3] + b[3],
        a[4] + b[4],
        a[5] + b[5],
        a[6] + b[6],
    )


def sub_counts(a: Counts, b: Counts) -> Counts:
    """Element-wise ``a - b``."""
    return (
        a[0] - b[0],
        a[1] - b[1],
        a[2] - b[2],
        a[3] - b[3],
        a[4] - b[4],
        a[5] - b[5],
        a[6] - b[6],
    )


class StoreError(Exception):
    """A store operation failed (unreachable server, locked or unwritable file, bad data).

    Messages never contain passwords or key paths: a store names itself by its redacted URL.
    """


@dataclass(frozen=True, slots=True)
class Window:
    """One period window of one configuration: ``start`` (POSIX seconds, an int) and ``epoch``.

    ``epoch`` counts the explicit resets (``reset_quota_cache``, ``otel-llm-quota reset``) of the
    configuration: a reset moves every process to a new, empty window of the same period.
    ``ttl_seconds`` is how long the store keeps the window after its last write (two periods;
    ``None`` for a quota that never resets).
    """

    start: int
    epoch: int
    ttl_seconds: int | None = None

    @property
    def key(self) -> str:
        """The window's name in store keys and rows: ``"<start>:<epoch>"``."""
        return f"{self.start}:{self.epoch}"


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """A configuration's settings as every process shares them (last write wins)."""

    config_id: str
    provider: str | None
    limit: int | None
    thresholds: tuple[float, ...]
    period: str | None
    timezone: str
    updated_at: float
    """POSIX seconds of the write (for humans; the last write wins whatever its clock says)."""
    cost_limit: int | None = None
    """The cost limit in micro-USD (None: none)."""
    cost_thresholds: tuple[float, ...] = ()
    """The cost limit's thresholds (percent); empty without a cost limit."""
    parent: str | None = None
    """The config this one's usage also counts toward (nested budgets), or None."""


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The alert state of one configuration: ``data`` is the alert state machine's JSON."""

    version: int
    data: str


@dataclass(frozen=True, slots=True)
class Delta:
    """One configuration's usage to add: ``counts`` into ``window`` and into the lifetime."""

    config_id: str
    window: Window
    counts: Counts
    provider: str | None = None
    """Set on the first flush of a config created by usage (no config record yet)."""


@dataclass(frozen=True, slots=True)
class FlushBatch:
    """The deltas of one flush. ``(writer, seq)`` is its idempotency key (see module doc).

    A batch holds at most one delta per configuration: the idempotency mark is kept per
    (writer, config), so a store may apply or skip each delta on its own."""

    writer: str
    seq: int
    deltas: tuple[Delta, ...]


@dataclass(frozen=True, slots=True)
class ConfigSync:
    """What a store knows of one configuration: the answer to ``apply`` and ``read``.

    ``window_counts`` are the fleet-wide counts of ``window`` (the window the caller asked for,
    with the store's current reset epoch); ``record`` is None for a config created by usage that
    has no settings yet, and ``exists`` is False for a config the store does not know (never
    flushed, or deleted).
    """

    config_id: str
    exists: bool
    epoch: int
    provider: str | None
    window_counts: Counts
    lifetime: Counts
    record: ConfigRecord | None
    alert: AlertRecord | None
    deleted: bool = False
    """For a config the store does not know: True if ``delete`` removed it (the store keeps a
    tombstone for ``TOMBSTONE_SECONDS``), so processes that still have it drop it. A config
    neither known nor deleted was *lost* (a Redis node restarted empty): processes that had it
    send it their share again."""


@runtime_checkable
class QuotaStore(Protocol):
    """A shared, durable store of quota state. Every method may raise ``StoreError``.

    All methods are coroutines, called from one event loop (the flusher's) at a time; an
    implementation need not be safe to call from several loops at once.
    """

    @property
    def url(self) -> str:
        """The store's URL with any password redacted (safe to log)."""

    @property
    def shared(self) -> bool:
        """True if other processes may write to this store (alerts then need claims)."""

    async def instance_id(self) -> str:
        """A random id the store picks once and keeps (created by the first caller).

        When it changes, the store was emptied (a Redis restarted without persistence, a
        replaced file): the flusher then re-sends this process's share (``store_lost``)."""

    async def apply(self, batch: FlushBatch) -> list[ConfigSync]:
        """Add the batch's deltas (at most once per ``(writer, seq, config)``); return the
        fleet-wide state of each delta's config, in order, for the delta's window start."""

    async def read(self, wanted: Sequence[tuple[str, int]]) -> list[ConfigSync]:
        """The state of each ``(config_id, window_start)``, in order (``exists=False`` if
        unknown). The window is ``(window_start, the store's current epoch)``."""

    async def config_ids(self) -> list[str]:
        """Every configuration the store knows."""

    async def put_config(self, record: ConfigRecord) -> None:
        """Create or replace a configuration's settings."""

    async def reset(self, config_id: str) -> int:
        """Move ``config_id`` to a new reset epoch (an empty window); return the new epoch."""

    async def delete(self, config_id: str) -> bool:
        """Remove a configuration and everything the store keeps of it, leaving a tombstone
        (``ConfigSync.deleted``) for ``TOMBSTONE_SECONDS``; False if unknown. Later usage
        creates the config afresh (and lifts the tombstone)."""

    async def compare_and_set_alert(
        self, config_id: str, expected_version: int, data: str
    ) -> tuple[bool, AlertRecord]:
        """Replace the alert record if its version is ``expected_version`` (0: no record yet).

        Returns ``(True, new record)`` with version ``expected_version + 1`` when it won, or
        ``(False, current record)`` when another writer changed it first (``AlertRecord(0, "")``
        when there is no record and ``expected_version`` was not 0)."""

    async def aclose(self) -> None:
        """Release connections and files. Idempotent."""
