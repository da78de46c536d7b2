"""Alerts as Python ``logging`` records, for applications that already ship their logs."""

from __future__ import annotations

import logging

from otel_llm_quota._models import Alert
from otel_llm_quota.handlers._base import check_str
from otel_llm_quota.handlers._payload import alert_details, is_critical, summary

__all__ = ["LoggingAlertHandler"]


def _level(name: str, value: object) -> int:
    """A logging level: an int, or a level name such as ``"WARNING"`` (from a config file)."""
    if isinstance(value, str):
        level = logging.getLevelName(value.strip().upper())
        if not isinstance(level, int):
            raise ValueError(f"{name} must be a logging level such as 'WARNING'")
        return level
    if type(value) is not int:
        raise TypeError(f"{name} must be a logging level (int or name), not {type(value).__name__}")
    return value


_DEFAULT_LOGGER = "otel_llm_quota.alerts"


class LoggingAlertHandler:
    """Logs each alert: WARNING when firing, ERROR at or above 100 %, INFO when resolved.

    The message is one line (``summary``); the facts are in the record's ``extra`` as
    ``llm_quota_<field>`` attributes (``llm_quota_config_id``, ``llm_quota_state``,
    ``llm_quota_threshold_percent``, ``llm_quota_usage_tokens``, ``llm_quota_limit_tokens``,
    ``llm_quota_utilization``, ``llm_quota_period_end``, ``llm_quota_fingerprint``, ...), which
    JSON formatters and the OpenTelemetry logging bridge pick up.

    Args:
        logger: a ``logging.Logger`` or a logger name; default ``otel_llm_quota.alerts``.
        firing_level, critical_level, resolved_level: the levels used.
        name: the handler's name in logs and metrics.
    """

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        *,
        firing_level: int = logging.WARNING,
        critical_level: int = logging.ERROR,
        resolved_level: int = logging.INFO,
        name: str = "logging",
    ) -> None:
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or _DEFAULT_LOGGER)
        elif not isinstance(logger, logging.Logger):
            raise TypeError(
                f"logger must be a logging.Logger or a name, not {type(logger).__name__}"
            )
        self.logger = logger
        self.firing_level = _level("firing_level", firing_level)
        self.critical_level = _level("critical_level", critical_level)
        self.resolved_level = _level("resolved_level", resolved_level)
        self.name = check_str("name", name)

    def level_for(self, alert: Alert) -> int:
        """The level ``alert`` is logged at."""
        if not alert.is_firing:
            return self.resolved_level
        return self.critical_level if is_critical(alert) else self.firing_level

    def handle_alert(self, alert: Alert) -> None:
        """Log ``alert`` (synchronous: the manager runs it on its handler threads)."""
        extra = {f"llm_quota_{key}": value for key, value in alert_details(alert).items()}
        self.logger.log(self.level_for(alert), "%s", summary(alert), extra=extra)

    def __repr__(self) -> str:
        return f"LoggingAlertHandler(name={self.name!r}, logger={self.logger.name!r})"
