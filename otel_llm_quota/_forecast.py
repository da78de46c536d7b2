"""The burn-rate estimator behind forecast alerts and ``time_to_exhaustion``.

Pure functions over numbers, no state: the monitor keeps the samples (``_ConfigState.samples``,
never touched by the hot path) and the alert state machine (``_alerting``) decides with these.

**The estimator.** The monitor samples each limited config's period total at most
``MAX_SAMPLES`` times per window of ``W`` seconds. The total was 0 at the start of the period,
which is a sample too. At time ``now`` with total ``used``:

1. the *baseline* ``a`` is the newest sample at least ``W`` old (else the oldest one: less data);
2. the window ``[a.t, now]`` is cut at its middle: ``m`` is the newest sample in its first half;
3. the burn rate is the **slower of the two halves**: ``min((m.total - a.total) / (m.t - a.t),
   (used - m.total) / (now - m.t))`` (one piece when no sample lies in the first half).

So a pace must be sustained over the whole window to count: a single burst lies in one half
and the other half's (lower) rate wins, and a pace that slows shows at once in the second half.
The projection at the reset is ``used + rate * (reset_at - now)``; the time to exhaustion is
``(limit - used) / rate``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_LEAD_FRACTION",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_RESOLVE_PERCENT",
    "DEFAULT_WINDOW_FRACTION",
    "ForecastSettings",
    "MAX_SAMPLES",
    "add_sample",
    "burn_rate",
    "window_for",
]

DEFAULT_WINDOW_FRACTION: Final = 0.1
"""The default window: a tenth of the period (3 days of a 30-day month, 6 minutes of an hour)."""
_NO_PERIOD_WINDOW: Final = 86_400.0
"""The default window of a quota that never resets (no period to take a tenth of)."""
MAX_SAMPLES: Final = 8
"""Samples kept per window at most (older ones than the baseline are dropped)."""


DEFAULT_LEAD_FRACTION: Final = 0.05
"""The default minimum lead time: a twentieth of the period (1.5 days of a month)."""
DEFAULT_MIN_SAMPLES: Final = 4
"""Samples (the window's start included) a forecast needs at least, beside a full window."""
DEFAULT_RESOLVE_PERCENT: Final = 90.0
"""A firing forecast resolves when the projection falls below this (hysteresis: a projection
hovering around 100 % does not flap)."""


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """The monitor's forecast knobs (``LLMProviderManager(forecast_*=...)``, env vars, the
    config file's ``monitor:`` section)."""

    enabled: bool = True
    window_seconds: float | None = None
    """The estimator's window ``W`` (None: a tenth of each config's period)."""
    min_lead_seconds: float | None = None
    """Alert only if the limit is that far away at least (None: a twentieth of the period)."""
    min_samples: int = DEFAULT_MIN_SAMPLES
    resolve_percent: float = DEFAULT_RESOLVE_PERCENT

    def lead_for(self, period_start: float, period_end: float) -> float:
        """The minimum lead time in seconds for a config with this period."""
        if self.min_lead_seconds is not None:
            return self.min_lead_seconds
        if not math.isfinite(period_end):
            return 0.0
        return (period_end - period_start) * DEFAULT_LEAD_FRACTION


def window_for(period_start: float, period_end: float, window: float | None) -> float:
    """The estimator's window in seconds: ``window`` if given, else a tenth of the period."""
    if window is not None:
        return window
    if not math.isfinite(period_end):
        return _NO_PERIOD_WINDOW
    return max((period_end - period_start) * DEFAULT_WINDOW_FRACTION, 1.0)


def burn_rate(
    samples: Sequence[tuple[float, int]] | None,
    period_start: float,
    now: float,
    used: int,
    window: float,
) -> float | None:
    """Tokens per second at ``now`` by the slower-half estimator (module doc), or None when no
    time has passed since the oldest sample. ``samples`` are ``(time, total)`` in time order,
    all of the current window, the first one the window's start (the monitor begins them with
    ``(period_start, 0)``); without samples the period start (total 0) is the only one, and the
    estimate is the period's average rate."""
    if not samples:
        if not math.isfinite(period_start) or now <= period_start:
            return None
        return max(used, 0) / (now - period_start)
    # A handful of samples (at most MAX_SAMPLES + 1), in time order: two short scans. A sample
    # taken at ``now`` is never the baseline nor the middle one (both lie before ``now``).
    cutoff = now - window
    count = len(samples)
    base = 0
    i = 1
    while i < count and samples[i][0] <= cutoff:
        base = i
        i += 1
    a_t, a_total = samples[base]
    span = now - a_t
    if span <= 0:
        return None
    middle = a_t + span / 2
    mid: tuple[float, int] | None = None
    i = base + 1
    while i < count and samples[i][0] <= middle:
        mid = samples[i]
        i += 1
    if mid is None:
        return max(used - a_total, 0) / span
    first = max(mid[1] - a_total, 0) / (mid[0] - a_t)
    second = max(used - mid[1], 0) / (now - mid[0])
    return first if first < second else second


def add_sample(
    samples: list[tuple[float, int]], now: float, used: int, window: float
) -> list[tuple[float, int]]:
    """Append ``(now, used)`` unless the last sample is less than ``window / MAX_SAMPLES`` old,
    and drop the samples older than the newest one at least ``window`` old (the baseline)."""
    if samples and now - samples[-1][0] < window / MAX_SAMPLES:
        return samples
    samples.append((now, used))
    cutoff = now - window
    keep = 0
    for i, (t, _) in enumerate(samples):
        if t <= cutoff:
            keep = i
        else:
            break
    if keep:
        del samples[:keep]
    return samples
