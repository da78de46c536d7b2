"""One alert per fleet: replicas that share a store agree on each notification by claiming it.

Every replica runs the same alert state machine (``_alerting``) on the same fleet-wide counts.
The alert state of a configuration (active, sent and held thresholds, in which window) lives in
the store as a versioned record. When a pass changes it, the replica writes its new state with
a compare-and-set on the version it started from:

* it **wins**: it alone dispatches the pass's notifications for that config;
* it **loses**: another replica changed the state first (and sends what that change called
  for); this one adopts the stored state, which already covers the notification.

So each notification (config, threshold, period, firing/repeat/resolved) is dispatched by
exactly one replica, and cooldowns and holds are fleet-wide: they are part of the record.

**A winner that dies before delivering.** The record lists the claimed notifications as
*pending*, each with a lease (``lease_seconds``, default 120 s or three handler timeouts). The
winner removes them once its handlers were called. A replica that sees a pending notification
whose lease ran out takes it over (another compare-and-set) and delivers it: at least once
across crashes, exactly once otherwise.

**A store that is down.** The replica delivers its notifications anyway (an alert is never
held back by an outage; other replicas may deliver the same one meanwhile) and writes its state
when the store is back.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from otel_llm_quota._ledger import QuotaLedger, _ConfigState
from otel_llm_quota._models import Alert, AlertReason, AlertState, Forecast, SpanRef
from otel_llm_quota.stores._base import AlertRecord

if TYPE_CHECKING:
    from otel_llm_quota.stores._flusher import StoreSync

__all__ = ["Change", "FleetAlerts", "encode"]

_logger = logging.getLogger(__name__)

Change = tuple[_ConfigState, str, list[Alert], int]
"""A config whose alert state a pass changed: (state, its encoded state before the pass, the
pass's notifications for it, the alert record version that state was evaluated from)."""

Won = tuple[_ConfigState, list[Alert], list[str]]
"""Notifications this replica claimed for one config, with their pending entries' ids."""


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _keys(values: dict[float, float] | None) -> dict[str, float]:
    return {} if not values else {repr(k): v for k, v in sorted(values.items())}


def encode(state: _ConfigState) -> str:
    """The alert state of ``state`` as the store keeps it (call under the ledger's lock)."""
    current = state.alert_generation == state.generation
    window = state.window()
    doc: dict[str, Any] = {
        "w": [window.start, window.epoch] if current else None,
        "ps": state.alert_period_start if math.isfinite(state.alert_period_start) else None,
        "a": _keys(state.active),
        "s": _keys(state.sent),
        "h": _keys(state.held),
        "l": state.last_alert_sent,
        "p": state.alert_pending or [],
        "lv": None if state.alert_levels is None else list(state.alert_levels),
    }
    ca = state.cost_alerts
    if ca is not None:  # the cost limit's alert state, in the same record
        doc["c"] = {
            "cur": ca.alert_generation == state.generation,
            "ps": ca.alert_period_start if math.isfinite(ca.alert_period_start) else None,
            "a": _keys(ca.active),
            "s": _keys(ca.sent),
            "h": _keys(ca.held),
            "lv": None if ca.alert_levels is None else list(ca.alert_levels),
        }
    if state.forecast is not None:  # [generation, fired at, resolved, period start]
        doc["f"] = state.forecast[1:4]
    if ca is not None and ca.forecast is not None:  # the cost limit's forecast, likewise
        doc["cf"] = ca.forecast[1:4]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _floats(values: Any) -> dict[float, float] | None:
    if not values:
        return None
    return {float(k): float(v) for k, v in values.items()}


def adopt(state: _ConfigState, record: AlertRecord, *, force: bool = False) -> bool:
    """Take the stored alert state (call under the lock); False if it is stale or unreadable.

    ``force``: the record is the store's current one (a lost compare-and-set answered it), so
    it replaces the local state even if its version is not newer."""
    if not force and record.version <= state.alert_version:
        return False
    if record.version == 0:  # the store has no record (it lost the config): ours stands
        state.alert_version = 0
        return False
    try:
        doc = json.loads(record.data)
        window = doc.get("w")
        active = _floats(doc.get("a"))
        sent = _floats(doc.get("s"))
        held = _floats(doc.get("h"))
        last = doc.get("l")
        pending = list(doc.get("p") or []) or None
        period_start = doc.get("ps")
        levels = doc.get("lv")
        levels = None if levels is None else tuple(int(v) for v in levels)
        cost = doc.get("c")
        if cost is not None:
            cost_levels = cost.get("lv")
            cost = (
                bool(cost.get("cur")),
                cost.get("ps"),
                _floats(cost.get("a")),
                _floats(cost.get("s")),
                _floats(cost.get("h")),
                None if cost_levels is None else tuple(int(v) for v in cost_levels),
            )
        forecast = _forecast(doc.get("f"))
        cost_forecast = _forecast(doc.get("cf"))
    except (ValueError, TypeError, AttributeError):
        _logger.warning("unreadable alert record for config %r; ignored", state.config_id)
        return False
    here = state.window()
    if window is not None and (int(window[0]), int(window[1])) > (here.start, here.epoch):
        return False  # written for a window this process has not reached yet: adopt it later
    state.active, state.sent, state.held = active, sent, held
    state.last_alert_sent = None if last is None else float(last)
    state.alert_pending = pending
    state.alert_levels = levels
    current = window is not None and (int(window[0]), int(window[1])) == (here.start, here.epoch)
    # A forecast belongs to this generation if the record is of this window, else to the last.
    generation = state.generation if current else state.generation - 1
    state.forecast = None if forecast is None else [generation, *forecast]
    if current:
        state.alert_generation = state.generation
        state.alert_period_start = state.period_start
    else:  # an older window's alerts: the next pass resolves them (once, fleet-wide)
        state.alert_generation = state.generation - 1
        state.alert_period_start = (
            float(period_start) if period_start is not None else state.period_start
        )
    state.alert_version = record.version
    state.arm()
    ca = state.cost_alerts
    if ca is not None and cost is not None:
        cur, cost_start, ca.active, ca.sent, ca.held, ca.alert_levels = cost
        if cur and current:
            ca.alert_generation = state.generation
            ca.alert_period_start = state.period_start
        else:
            ca.alert_generation = state.generation - 1
            ca.alert_period_start = (
                float(cost_start) if cost_start is not None else state.period_start
            )
        ca.arm()
    if ca is not None:
        ca.forecast = None if cost_forecast is None else [generation, *cost_forecast]
    return True


def _forecast(stored: Any) -> list[Any] | None:
    """A stored forecast state ``[fired at, resolved, period start]`` (None: none)."""
    if stored is None:
        return None
    return [float(stored[0]), bool(stored[1]), float(stored[2])]


def _pending_entry(alert: Alert, writer: str, until: float) -> dict[str, Any]:
    span = alert.span
    fc = alert.forecast
    return {
        "id": uuid.uuid4().hex,
        "by": writer,
        "u": until,
        "st": alert.state.value,
        "r": alert.reason.value,
        "t": alert.threshold_percent,
        "ts": list(alert.thresholds),
        "sa": _ts(alert.started_at),
        "ea": _ts(alert.ended_at),
        "ps": _ts(alert.period_start),
        "ra": _ts(alert.repeat_at),
        "sp": None if span is None else [span.trace_id, span.span_id, span.trace_flags],
        "k": alert.limit_kind,
        "fc": None if fc is None else [fc.projected_percent, fc.burn_rate, fc.time_to_exhaustion],
    }


def _utc(ts: Any) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(float(ts), timezone.utc)


def _alert_from(state: _ConfigState, entry: dict[str, Any]) -> Alert:
    from dataclasses import replace

    alert_state = AlertState(entry["st"])
    started = _utc(entry["sa"])
    assert started is not None
    span = entry.get("sp")
    kind = str(entry.get("k", "tokens"))
    fc = entry.get("fc")
    quota = replace(state.snapshot(state.last_updated), alert_state=alert_state)
    if kind == "cost":
        quota = replace(quota, cost_alert_threshold=None if fc else float(entry["t"]))
    else:
        quota = replace(quota, alert_threshold=None if fc else float(entry["t"]))
    return Alert(
        config_id=state.config_id,
        state=alert_state,
        reason=AlertReason(entry["r"]),
        threshold_percent=float(entry["t"]),
        thresholds=tuple(float(t) for t in entry["ts"]),
        quota=quota,
        started_at=started,
        ended_at=_utc(entry.get("ea")),
        period_start=_utc(entry.get("ps")),
        repeat_at=_utc(entry.get("ra")),
        span=None if not span else SpanRef(int(span[0]), int(span[1]), int(span[2])),
        limit_kind=kind,
        forecast=(
            None
            if not fc
            else Forecast(
                float(fc[0]),
                float(fc[1]),
                None if fc[2] is None else float(fc[2]),
                quota.reset_at,
            )
        ),
    )


class FleetAlerts:
    """The claim protocol of one manager (see module doc)."""

    def __init__(self, ledger: QuotaLedger, sync: StoreSync, lease_seconds: float) -> None:
        self._ledger = ledger
        self._sync = sync
        self.lease_seconds = lease_seconds
        self._uncommitted: dict[str, _ConfigState] = {}
        self._takeover: dict[str, _ConfigState] = {}
        self.claims_won = 0
        self.claims_lost = 0
        self.takeovers = 0
        self.unclaimed_deliveries = 0
        """Notifications delivered without a claim because the store was unreachable."""

    # -- called by the flusher with what a sync touched -------------------------------------------

    def on_synced(self, synced: list[tuple[_ConfigState, AlertRecord | None]]) -> bool:
        """Adopt newer alert records; note expired leases to take over. True if the monitor
        should run a pass."""
        lock = self._ledger.lock
        now = self._ledger.clock()
        wake = False
        with lock:
            for state, record in synced:
                if record is not None and adopt(state, record):
                    wake = True
                pending = state.alert_pending
                if pending and any(p["u"] <= now for p in pending):
                    self._takeover[state.config_id] = state
                    wake = True
        return wake

    # -- called by the monitor ------------------------------------------------------------------

    def candidates(self) -> list[Change]:
        """Changes to write that no pass produced: states the store could not take earlier."""
        out: list[Change] = []
        with self._ledger.lock:
            for state in self._uncommitted.values():
                out.append((state, "", [], state.alert_version))
            self._uncommitted.clear()
        return out

    async def claim(self, changes: Iterable[Change]) -> list[Won]:
        """Write each change with a compare-and-set on the version it was evaluated from;
        return the notifications this replica won, per config.

        Must not run concurrently with another ``claim`` of the same manager (the monitor
        serialises its passes in fleet mode). A lost compare-and-set adopts the stored state
        and asks for another pass (``retry``), which evaluates from it.
        """
        won: list[Won] = []
        lock = self._ledger.lock
        store = self._sync.store
        now = self._ledger.clock()
        until = now + self.lease_seconds
        writer = self._sync.writer
        changes = list(changes)
        takeovers = self._take_takeovers()
        for state, before, alerts, version in changes:
            with lock:
                ids: list[str] = []
                if alerts:
                    entries = [_pending_entry(a, writer, until) for a in alerts]
                    ids = [e["id"] for e in entries]
                    state.alert_pending = (state.alert_pending or []) + entries
                data = encode(state)
            if not alerts and data == before:
                continue
            try:
                ok = await self._write(state, version, data)
            except Exception as exc:
                if alerts:
                    self.unclaimed_deliveries += len(alerts)
                    _logger.warning(
                        "otel-llm-quota: could not claim the alert of config %r in %s (%s); "
                        "delivering it without a claim",
                        state.config_id,
                        store.url,
                        exc,
                    )
                    won.append((state, alerts, ids))
                with lock:
                    self._uncommitted[state.config_id] = state
                continue
            if not ok:
                # Another replica (or this one's flusher, adopting it) got there first: its state
                # stands, and covers what this pass would have sent.
                self.retry = True
            if ok:
                self.claims_won += 1
                if alerts:
                    won.append((state, alerts, ids))
            else:
                self.claims_lost += 1
        for state in takeovers:
            taken = await self._take_over(state, writer, until)
            if taken is not None:
                won.append(taken)
        return won

    retry = False
    """Set when a claim was lost: the monitor runs another pass soon, from the adopted state."""

    async def _write(self, state: _ConfigState, version: int, data: str) -> bool:
        """Compare-and-set ``state``'s alert record from ``version``: True (and the new version
        kept) if it won; False, with the stored state adopted, if another writer was first.
        Store errors propagate."""
        ok, record = await self._sync.run(
            self._sync.store.compare_and_set_alert(state.config_id, version, data)
        )
        with self._ledger.lock:
            if ok:
                state.alert_version = record.version
            else:
                adopt(state, record, force=True)
        return ok

    def _take_takeovers(self) -> list[_ConfigState]:
        with self._ledger.lock:
            states = list(self._takeover.values())
            self._takeover.clear()
        return states

    async def _take_over(self, state: _ConfigState, writer: str, until: float) -> Won | None:
        lock = self._ledger.lock
        now = self._ledger.clock()
        with lock:
            pending = state.alert_pending or []
            # Passes are serialised: any entry whose lease ran out is an orphan, this writer's
            # own included (a pass cut short by a crash of its loop).
            expired = [p for p in pending if p["u"] <= now]
            if not expired:
                return None
            for p in expired:
                p["by"], p["u"] = writer, until
            version = state.alert_version
            data = encode(state)
        try:
            if not await self._write(state, version, data):
                return None
        except Exception:
            return None  # retried when the next sync sees the lease still expired
        with lock:
            alerts = [_alert_from(state, p) for p in expired]
        self.takeovers += len(alerts)
        _logger.warning(
            "otel-llm-quota: delivering %d notification(s) of config %r claimed by a replica "
            "that did not confirm them",
            len(alerts),
            state.config_id,
        )
        return state, alerts, [p["id"] for p in expired]

    async def delivered(self, state: _ConfigState, ids: list[str]) -> None:
        """Confirm delivery: remove the pending entries ``ids`` of ``state`` (retrying a lost
        compare-and-set a few times)."""
        if not ids:
            return
        lock = self._ledger.lock
        done = set(ids)
        for _ in range(5):
            with lock:
                pending = state.alert_pending or []
                keep = [p for p in pending if p["id"] not in done]
                if len(keep) == len(pending):
                    return
                state.alert_pending = keep or None
                version = state.alert_version
                data = encode(state)
            try:
                if await self._write(state, version, data):
                    return
            except Exception:
                with lock:
                    self._uncommitted[state.config_id] = state
                return
