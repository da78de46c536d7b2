"""otel-llm-quota: watch LLM token quotas from OpenTelemetry data, alert before they run out.

The public API is re-exported here; everything else lives in ``_``-prefixed modules.
"""

from otel_llm_quota._handlers import AlertCallback, AlertHandler, NoOpAlertHandler
from otel_llm_quota._ledger import QuotaLedger
from otel_llm_quota._manager import LLMProviderManager
from otel_llm_quota._metrics import QuotaMetrics, instrument_metrics, quota_metric_views
from otel_llm_quota._models import Alert, AlertReason, AlertState, QuotaInfo, SpanRef
from otel_llm_quota._periods import PERIODS
from otel_llm_quota.prometheus import PrometheusEndpoint, start_prometheus_server
from otel_llm_quota.version import __version__

__all__ = [
    "Alert",
    "AlertCallback",
    "AlertHandler",
    "AlertReason",
    "AlertState",
    "LLMProviderManager",
    "NoOpAlertHandler",
    "PERIODS",
    "PrometheusEndpoint",
    "QuotaInfo",
    "QuotaLedger",
    "QuotaMetrics",
    "SpanRef",
    "__version__",
    "instrument_metrics",
    "quota_metric_views",
    "start_prometheus_server",
]
