"""Alerts as OpenTelemetry log events, linked to the span that crossed the threshold."""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, SeverityNumber, get_logger
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from otel_llm_quota import _names as n
from otel_llm_quota._models import Alert
from otel_llm_quota.handlers._base import check_str
from otel_llm_quota.handlers._payload import is_critical, rfc3339, summary
from otel_llm_quota.version import __version__

__all__ = ["OTelLogEventHandler"]


class OTelLogEventHandler:
    """Emits each alert as a log record through the OpenTelemetry Logs API.

    * ``event_name``: ``llm.quota.threshold`` (firing and resolved alike; see the state attribute);
    * severity: ``WARN`` for a firing warning threshold, ``ERROR`` for a threshold at or above
      100 % or usage at or above the limit, ``INFO`` when resolved;
    * attributes: ``llm.quota.config_id``, ``gen_ai.provider.name``, ``llm.quota.usage``,
      ``llm.quota.limit``, ``llm.quota.utilization``, ``llm.quota.threshold``,
      ``llm.quota.alert.state``, ``llm.quota.alert.reason``, ``llm.quota.period.end``,
      ``llm.quota.alert.fingerprint`` (unknown values are left out);
    * trace context: the span whose recorded usage crossed the threshold (``Alert.span``), so a
      backend links the alert to that LLM call; none otherwise (never the monitor's own context).

    Args:
        logger_provider: where to emit; default the global ``LoggerProvider``.
        event_name: the ``event_name`` of the records.
        name: the handler's name in logs and metrics.
    """

    def __init__(
        self,
        logger_provider: LoggerProvider | None = None,
        *,
        event_name: str = n.EVENT_THRESHOLD,
        name: str = "otel-log-event",
    ) -> None:
        self._logger = get_logger(n.METER_NAME, __version__, logger_provider=logger_provider)
        self.event_name = check_str("event_name", event_name)
        self.name = check_str("name", name)

    @staticmethod
    def severity(alert: Alert) -> tuple[SeverityNumber, str]:
        """The severity number and text of ``alert``'s record."""
        if not alert.is_firing:
            return SeverityNumber.INFO, "INFO"
        if is_critical(alert):
            return SeverityNumber.ERROR, "ERROR"
        return SeverityNumber.WARN, "WARN"

    @staticmethod
    def attributes(alert: Alert) -> dict[str, AttributeValue]:
        """The record's attributes."""
        quota = alert.quota
        attrs: dict[str, AttributeValue] = {
            n.ATTR_CONFIG_ID: alert.config_id,
            n.ATTR_USAGE: quota.total_tokens,
            n.ATTR_THRESHOLD: float(alert.threshold_percent),
            n.ATTR_ALERT_STATE: alert.state.value,
            n.ATTR_ALERT_REASON: alert.reason.value,
            n.ATTR_ALERT_FINGERPRINT: alert.fingerprint,
        }
        if quota.provider is not None:
            attrs[n.ATTR_PROVIDER] = quota.provider
        if quota.quota_limit is not None:
            attrs[n.ATTR_LIMIT] = quota.quota_limit
            attrs[n.ATTR_UTILIZATION] = quota.total_tokens / quota.quota_limit
        if quota.reset_at is not None:
            attrs[n.ATTR_PERIOD_END] = rfc3339(quota.reset_at)
        if alert.limit_kind == "cost":  # token alerts keep the attributes they always had
            attrs[n.ATTR_LIMIT_KIND] = "cost"
            attrs[n.ATTR_COST_USAGE] = quota.cost_usd
            limit = quota.cost_limit_usd
            if limit is not None:
                attrs[n.ATTR_COST_LIMIT] = limit
                attrs[n.ATTR_UTILIZATION] = quota.cost_microusd / (quota.cost_limit_microusd or 1)
        return attrs

    @staticmethod
    def _context(alert: Alert) -> Context:
        ref = alert.span
        if ref is None:
            return Context()  # an empty context: no trace, whatever the caller's context is
        span_context = trace.SpanContext(
            trace_id=ref.trace_id,
            span_id=ref.span_id,
            is_remote=False,
            trace_flags=trace.TraceFlags(ref.trace_flags & 0xFF),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), Context())

    def handle_alert(self, alert: Alert) -> None:
        """Emit ``alert`` (synchronous: an exporting processor may block, so the manager runs it
        on its handler threads, off the event loop)."""
        number, text = self.severity(alert)
        self._logger.emit(
            timestamp=time.time_ns(),
            context=self._context(alert),
            severity_number=number,
            severity_text=text,
            body=summary(alert),
            attributes=self.attributes(alert),
            event_name=self.event_name,
        )

    def __repr__(self) -> str:
        return f"OTelLogEventHandler(name={self.name!r}, event_name={self.event_name!r})"
