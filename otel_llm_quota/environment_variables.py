"""Environment variables read by otel-llm-quota.

Every setting follows the same order: a constructor argument wins, else the environment variable,
else the documented default. A malformed value logs a warning and falls back to the default; it
never stops the application.
"""

from __future__ import annotations

from typing import Final

OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS: Final = "OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_ALERT_COOLDOWN_SECONDS

Seconds before an alert that is still firing is notified again. Default: ``3600``.
"""

OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS: Final = "OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_HANDLER_TIMEOUT_SECONDS

Seconds one alert-handler call may take before it is abandoned and counted as failed.
Default: ``10``.
"""

OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS: Final = "OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS"
"""
.. envvar:: OTEL_LLM_QUOTA_MONITOR_INTERVAL_SECONDS

Seconds between two monitor passes when ``start_monitoring`` is given no interval. The monitor
also wakes at once when usage crosses a threshold. Default: ``60``.
"""

OTEL_LLM_QUOTA_TIMEZONE: Final = "OTEL_LLM_QUOTA_TIMEZONE"
"""
.. envvar:: OTEL_LLM_QUOTA_TIMEZONE

IANA time zone (``Europe/Paris``) in which calendar periods (hour, day, week, month) start.
Default: ``UTC``.
"""

OTEL_LLM_QUOTA_SEND_RESOLVED: Final = "OTEL_LLM_QUOTA_SEND_RESOLVED"
"""
.. envvar:: OTEL_LLM_QUOTA_SEND_RESOLVED

``true`` or ``false``: whether handlers are told when an alert ends (period reset, raised limit).
Default: ``true``.
"""
