"""The metric names, attribute keys and event names otel-llm-quota emits, in one place.

Our own keys live under ``llm.quota.*``; the GenAI keys are spelled as the OpenTelemetry GenAI
semantic conventions define them, kept here as strings rather than imported from the incubating
semconv package (those constants have moved between packages).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTR_ALERT_FINGERPRINT",
    "ATTR_ALERT_REASON",
    "ATTR_ALERT_STATE",
    "ATTR_CONFIG_ID",
    "ATTR_COST_LIMIT",
    "ATTR_COST_USAGE",
    "ATTR_ERROR_TYPE",
    "ATTR_HANDLER_NAME",
    "ATTR_LIMIT",
    "ATTR_LIMIT_KIND",
    "ATTR_PERIOD_END",
    "ATTR_PROVIDER",
    "ATTR_REQUEST_OUTCOME",
    "ATTR_STORE_OPERATION",
    "ATTR_THRESHOLD",
    "ATTR_TOKEN_TYPE",
    "ATTR_USAGE",
    "ATTR_UTILIZATION",
    "EVENT_THRESHOLD",
    "METER_NAME",
    "METRIC_ALERTS",
    "METRIC_COST",
    "METRIC_COST_LIMIT",
    "METRIC_COST_TIME_TO_EXHAUSTION",
    "METRIC_COST_USAGE",
    "METRIC_HANDLER_DROPPED",
    "METRIC_HANDLER_FAILURES",
    "METRIC_LIMIT",
    "METRIC_OVERFLOW_RECORDS",
    "METRIC_REMAINING",
    "METRIC_REQUESTS",
    "METRIC_STORE_ERRORS",
    "METRIC_STORE_FLUSH_DURATION",
    "METRIC_STORE_PENDING",
    "METRIC_TIME_UNTIL_RESET",
    "METRIC_TOKENS",
    "METRIC_UNPRICED_REQUESTS",
    "METRIC_USAGE",
    "METRIC_UTILIZATION",
]

METER_NAME: Final = "otel_llm_quota"
"""Instrumentation scope of our meter and logger."""

# -- attributes ------------------------------------------------------------------------------------
ATTR_CONFIG_ID: Final = "llm.quota.config_id"
ATTR_PROVIDER: Final = "gen_ai.provider.name"
ATTR_TOKEN_TYPE: Final = "gen_ai.token.type"
ATTR_REQUEST_OUTCOME: Final = "llm.quota.request.outcome"
ATTR_THRESHOLD: Final = "llm.quota.threshold"
ATTR_ALERT_STATE: Final = "llm.quota.alert.state"
ATTR_ALERT_REASON: Final = "llm.quota.alert.reason"
ATTR_ALERT_FINGERPRINT: Final = "llm.quota.alert.fingerprint"
ATTR_HANDLER_NAME: Final = "llm.quota.handler.name"
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_USAGE: Final = "llm.quota.usage"
ATTR_LIMIT: Final = "llm.quota.limit"
ATTR_LIMIT_KIND: Final = "llm.quota.limit.kind"
ATTR_COST_USAGE: Final = "llm.quota.cost.usage"
"""The period's cost in USD (cost alerts)."""
ATTR_COST_LIMIT: Final = "llm.quota.cost.limit"
"""The cost limit in USD (cost alerts)."""
"""Which limit an alert is about: ``tokens`` or ``cost``."""
ATTR_UTILIZATION: Final = "llm.quota.utilization"
ATTR_PERIOD_END: Final = "llm.quota.period.end"
ATTR_STORE_OPERATION: Final = "llm.quota.store.operation"

# -- metrics ---------------------------------------------------------------------------------------
METRIC_USAGE: Final = "llm.quota.usage"
METRIC_LIMIT: Final = "llm.quota.limit"
METRIC_REMAINING: Final = "llm.quota.remaining"
METRIC_UTILIZATION: Final = "llm.quota.utilization"
METRIC_TOKENS: Final = "llm.quota.tokens"
METRIC_REQUESTS: Final = "llm.quota.requests"
METRIC_TIME_UNTIL_RESET: Final = "llm.quota.time_until_reset"
METRIC_TIME_TO_EXHAUSTION: Final = "llm.quota.time_to_exhaustion"
METRIC_ALERTS: Final = "llm.quota.alerts"
METRIC_HANDLER_FAILURES: Final = "llm.quota.handler.failures"
METRIC_STORE_PENDING: Final = "llm.quota.store.pending"
METRIC_STORE_ERRORS: Final = "llm.quota.store.errors"
METRIC_STORE_FLUSH_DURATION: Final = "llm.quota.store.flush.duration"
METRIC_HANDLER_DROPPED: Final = "llm.quota.handler.dropped"
METRIC_OVERFLOW_RECORDS: Final = "llm.quota.overflow.records"
METRIC_COST: Final = "llm.quota.cost"
METRIC_COST_USAGE: Final = "llm.quota.cost.usage"
METRIC_COST_LIMIT: Final = "llm.quota.cost.limit"
METRIC_COST_TIME_TO_EXHAUSTION: Final = "llm.quota.cost.time_to_exhaustion"
METRIC_UNPRICED_REQUESTS: Final = "llm.quota.requests.unpriced"

# -- events ----------------------------------------------------------------------------------------
EVENT_THRESHOLD: Final = "llm.quota.threshold"
"""``event_name`` of the log records the ``OTelLogEventHandler`` emits (firing and resolved)."""
