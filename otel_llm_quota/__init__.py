"""otel-llm-quota: watch LLM token quotas from OpenTelemetry data, alert before they run out.

The public API is re-exported here; everything else lives in ``_``-prefixed modules.
"""

from otel_llm_quota._config import ConfigError, QuotaSetup, load_config
from otel_llm_quota._context import current_quota_config, quota_config
from otel_llm_quota._conventions import DEFAULT_CONVENTIONS, Conventions
from otel_llm_quota._handlers import AlertCallback, AlertHandler, NoOpAlertHandler
from otel_llm_quota._ledger import QuotaLedger
from otel_llm_quota._manager import LLMProviderManager
from otel_llm_quota._metrics import QuotaMetrics, instrument_metrics, quota_metric_views
from otel_llm_quota._models import Alert, AlertReason, AlertState, Forecast, QuotaInfo, SpanRef
from otel_llm_quota._periods import PERIODS
from otel_llm_quota._processor import ProcessorStats, QuotaSpanProcessor
from otel_llm_quota._registration import get_manager, instrument
from otel_llm_quota._rules import ConfigRule, SpanUsage
from otel_llm_quota.prometheus import PrometheusEndpoint, start_prometheus_server
from otel_llm_quota.version import __version__

__all__ = [
    "Alert",
    "AlertCallback",
    "AlertHandler",
    "AlertReason",
    "AlertState",
    "ConfigError",
    "ConfigRule",
    "Conventions",
    "DEFAULT_CONVENTIONS",
    "Forecast",
    "LLMProviderManager",
    "NoOpAlertHandler",
    "PERIODS",
    "ProcessorStats",
    "PrometheusEndpoint",
    "QuotaInfo",
    "QuotaLedger",
    "QuotaMetrics",
    "QuotaSetup",
    "QuotaSpanProcessor",
    "SpanRef",
    "SpanUsage",
    "__version__",
    "current_quota_config",
    "get_manager",
    "instrument",
    "instrument_metrics",
    "load_config",
    "quota_config",
    "quota_metric_views",
    "start_prometheus_server",
]
