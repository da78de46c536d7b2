"""``otel-llm-quota serve``: an OTLP/HTTP trace receiver that counts LLM spans into quotas.

Needs the ``serve`` extra (aiohttp, opentelemetry-proto). The spans are counted by a
``QuotaSpanProcessor``'s own ``on_end`` (see ``_decode``), configured by the same config file and
``OTEL_LLM_QUOTA_*`` variables as the zero-code path; the HTTP side is in ``_app``, the limits in
``_limits``.
"""

from otel_llm_quota.serve._app import QuotaService, run_service
from otel_llm_quota.serve._decode import IngestResult, OtlpIngest, OtlpSpan
from otel_llm_quota.serve._limits import BodyError, Limits, decompress

__all__ = [
    "BodyError",
    "IngestResult",
    "Limits",
    "OtlpIngest",
    "OtlpSpan",
    "QuotaService",
    "decompress",
    "run_service",
]
