"""``QuotaSpanProcessor``: turns the LLM spans an app already produces into quota usage.

It runs on the thread that ends every span of the application, so ``on_end`` never raises, never
blocks on I/O and, for a span without token usage, costs one set-disjointness test over the span's
attribute keys. For an LLM span it reads a handful of attributes, decides which configuration the
span belongs to, makes sure the same tokens are not counted twice, and calls the ledger's
synchronous ``record_checked`` (``record_usage`` without re-checking what was checked here).

Counting once:

* **by response id.** Two spans carrying the same ``gen_ai.response.id`` describe one response
  (the ``anthropic`` SDK's own span and OpenLLMetry's span, which sit in separate traces): the
  first one to end is counted, later ones are duplicates. Between half and all of the last
  ``max_tracked_responses`` response ids are remembered (two generations of half that size).
* **framework spans without a response id.** A framework's instrumentation (OpenLLMetry's
  LangChain) repeats a call's usage on its own span, in another trace than the provider-level span
  (openai-v2's) and, for a streamed call, without the response id. Such a span (its scope is in
  ``Conventions.framework_scopes``, it has usage and no response id) is paired with a provider
  span (another scope, with a response id) of the same provider, request model and input/output
  token counts that ended within ``FRAMEWORK_MATCH_SECONDS``: whichever ends second is not
  counted. Each provider span pairs with at most one framework span. The pairing starts with the
  first framework span's ``on_start`` (before it, no span is remembered for it).
* **innermost wins within a trace.** When a span with usage ends, its parent is marked; a marked
  span is not counted (a framework's outer span repeating the inner span's usage) and passes the
  mark to its own parent, so any ancestor is skipped too. Children end before their parents, so
  the innermost span is the one that counts. At most ``max_tracked_responses`` marks are kept,
  the same way.

Long response ids (over 64 characters) are remembered by a 16-byte BLAKE2b digest, so the
tables stay small whatever the ids' size (20 KB ids would otherwise be kept whole).

Fast path and portable path: ``on_end`` reads a few SDK internals (``span._attributes._dict``,
``span._status._status_code``, ``_context``, ``_parent``, ``_instrumentation_scope``,
``_end_time``) because the
public properties cost a Python-level call each. At construction the processor ends one probe span
on a private ``TracerProvider`` and checks that those internals say what the public API says; if
an SDK release renamed one, it logs one warning and reads every span through the public API
instead (slower, same results), rather than failing on every span.

One core for in-process and OTLP spans: ``otel-llm-quota serve`` (``otel_llm_quota.serve``)
turns each span it receives into a span view with the same fields the fast path reads (plain
``dict`` attributes, ``_context``, ``_parent``, ``_status._status_code``, ``_end_time``,
``_instrumentation_scope``, ``resource``) and passes it to ``QuotaSpanProcessor.on_end`` of its own
processor: usage extraction, config resolution, the dedupe tables and the framework pairing are
this very code, so the two paths cannot drift apart. Such spans never pass through ``on_start``:
the service calls ``_pair_from_start()`` when a request first holds a framework span instead.

Bad values (a token count that is a string, float, bool, negative or absurdly large; a config id
that is not a string) are skipped, never guessed at; each skip is counted in ``stats`` and in the
``llm.quota.processor.skipped_values`` counter, and logged at debug level.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, cast

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Status, StatusCode

from otel_llm_quota._context import QUOTA_CONFIG_CONTEXT_KEY, ContextUse
from otel_llm_quota._conventions import (
    DEFAULT_CONVENTIONS,
    ERROR_TYPE_ATTRIBUTE,
    QUOTA_CONFIG_ID_ATTRIBUTE,
    Conventions,
)
from otel_llm_quota._fork import reinit_after_fork
from otel_llm_quota._ledger import QuotaLedger
from otel_llm_quota._manager import LLMProviderManager
from otel_llm_quota._rules import (
    ConfigResolver,
    ConfigRule,
    SpanUsage,
    attribute_keys,
    first_rule,
)
from otel_llm_quota._validation import MAX_CONFIG_ID_LENGTH, check_config_id
from otel_llm_quota.version import __version__

__all__ = ["ProcessorStats", "QuotaSpanProcessor"]

_logger = logging.getLogger(__name__)

DEFAULT_CONFIG_ID: Final = "unknown"
"""The config of LLM spans whose provider is unknown and that no rule or resolver placed."""
DEFAULT_MAX_TRACKED_RESPONSES: Final = 10_000
MAX_TOKENS_PER_SPAN: Final = 10**12
"""A token count above this on one span is a bug in the instrumentation, not usage: skipped."""
_RULE_CACHE_SIZE: Final = 1024
_ERROR: Final = StatusCode.ERROR
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_UNSEEN: Final = object()
_Scopes = InstrumentationScope | None | frozenset[InstrumentationScope | None]
FRAMEWORK_MATCH_SECONDS: Final = 60.0
"""How far apart the end times of a framework span and the provider span it repeats may be."""
_FRAMEWORK_MATCH_NS: Final = int(FRAMEWORK_MATCH_SECONDS * 1e9)
_MatchKey = tuple[str | bytes | None, str | bytes | None, int | None, int | None]
_MAX_KEPT_ID_CHARS: Final = 64
"""Response ids longer than this are remembered by their digest (see ``_id_key``)."""


@dataclass(frozen=True, slots=True)
class ProcessorStats:
    """What the processor did since it was created (a snapshot)."""

    counted_spans: int
    """Spans whose usage (or failure) was recorded."""
    duplicate_spans: int
    """Spans not counted: same response id as a counted span, or an ancestor of one."""
    skipped_values: int
    """Attribute values ignored because of their type or range."""
    errors: int
    """Failures inside the processor: a resolver that raised (the span then falls back to its
    provider) or a span that could not be recorded; logged at debug. (A blank config id
    attribute or a provider name unusable as an id is not an error: the span falls back along
    the resolution order.)"""


class QuotaSpanProcessor(SpanProcessor):
    """An SDK ``SpanProcessor`` that records the token usage of LLM spans in a quota ledger.

    ``tracer_provider.add_span_processor(QuotaSpanProcessor(manager))``, or the one-liner
    ``otel_llm_quota.instrument(tracer_provider=...)``.

    The configuration a span counts toward is, in order: the span attribute
    ``llm.quota.config_id``; the id of the innermost ``quota_config(...)`` block the span was
    started in; the first of ``rules`` matching the span's provider, model and resource
    attributes; ``config_resolver(usage)``; the span's provider name; ``default_config_id``. A
    candidate that cannot be an id (blank, or longer than 256 characters) is passed over. Ids
    from spans may hold control characters: they are counted as they are, and handlers escape
    them where they write them (log lines, mail headers).

    Args:
        manager: the ``LLMProviderManager`` (or a bare ``QuotaLedger``) to record into.
        conventions: the attribute keys to read (default: OTel GenAI, OpenLLMetry, OpenInference).
        rules: ``ConfigRule`` objects (or their dict form) tried in order.
        config_resolver: a callable ``(SpanUsage) -> str | None``; exceptions are counted and
            the span falls through to its provider.
        default_config_id: config of LLM spans without a provider (default ``"unknown"``).
        max_tracked_responses: response ids (and nesting marks) remembered to count each
            response once (default 10000).
        meter_provider: where the ``llm.quota.processor.*`` self-metrics go (default: global).
    """

    def __init__(
        self,
        manager: LLMProviderManager | QuotaLedger,
        *,
        conventions: Conventions | None = None,
        rules: Sequence[ConfigRule | Mapping[str, Any]] = (),
        config_resolver: ConfigResolver | None = None,
        default_config_id: str = DEFAULT_CONFIG_ID,
        max_tracked_responses: int = DEFAULT_MAX_TRACKED_RESPONSES,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        ledger = manager.ledger if isinstance(manager, LLMProviderManager) else manager
        if not isinstance(ledger, QuotaLedger):
            raise TypeError(
                "manager must be an LLMProviderManager or QuotaLedger, "
                f"not {type(manager).__name__}"
            )
        if type(max_tracked_responses) is not int or max_tracked_responses < 1:
            raise ValueError("max_tracked_responses must be a positive int")
        if config_resolver is not None and not callable(config_resolver):
            raise TypeError("config_resolver must be callable")
        conv = conventions if conventions is not None else DEFAULT_CONVENTIONS
        self._ledger = ledger
        self._record = ledger.record_checked
        self._conventions = conv
        self._input_keys = conv.input_tokens
        self._output_keys = conv.output_tokens
        self._total_keys = conv.total_tokens
        self._provider_keys = conv.provider
        self._model_keys = conv.model
        self._model_first = conv.model[0] if conv.model else ""
        ledger.pricer.warm_up()  # genai-prices loads in the background, not on the first span
        self._cache_read_keys = conv.cache_read_tokens
        self._cache_write_keys = conv.cache_write_tokens
        self._cache_keys = frozenset(conv.cache_read_tokens + conv.cache_write_tokens)
        self._response_keys = conv.response_id
        self._trigger_keys = conv.usage_keys | frozenset(conv.provider)
        self._rules: tuple[ConfigRule, ...] = tuple(
            r if isinstance(r, ConfigRule) else ConfigRule.from_dict(r) for r in rules
        )
        self._resolver = config_resolver
        self._resolving = bool(self._rules) or config_resolver is not None
        self._default_config_id = check_config_id(default_config_id)
        self._lock = threading.Lock()
        self._half = max(max_tracked_responses // 2, 1)
        # response id (or its digest) -> the instrumentation scope (or scopes) that reported it
        self._seen_new: dict[str | bytes, _Scopes] = {}
        self._seen_old: dict[str | bytes, _Scopes] = {}
        self._marks_new: dict[int, None] = {}
        self._marks_old: dict[int, None] = {}
        # Framework/provider pairing: key -> (unpaired spans, latest end time in ns); two
        # generations each, like the tables above. Only touched under the lock.
        self._framework_scopes = frozenset(conv.framework_scopes)
        self._watching = bool(self._framework_scopes)  # for the first framework span's start
        self._pairing = False
        self._providers_new: dict[_MatchKey, tuple[int, int]] = {}
        self._providers_old: dict[_MatchKey, tuple[int, int]] = {}
        self._frameworks_new: dict[_MatchKey, tuple[int, int]] = {}
        self._frameworks_old: dict[_MatchKey, tuple[int, int]] = {}
        self._input_first = conv.input_tokens[0] if conv.input_tokens else ""
        self._output_first = conv.output_tokens[0] if conv.output_tokens else ""
        self._provider_first = conv.provider[0] if conv.provider else ""
        self._response_first = conv.response_id[0] if conv.response_id else ""
        self._request_model_first = conv.request_model[0] if conv.request_model else ""
        # (provider, model, id(resource), *routing attribute values) -> (resource, id, rule)
        self._rule_cache: dict[tuple[Any, ...], tuple[object, str | None, ConfigRule | None]] = {}
        self._rule_attributes = attribute_keys(self._rules)
        self._tickets = itertools.count()
        self._ticket = self._tickets.__next__
        self._duplicates = 0
        self._skipped = 0
        self._errors = 0
        self._shutdown = False
        reinit_after_fork(self._at_fork_reinit)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(
            "otel_llm_quota", __version__
        )
        self._skipped_counter = meter.create_counter(
            "llm.quota.processor.skipped_values",
            unit="{value}",
            description="Span attribute values the quota processor ignored (wrong type or range)",
        )
        self._duplicate_counter = meter.create_counter(
            "llm.quota.processor.duplicate_spans",
            unit="{span}",
            description="LLM spans not counted because their usage was already counted",
        )

        if not _fast_path_applies():
            _logger.warning(
                "opentelemetry-sdk: the span internals the quota processor reads directly are "
                "not as expected; reading spans through the public API instead (slower)"
            )
            # An instance attribute: the SDK calls processor.on_end, found here first.
            self.on_end = self._on_end_portable  # type: ignore[method-assign]
            self._pairing, self._watching = bool(self._framework_scopes), False

    def _pair_from_start(self) -> None:
        """Pair framework spans from the first span on (module docstring), as the portable path
        does: for spans that never pass through ``on_start`` (those ``otel-llm-quota serve``
        receives over OTLP)."""
        self._pairing, self._watching = bool(self._framework_scopes), False

    def _at_fork_reinit(self) -> None:
        # In a forked child: a thread of the parent may have held the lock at fork time. The
        # dedupe tables are kept: the child's spans are new responses anyway.
        self._lock = threading.Lock()

    # -- SpanProcessor ---------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        """Stamp the id of the enclosing ``quota_config`` block on the span, if there is one.

        Until the first span of a framework scope starts, also look at each span's scope: the
        framework pairing (module docstring) costs nothing in apps without such a framework, and a
        framework span starts before the provider span it wraps, so none is missed.
        """
        if self._watching:
            try:
                # Private, like on_end's reads (checked by the probe; the portable path pairs
                # from the start instead of watching): the public property costs a call.
                scope = span._instrumentation_scope
                if scope is not None and scope.name in self._framework_scopes:
                    self._watching = False
                    self._pairing = True
            except Exception:  # never break the app's span
                self._fail("on_start")
        if not ContextUse.used:
            return
        try:
            config_id = otel_context.get_value(QUOTA_CONFIG_CONTEXT_KEY, parent_context)
            if type(config_id) is str:
                attrs = span.attributes
                current = None if attrs is None else attrs.get(QUOTA_CONFIG_ID_ATTRIBUTE)
                # Absent, or unusable (blank, too long, not a str): the block's id is next in order.
                if type(current) is not str or not _usable_id(current):
                    span.set_attribute(QUOTA_CONFIG_ID_ATTRIBUTE, config_id)
        except Exception:  # never break the app's span
            self._fail("on_start")

    def on_end(self, span: ReadableSpan) -> None:
        """Record the span's usage, if it carries any. Never raises."""
        try:
            # The SDK keeps attributes in a BoundedAttributes whose plain dict we read directly:
            # the public MappingProxy -> Mapping.get path costs ~0.1 us per key (and raises
            # KeyError inside for every miss); this runs for every span of the app.
            attrs = span._attributes
            if attrs.__class__ is BoundedAttributes:
                attributes: Mapping[str, Any] = attrs._dict
            elif attrs is None:
                attributes = _EMPTY
            else:
                attributes = attrs
            if self._trigger_keys.isdisjoint(attributes):
                if self._marks_new or self._marks_old:
                    self._pass_mark(span)
                return
            if self._shutdown:
                return
            # Written out flat, with locals and the first key of each table tried inline (the
            # common case): this runs for every LLM span (see benchmarks/bench_processor.py).
            get = attributes.get
            input_tokens = get(self._input_first)
            if input_tokens.__class__ is not int or not 0 <= input_tokens <= MAX_TOKENS_PER_SPAN:
                input_tokens = self._read_tokens(attributes, self._input_keys)
            output_tokens = get(self._output_first)
            if output_tokens.__class__ is not int or not 0 <= output_tokens <= MAX_TOKENS_PER_SPAN:
                output_tokens = self._read_tokens(attributes, self._output_keys)
            total = None
            for key in self._total_keys:
                if key in attributes:
                    total = self._read_tokens(attributes, self._total_keys)
                    break
            # Status._status_code: the public status_code property costs a Python-level call.
            success = (
                span._status._status_code is not _ERROR and ERROR_TYPE_ATTRIBUTE not in attributes
            )
            if (
                input_tokens is None
                and output_tokens is None
                and total is None
                and (success or self._is_non_model_operation(attributes))
            ):
                # No usage: only a failed model call counts (as a failed request).
                if self._marks_new or self._marks_old:
                    self._pass_mark(span)
                return
            provider = get(self._provider_first)
            if provider.__class__ is not str or not provider:
                provider = _first_str(attributes, self._provider_keys)
            response_id = get(self._response_first)
            if response_id.__class__ is not str or not response_id:
                response_id = _first_str(attributes, self._response_keys)
            context = span._context
            # No lock: every dict operation below is atomic, and the one decision that must be (is
            # this the first span with this response id?) is a single setdefault. Memory is bounded
            # by two generations of at most half the capacity each: when the newer one is full it
            # becomes the older one and the oldest is dropped. A lost race on the swap only forgets
            # some ids early.
            duplicate = False
            if (self._marks_new or self._marks_old) and context is not None:
                span_id = context.span_id
                duplicate = (
                    self._marks_new.pop(span_id, 1) is None
                    or self._marks_old.pop(span_id, 1) is None
                )
            # Every LLM span that gets this far takes a ticket, which counts the spans
            # (counted = tickets - duplicates).
            self._ticket()
            if response_id is not None:
                if len(response_id) > _MAX_KEPT_ID_CHARS:
                    response_id = _id_key(response_id)
                # Remembered even for a span skipped as an ancestor: a third span with the same id
                # elsewhere (another instrumentation's, in another trace) is the same response.
                # The entry is the span's instrumentation scope, an object its tracer shares with
                # all its spans: nothing is allocated, and nothing of the span is kept alive
                # (keeping its context until eviction moved freeing it from the exporter's thread
                # to the app's, which cost more than the rest of the dedupe).
                scope = span._instrumentation_scope
                seen = self._seen_new
                if (
                    response_id in self._seen_old
                    or seen.setdefault(response_id, scope) is not scope
                ):
                    duplicate = self._seen_again(response_id, scope) or duplicate
                elif len(seen) >= self._half:
                    self._seen_old = seen
                    self._seen_new = {}
            parent = span._parent
            if parent is not None:
                marks = self._marks_new
                marks[parent.span_id] = None
                if len(marks) >= self._half:
                    self._marks_old = marks
                    self._marks_new = {}
            if self._pairing and (input_tokens is not None or output_tokens is not None):
                duplicate = self._pair_framework(
                    span,
                    attributes,
                    provider,
                    response_id is not None,
                    input_tokens,
                    output_tokens,
                    duplicate,
                )
            if duplicate:
                with self._lock:
                    self._duplicates += 1
                self._duplicate_counter.add(1)
                return
            config_id = get(QUOTA_CONFIG_ID_ATTRIBUTE)
            if config_id is not None and (
                config_id.__class__ is not str or not 0 < len(config_id) <= MAX_CONFIG_ID_LENGTH
            ):
                self._skip(QUOTA_CONFIG_ID_ATTRIBUTE, config_id)
                config_id = None
            if config_id is None:
                if self._resolving:
                    config_id = self._resolve(
                        span, attributes, provider, input_tokens, output_tokens, total, success
                    )
                else:
                    config_id = provider if provider is not None else self._default_config_id
            input_tokens = input_tokens or 0
            output_tokens = output_tokens or 0
            other = 0
            if total is not None:
                other = total - input_tokens - output_tokens
                if other < 0:
                    other = 0
            # What prices the request (``_pricing``): the model and the cache breakdown.
            model = get(self._model_first)
            if model.__class__ is not str or not model:
                model = _first_str(attributes, self._model_keys)
            cache_read = cache_write = 0
            # One C-level pass (a dict view's isdisjoint looks the few keys up in the dict).
            if not attributes.keys().isdisjoint(self._cache_keys):
                cache_read = self._read_tokens(attributes, self._cache_read_keys) or 0
                cache_write = self._read_tokens(attributes, self._cache_write_keys) or 0
            try:
                self._record(
                    config_id,
                    provider,
                    input_tokens,
                    output_tokens,
                    other,
                    success,
                    context,
                    model,
                    cache_read,
                    cache_write,
                )
            except ValueError:  # a new id the ledger refused (blank, too long), nothing counted
                config_id = self._fallback_id(
                    span,
                    attributes,
                    config_id,
                    provider,
                    input_tokens,
                    output_tokens,
                    total,
                    success,
                )
                self._record(
                    config_id,
                    provider,
                    input_tokens,
                    output_tokens,
                    other,
                    success,
                    context,
                    model,
                    cache_read,
                    cache_write,
                )
        except Exception:  # the processor must never break the app
            self._fail("on_end")

    def _on_end_portable(self, span: ReadableSpan) -> None:
        """``on_end`` through the span's public API: used when the SDK's internals moved."""
        try:
            view = _PublicSpan(span)
        except Exception:  # the processor must never break the app
            self._fail("on_end")
            return
        QuotaSpanProcessor.on_end(self, cast(ReadableSpan, view))

    def shutdown(self) -> None:
        """Stop counting (idempotent). Nothing is buffered, so nothing is lost."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: usage is in the ledger as soon as ``on_end`` returns."""
        return True

    # -- introspection ---------------------------------------------------------------------------

    @property
    def stats(self) -> ProcessorStats:
        """Counts of counted, duplicate and skipped spans and values so far.

        Exact once the spans' ``on_end`` calls have returned; a span still in ``on_end`` on another
        thread may show as counted before it is found to be a duplicate.
        """
        with self._lock:
            tickets = next(copy.copy(self._tickets))  # the count, without advancing it
            counted = tickets - self._duplicates
            return ProcessorStats(counted, self._duplicates, self._skipped, self._errors)

    @property
    def conventions(self) -> Conventions:
        """The attribute keys this processor reads."""
        return self._conventions

    @property
    def rules(self) -> tuple[ConfigRule, ...]:
        """The config-id rules, in the order they are tried."""
        return self._rules

    # -- the LLM-span path -----------------------------------------------------------------------

    def _read_tokens(self, attributes: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
        """The first well-formed token count among ``keys``; bad values are skipped and counted."""
        for key in keys:
            value = attributes.get(key)
            if value is None:
                continue
            if value.__class__ is int and 0 <= value <= MAX_TOKENS_PER_SPAN:
                return int(value)
            self._skip(key, value)
        return None

    def _resolve(
        self,
        span: ReadableSpan,
        attributes: Mapping[str, Any],
        provider: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        total: int | None,
        success: bool,
    ) -> str:
        if self._rules or self._resolver is not None:
            model = _first_str(attributes, self._model_keys)
            resource = span.resource
            if self._rules:
                key: tuple[Any, ...] = (provider, model, id(resource))
                if self._rule_attributes:  # routing by a span attribute: its value too
                    key += tuple(_str_or_none(attributes.get(k)) for k in self._rule_attributes)
                cached = self._rule_cache.get(key)
                if cached is not None and cached[0] is resource:
                    matched, rule = cached[1], cached[2]
                else:
                    found = first_rule(
                        self._rules, provider, model, resource.attributes, attributes
                    )
                    matched, rule = (None, None) if found is None else found
                    if len(self._rule_cache) >= _RULE_CACHE_SIZE:
                        self._rule_cache.clear()
                    self._rule_cache[key] = (resource, matched, rule)
                if matched is not None:
                    if rule is not None and rule.parent is not None and matched not in self._ledger:
                        self._ledger.link_new(matched, rule.parent)  # a new config of the rule
                    return matched
            if self._resolver is not None:
                chosen = self._call_resolver(
                    span, attributes, provider, model, input_tokens, output_tokens, total, success
                )
                if chosen is not None:
                    return chosen
        return provider if provider is not None else self._default_config_id

    def _fallback_id(
        self,
        span: ReadableSpan,
        attributes: Mapping[str, Any],
        rejected: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        total: int | None,
        success: bool,
    ) -> str:
        """The next id along the resolution order after ``rejected``, which the ledger refused.

        Only the span attribute (e.g. blank) and the provider name (blank or longer than 256
        characters) can be refused: rules, the resolver's answers and ``default_config_id`` are
        checked before. The rare path, so the hot path pays nothing for it.
        """
        chosen: str | None = None
        if rejected == attributes.get(QUOTA_CONFIG_ID_ATTRIBUTE):
            self._skip(QUOTA_CONFIG_ID_ATTRIBUTE, rejected)
            if self._resolving:
                chosen = self._resolve(
                    span, attributes, provider, input_tokens, output_tokens, total, success
                )
            else:
                chosen = provider
        if chosen is None or chosen == rejected or not _usable_id(chosen):
            chosen = self._default_config_id
        return chosen

    def _call_resolver(
        self,
        span: ReadableSpan,
        attributes: Mapping[str, Any],
        provider: str | None,
        model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        total: int | None,
        success: bool,
    ) -> str | None:
        assert self._resolver is not None
        details = {
            key: value
            for key in self._conventions.detail_tokens
            if type(value := attributes.get(key)) is int
        }
        usage = SpanUsage(
            provider=provider,
            model=model,
            input_tokens=input_tokens or 0,
            output_tokens=output_tokens or 0,
            total_tokens=total,
            response_id=_first_str(attributes, self._response_keys),
            success=success,
            attributes=MappingProxyType(dict(attributes)),
            resource_attributes=span.resource.attributes,
            details=details,
        )
        try:
            chosen = self._resolver(usage)
        except Exception:
            self._fail("config_resolver")
            return None
        if chosen is None:
            return None
        if type(chosen) is not str or not _usable_id(chosen):
            self._skip("config_resolver", chosen)
            return None
        return chosen

    def _is_non_model_operation(self, attributes: Mapping[str, Any]) -> bool:
        operation = _first_str(attributes, self._conventions.operation)
        return operation is not None and operation in self._conventions.non_model_operations

    def _seen_again(self, response_id: str | bytes, scope: InstrumentationScope | None) -> bool:
        """A response id seen before from another scope object: is this span a duplicate?

        Yes if another instrumentation already reported it (the anthropic SDK's span and
        OpenLLMetry's, say). No if the same instrumentation reports it again: one instrumentation
        makes one span per response, so this is a new response reusing the id (OpenAI-compatible
        servers such as Ollama draw ids from a small random range) and must count. (The fast path
        in ``on_end`` counts a reuse by the very same scope object without coming here.) The rare
        path: it takes the lock, so concurrent spans decide one after the other.
        """
        with self._lock:
            seen = self._seen_new
            known = seen.get(response_id, _UNSEEN)
            if known is _UNSEEN:
                known = self._seen_old.get(response_id, _UNSEEN)
            if known is _UNSEEN:  # evicted meanwhile: first again
                seen[response_id] = scope
                return False
            scopes: frozenset[InstrumentationScope | None] = (
                known if isinstance(known, frozenset) else frozenset((known,))  # type: ignore[arg-type]
            )
            if scope in scopes:  # an equal scope (another tracer object of that instrumentation)
                seen[response_id] = scope
                return False
            seen[response_id] = scopes | {scope}
            return True

    def _pair_framework(
        self,
        span: ReadableSpan,
        attributes: Mapping[str, Any],
        provider: str | None,
        has_response_id: bool,
        input_tokens: int | None,
        output_tokens: int | None,
        duplicate: bool,
    ) -> bool:
        """Is this span a duplicate, given the framework/provider pairing (module docstring)?

        ``duplicate`` is what the response-id and nesting rules decided. A provider span that
        counts is remembered, for a framework span ending later; a framework span that counts
        likewise. A framework span found to be a duplicate by those rules still takes its
        provider twin out of the table, so that the twin cannot pair with another span.
        """
        scope = span._instrumentation_scope
        framework = scope is not None and scope.name in self._framework_scopes
        if framework:
            if has_response_id and not duplicate:
                return False  # counts; its provider twin, same id, will be deduped by the id
        elif duplicate or not has_response_id:
            # Without an id a provider span cannot be told from another call: nothing to pair.
            return duplicate
        model = attributes.get(self._request_model_first)
        if model.__class__ is not str or not model:
            model = _first_str(attributes, self._conventions.request_model)
        # Long strings are kept as digests, as response ids are: the table is bounded in bytes.
        key: _MatchKey = (
            _id_key(provider)
            if provider is not None and len(provider) > _MAX_KEPT_ID_CHARS
            else provider,
            _id_key(model) if model is not None and len(model) > _MAX_KEPT_ID_CHARS else model,
            input_tokens,
            output_tokens,
        )
        end = span._end_time or 0
        if framework:
            twins = (self._providers_new, self._providers_old)
        else:
            twins = (self._frameworks_new, self._frameworks_old)
        with self._lock:
            for table in twins:
                found = table.get(key)
                if found is not None and abs(end - found[1]) <= _FRAMEWORK_MATCH_NS:
                    if found[0] > 1:
                        table[key] = (found[0] - 1, found[1])
                    else:
                        del table[key]
                    return True
            if duplicate:
                return True
            if framework:
                new = self._frameworks_new
                found = new.get(key)
                new[key] = (1 if found is None else found[0] + 1, end)
                if len(new) >= self._half:
                    self._frameworks_old, self._frameworks_new = new, {}
            else:
                new = self._providers_new
                found = new.get(key)
                new[key] = (1 if found is None else found[0] + 1, end)
                if len(new) >= self._half:
                    self._providers_old, self._providers_new = new, {}
        return False

    def _pass_mark(self, span: ReadableSpan) -> None:
        """A marked span (an ancestor of a counted span) passes the mark on to its parent."""
        context = span._context
        if context is None:
            return
        span_id = context.span_id
        if (
            self._marks_new.pop(span_id, 1) is not None
            and self._marks_old.pop(span_id, 1) is not None
        ):
            return  # not marked
        parent = span._parent
        if parent is not None:
            marks = self._marks_new
            marks[parent.span_id] = None
            if len(marks) >= self._half:
                self._marks_old = marks
                self._marks_new = {}

    # -- failures --------------------------------------------------------------------------------

    def _skip(self, key: str, value: object) -> None:
        with self._lock:
            self._skipped += 1
        _logger.debug("quota processor: skipped %s=%r (%s)", key, value, type(value).__name__)
        try:
            self._skipped_counter.add(1, {"llm.quota.attribute": key})
        except Exception:  # a broken meter must not break the app
            pass

    def _fail(self, where: str) -> None:
        with self._lock:
            self._errors += 1
        _logger.debug("quota processor: %s failed; span not counted", where, exc_info=True)

    def __repr__(self) -> str:
        return f"QuotaSpanProcessor(rules={len(self._rules)}, stats={self.stats})"


def _usable_id(config_id: str) -> bool:
    """Whether the ledger takes ``config_id`` from a span (control characters are allowed)."""
    return 0 < len(config_id) <= MAX_CONFIG_ID_LENGTH and not config_id.isspace()


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _first_str(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attributes.get(key)
        if type(value) is str and value:
            return value
    return None


def _id_key(response_id: str) -> bytes:
    """A 16-byte digest standing for a long response id in the dedupe tables.

    Keyed BLAKE2b is not needed: a collision needs 2**64 ids, and a collision only makes two
    responses count once. Ids that are not valid UTF-8 (lone surrogates) are digested as is.
    Only ids over 64 characters come here: ``hashlib`` is imported on the first.
    """
    import hashlib  # here: `import otel_llm_quota` need not load it (OpenSSL's bindings)

    return hashlib.blake2b(response_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _PublicSpan:
    """The span fields ``on_end`` reads, taken from a span's public API (the portable path)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_instrumentation_scope",
        "_parent",
        "_status",
        "_status_code",
        "resource",
    )

    def __init__(self, span: ReadableSpan) -> None:
        self._attributes = span.attributes
        self._context = span.context
        self._end_time = span.end_time
        self._parent = span.parent
        self._instrumentation_scope = span.instrumentation_scope
        self._status = self  # so that ``_status._status_code`` reads the public status code
        self._status_code = span.status.status_code
        self.resource = span.resource


class _ProbeCatcher(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def _fast_path_applies() -> bool:
    """End a child span on a private provider: do the SDK internals ``on_end`` reads agree with
    the public API? False on any difference or error (then ``on_end`` uses ``_PublicSpan``)."""
    try:
        catcher = _ProbeCatcher()
        provider = TracerProvider(
            sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False
        )
        provider.add_span_processor(catcher)
        tracer = provider.get_tracer("otel_llm_quota.probe")
        parent = tracer.start_span("probe-parent")
        child = tracer.start_span(
            "probe", context=trace.set_span_in_context(parent), attributes={"probe": 1}
        )
        child.set_status(Status(StatusCode.ERROR))
        child.end()
        parent.end()
        span = catcher.spans[0]
        attrs = span._attributes
        attributes: Mapping[str, Any]  # read exactly as on_end reads it
        if attrs.__class__ is BoundedAttributes:
            attributes = attrs._dict
        elif attrs is None:
            attributes = _EMPTY
        else:
            attributes = attrs
        parent_context = parent.get_span_context()
        return bool(
            dict(attributes) == dict(span.attributes or _EMPTY) == {"probe": 1}
            and span._status._status_code is span.status.status_code is _ERROR
            and span._context == span.context == child.get_span_context()
            and span._parent == span.parent == parent_context
            and span._parent is not None
            and span._parent.span_id == parent_context.span_id
            and span._instrumentation_scope is span.instrumentation_scope
            and span._instrumentation_scope is not None
            and span._end_time == span.end_time
            and span._end_time is not None
        )
    except Exception:
        return False
