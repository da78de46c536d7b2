"""OTLP trace requests into quota usage, through the span processor's own ``on_end``.

The one core: every span of an ``ExportTraceServiceRequest`` becomes an ``OtlpSpan``, a view with
the fields ``QuotaSpanProcessor.on_end`` reads on its fast path, and is passed to that very
method of a processor built from the same configuration as the zero-code path. Usage extraction,
config resolution (attribute, rules, provider, default), response-id dedupe, the innermost-wins
marks and the framework pairing are therefore the processor's code, not a copy of it.

What differs from spans ended in-process, and why:

* **Only the attributes the conventions read are converted** (token counts, provider, model,
  response id, operation, detail and cache keys, ``error.type``, ``llm.quota.config_id``); the
  others are skipped by key without touching their values. Prompt and response content never
  leave the decoded request, which is dropped when the request has been counted. Resource
  attributes are converted only when config rules (or a resolver) need them.
* **Order.** In-process, a child span ends (and is seen) before its parent, which the
  innermost-wins rule relies on. Over OTLP, spans arrive in batches: within one request the
  spans are fed in end-time order (a stable sort), so a parent in the same request as its child
  is handled after it. A parent that arrives in an *earlier* request than its LLM child cannot
  be skipped any more: it was counted already. The SDK's ``BatchSpanProcessor`` and the
  Collector's batch processor export spans in the order they ended, so this happens only when a
  pipeline reorders spans across requests.
* **Redelivery.** An OTLP exporter retries a request whose answer it did not get, so a span can
  arrive twice. An LLM span whose (trace id, span id) was counted already is dropped before it
  reaches the processor (at most ``max_tracked_spans`` ids are remembered, two generations of
  half that, as the processor's tables). Replicas behind a load balancer do not share this table:
  a retry sent to another replica is counted again unless its response id gives it away.
* **Invalid spans** (a trace id that is not 16 bytes, a span id that is not 8 bytes, a parent id
  that is neither empty nor 8 bytes) are rejected and reported in ``partial_success``, as are
  spans the processor failed on (its ``errors``).
* ``on_start`` never runs: ``quota_config(...)`` blocks of the sending app are not seen (its
  ``llm.quota.config_id`` attribute is). The framework pairing starts with the first request
  holding a span of a framework scope (in-process: with that span's ``on_start``), before any
  span of that request is counted; until then it costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, cast

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import StatusCode

from otel_llm_quota._conventions import ERROR_TYPE_ATTRIBUTE, QUOTA_CONFIG_ID_ATTRIBUTE
from otel_llm_quota._processor import QuotaSpanProcessor

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PbScope
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["DEFAULT_MAX_TRACKED_SPANS", "IngestResult", "OtlpIngest", "OtlpSpan"]

DEFAULT_MAX_TRACKED_SPANS: Final = 100_000
"""(trace id, span id) pairs of counted LLM spans remembered to drop redelivered spans."""
_INTERN_SIZE: Final = 1024
"""Scopes and resources kept for reuse (identity makes the processor's caches hit)."""
_STATUS_ERROR: Final = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_by_end_time = itemgetter(3)
_SCALARS: Final = frozenset(
    {"string_value", "int_value", "bool_value", "double_value", "bytes_value"}
)


class _Resource:
    """What the processor reads of a resource: its attributes."""

    __slots__ = ("attributes",)

    def __init__(self, attributes: Mapping[str, Any]) -> None:
        self.attributes = attributes


_NO_RESOURCE: Final = _Resource(_EMPTY)


class _Parent(tuple[int]):
    """A parent span's context: ``span_id`` (an int) is all the processor reads of it."""

    __slots__ = ()
    span_id = property(itemgetter(0))


class _Status:
    __slots__ = ("_status_code",)

    def __init__(self, code: StatusCode) -> None:
        self._status_code = code


_ERROR_STATUS: Final = _Status(StatusCode.ERROR)
_UNSET_STATUS: Final = _Status(StatusCode.UNSET)
_new_tuple = tuple.__new__


class OtlpSpan(tuple[Any, ...]):
    """One OTLP span as ``QuotaSpanProcessor.on_end`` reads it (the fields of its fast path).

    A tuple (attributes, OTLP span, parent, end time, scope, status, resource) whose fields are
    read through C-level ``itemgetter`` properties: made in one C call per span, with no
    reference cycle (it is freed, with its attribute values, as soon as it is counted). It is its
    own ``_context``: ``span_id``, ``trace_id`` and ``trace_flags`` are read from the OTLP span
    only when asked (the processor reads the span id inside nested traces only, the ledger the
    ids only for the span whose usage crossed a threshold, which it keeps as a ``SpanRef``).
    """

    __slots__ = ()

    _attributes = property(itemgetter(0))
    _parent = property(itemgetter(2))
    _end_time = property(itemgetter(3))
    _instrumentation_scope = property(itemgetter(4))
    _status = property(itemgetter(5))
    resource = property(itemgetter(6))

    @property
    def _context(self) -> OtlpSpan:
        return self

    @property
    def span_id(self) -> int:
        return int.from_bytes(self[1].span_id, "big")

    @property
    def trace_id(self) -> int:
        return int.from_bytes(self[1].trace_id, "big")

    @property
    def trace_flags(self) -> int:
        return int(self[1].flags & 0xFF) or 1  # received, so sampled when unset

    @classmethod
    def of(
        cls,
        attributes: Mapping[str, Any],
        span: PbSpan,
        scope: InstrumentationScope | None,
        resource: _Resource,
    ) -> OtlpSpan:
        """The view of ``span`` (already checked: ids of the right lengths)."""
        parent = span.parent_span_id
        return _new_tuple(
            cls,
            (
                attributes,
                span,
                _new_tuple(_Parent, (int.from_bytes(parent, "big"),)) if parent else None,
                span.end_time_unix_nano,
                scope,
                _ERROR_STATUS if span.status.code == _STATUS_ERROR else _UNSET_STATUS,
                resource,
            ),
        )


class IngestResult:
    """What one request came to: spans seen, rejected (with why), and LLM spans redelivered."""

    __slots__ = ("message", "redelivered", "rejected", "spans")

    def __init__(self, spans: int, rejected: int, redelivered: int, message: str) -> None:
        self.spans = spans
        self.rejected = rejected
        self.redelivered = redelivered
        self.message = message


def _value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as the SDK would hold it (arrays as tuples; a key-value list, which
    the SDK cannot hold, as a dict of its scalar values)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(_scalar(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return {kv.key: _scalar(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def _scalar(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None or which in ("array_value", "kvlist_value"):
        return None  # nested: no convention reads it
    return getattr(value, which)


class OtlpIngest:
    """Feeds decoded ``ExportTraceServiceRequest`` messages to a ``QuotaSpanProcessor``.

    Thread-safe as the processor is (the redelivery table takes a lock of its own).
    """

    def __init__(
        self, processor: QuotaSpanProcessor, *, max_tracked_spans: int = DEFAULT_MAX_TRACKED_SPANS
    ) -> None:
        if type(max_tracked_spans) is not int or max_tracked_spans < 2:
            raise ValueError("max_tracked_spans must be an int >= 2")
        self._processor = processor
        conv = processor.conventions
        self._wanted = frozenset(
            conv.input_tokens
            + conv.output_tokens
            + conv.total_tokens
            + conv.provider
            + conv.model
            + conv.response_id
            + conv.detail_tokens
            + conv.cache_read_tokens  # the cost's cache breakdown (some are not detail keys)
            + conv.cache_write_tokens
            + conv.request_model
            + conv.operation
            + (ERROR_TYPE_ATTRIBUTE, QUOTA_CONFIG_ID_ATTRIBUTE)
        )
        self._trigger = processor._trigger_keys
        self._scopes: dict[tuple[str, str, str], InstrumentationScope] = {}
        self._resources: dict[bytes, _Resource] = {}
        self._half = max_tracked_spans // 2
        self._spans_new: dict[bytes, None] = {}
        self._spans_old: dict[bytes, None] = {}
        self._lock = threading.Lock()
        self._on_end = QuotaSpanProcessor.on_end  # the fast path, whatever the probe found

    @property
    def processor(self) -> QuotaSpanProcessor:
        """The processor the spans are counted by."""
        return self._processor

    def _scope(self, scope: PbScope) -> InstrumentationScope:
        key = (scope.name, scope.version, "")
        found = self._scopes.get(key)
        if found is None:
            if len(self._scopes) >= _INTERN_SIZE:
                self._scopes.clear()
            found = self._scopes[key] = InstrumentationScope(scope.name, scope.version or None)
        return found

    def _resource(self, resource: PbResource) -> _Resource:
        key = resource.SerializeToString(deterministic=True)
        found = self._resources.get(key)
        if found is None:
            if len(self._resources) >= _INTERN_SIZE:
                self._resources.clear()
            attributes = MappingProxyType({kv.key: _value(kv.value) for kv in resource.attributes})
            found = self._resources[key] = _Resource(attributes)
        return found

    def ingest(self, request: ExportTraceServiceRequest) -> IngestResult:
        """Count the LLM spans of ``request``; never raises for anything the request holds.

        One request at a time (a lock): the redelivery table and the end-time order are per
        request; the processor itself would take concurrent calls.
        """
        with self._lock:
            return self._ingest(request)

    def _ingest(self, request: ExportTraceServiceRequest) -> IngestResult:
        # Written out flat (one loop, locals, no call per attribute): this runs for every span.
        processor = self._processor
        wanted = self._wanted
        trigger = self._trigger
        scalars = _SCALARS
        resolving = processor._resolving
        frameworks = processor._framework_scopes
        new_tuple = _new_tuple  # OtlpSpan.of, inlined
        from_bytes = int.from_bytes
        error = _ERROR_STATUS
        unset = _UNSET_STATUS
        views: list[OtlpSpan] = []
        rejected = 0
        redelivered = 0
        spans = 0
        for resource_spans in request.resource_spans:
            resource = self._resource(resource_spans.resource) if resolving else _NO_RESOURCE
            for scope_spans in resource_spans.scope_spans:
                scope = self._scope(scope_spans.scope)
                if not processor._pairing and scope.name in frameworks:
                    # The first framework span: pairing starts with its request (in-process it
                    # starts with its on_start), before any span of the request is counted.
                    processor._pair_from_start()
                for span in scope_spans.spans:
                    spans += 1
                    trace_id = span.trace_id
                    span_id = span.span_id
                    parent_id = span.parent_span_id
                    if len(trace_id) != 16 or len(span_id) != 8 or len(parent_id) not in (0, 8):
                        rejected += 1
                        continue
                    attributes: dict[str, Any] = {}
                    for kv in span.attributes:
                        key = kv.key
                        if key in wanted:
                            value = kv.value
                            which = value.WhichOneof("value")
                            attributes[key] = (
                                getattr(value, which) if which in scalars else _value(value)
                            )
                    if attributes and not trigger.isdisjoint(attributes):
                        ids = trace_id + span_id
                        new = self._spans_new
                        if ids in new or ids in self._spans_old:
                            redelivered += 1
                            continue
                        new[ids] = None
                        if len(new) >= self._half:
                            self._spans_old, self._spans_new = new, {}
                    views.append(
                        new_tuple(
                            OtlpSpan,
                            (
                                attributes,
                                span,
                                new_tuple(_Parent, (from_bytes(parent_id, "big"),))
                                if parent_id
                                else None,
                                span.end_time_unix_nano,
                                scope,
                                error if span.status.code == _STATUS_ERROR else unset,
                                resource,
                            ),
                        )
                    )
        views.sort(key=_by_end_time)  # children (ending first) before their parents
        on_end = self._on_end
        errors = processor._errors
        for view in views:
            on_end(processor, cast("ReadableSpan", view))
        failed = processor._errors - errors
        message = ""
        if rejected:
            message = f"{rejected} spans with an invalid trace id, span id or parent span id"
        if failed > 0:
            rejected += failed
            message = (message + "; " if message else "") + f"{failed} spans could not be counted"
        return IngestResult(spans, rejected, redelivered, message)
