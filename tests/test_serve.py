"""``otel_llm_quota.serve``: OTLP/HTTP semantics, limits and hostile input, on a real aiohttp
server on 127.0.0.1 (aiohttp's test server) fed requests the SDK's own OTLP encoder made.

The property test at the end runs the same spans through the in-process processor and through
the service and compares every quota total.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("opentelemetry.proto")

from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from otel_llm_quota import LLMProviderManager, QuotaSetup, QuotaSpanProcessor
from otel_llm_quota.serve import (
    BodyError,
    Limits,
    OtlpIngest,
    QuotaService,
    decompress,
    run_service,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def llm_attrs(
    provider: str = "openai", inp: int = 10, out: int = 5, **extra: Any
) -> dict[str, Any]:
    return {
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
        **extra,
    }


def ended_spans(
    specs: Sequence[dict[str, Any]], *, scope: str = "test", nested: bool = False
) -> list[ReadableSpan]:
    """SDK spans with the given attributes (each a child of the previous one if ``nested``)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope)
    if nested:
        opened = []
        context = None
        for attrs in specs:
            span = tracer.start_span("llm", context=context, attributes=attrs)
            opened.append(span)
            context = set_span_in_context(span)
        for span in reversed(opened):
            span.end()
    else:
        for attrs in specs:
            tracer.start_span("llm", attributes=attrs).end()
    provider.shutdown()
    return list(exporter.get_finished_spans())


def pb_request(specs: Sequence[dict[str, Any]], first_id: int = 1) -> bytes:
    """An export request built directly from protobuf messages (fast, for many spans): one
    resource, one scope, a span per attribute dict, span ids counting from ``first_id``."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "test"
    for n, attrs in enumerate(specs, first_id):
        span = scope_spans.spans.add(
            trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name="chat"
        )
        span.end_time_unix_nano = 1_700_000_000_000_000_000 + n
        for key, value in attrs.items():
            kv = span.attributes.add(key=key)
            if isinstance(value, str):
                kv.value.string_value = value
            else:
                kv.value.int_value = value
    return bytes(request.SerializeToString())


def request_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializeToString())


def totals(manager: LLMProviderManager) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        q.config_id: (
            q.total_tokens,
            q.input_tokens,
            q.output_tokens,
            q.successful_requests,
            q.failed_requests,
        )
        for q in manager.ledger.get_all()
    }


@pytest.fixture
def make_service() -> Iterator[Callable[..., QuotaService]]:
    made: list[QuotaService] = []

    def make(
        *, limits: Limits | None = None, token: str | None = None, **manager_options: Any
    ) -> QuotaService:
        manager = LLMProviderManager(store=False, metrics=False, **manager_options)
        service = QuotaService(QuotaSetup(manager=manager), limits=limits, token=token)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[QuotaService], Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def start(service: QuotaService) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(service.app(), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def post(
    client: TestClient[Any, Any],
    body: bytes,
    content_type: str = PROTOBUF,
    **headers: str,
) -> tuple[int, bytes, Any]:
    response = await client.post(
        "/v1/traces", data=body, headers={"Content-Type": content_type, **headers}
    )
    return response.status, await response.read(), response.headers


def otlp_response(body: bytes) -> ExportTraceServiceResponse:
    return ExportTraceServiceResponse.FromString(body)


# -- OTLP semantics -------------------------------------------------------------------------------


async def test_protobuf_export_counts_exact_totals_and_answers_an_empty_response(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    service = make_service()
    client = await client_for(service)
    spans = ended_spans([llm_attrs(inp=100 + i, out=i) for i in range(20)])
    status, body, headers = await post(client, request_bytes(spans))
    assert status == 200
    assert headers["Content-Type"] == PROTOBUF
    assert not otlp_response(body).HasField("partial_success")
    assert totals(service.manager) == {"openai": (2190 + 190, 2190, 190, 20, 0)}


async def test_empty_export_is_a_success(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    client = await client_for(make_service())
    status, body, _ = await post(client, b"")
    assert status == 200
    assert otlp_response(body) == ExportTraceServiceResponse()
    status, body, _ = await post(client, b"{}", JSON)
    assert (status, json.loads(body)) == (200, {})


async def test_json_export_with_hex_ids_counts_like_protobuf(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    """OTLP/JSON: hex trace/span ids, intValue as a string; the nesting rule needs the ids right
    (the outer span repeats the inner one's usage and must not count)."""
    spans = ended_spans([llm_attrs(inp=7, out=3), llm_attrs(inp=7, out=3)], nested=True)
    as_json = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in as_json["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:  # MessageToDict wrote base64: OTLP/JSON wants hex
                        span[key] = base64.b64decode(span[key]).hex()
    text = json.dumps(as_json)
    assert '"intValue": "7"' in text
    service = make_service()
    client = await client_for(service)
    status, body, headers = await post(client, text.encode(), JSON)
    assert status == 200, body
    assert headers["Content-Type"] == JSON
    assert json.loads(body) == {}
    assert totals(service.manager) == {"openai": (10, 7, 3, 1, 0)}
    assert service.processor.stats.duplicate_spans == 1


async def test_invalid_span_ids_are_rejected_in_partial_success_and_the_rest_counts(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    request = encode_spans(ended_spans([llm_attrs(inp=1, out=1) for _ in range(3)]))
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].span_id = b"\x01\x02"
    spans[1].trace_id = b""
    service = make_service()
    client = await client_for(service)
    status, body, _ = await post(client, request.SerializeToString())
    assert status == 200
    partial = otlp_response(body).partial_success
    assert partial.rejected_spans == 2
    assert "invalid" in partial.error_message
    assert totals(service.manager) == {"openai": (2, 1, 1, 1, 0)}


async def test_a_redelivered_request_is_counted_once(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    """An exporter retries a request whose answer it lost: same spans, same ids."""
    service = make_service()
    client = await client_for(service)
    body = request_bytes(ended_spans([llm_attrs(inp=40, out=2)]))
    for _ in range(3):
        assert (await post(client, body))[0] == 200
    assert totals(service.manager) == {"openai": (42, 40, 2, 1, 0)}
    assert service.redelivered_spans == 2


async def test_config_rules_match_resource_attributes_as_in_process(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    manager = LLMProviderManager(store=False, metrics=False)
    rules = [
        {"config_id": "api-team", "match": {"service.name": "app", "model": "gpt-4o*"}},
        {"config_id": "other", "match": {"service.name": "batch"}},
    ]
    service = QuotaService(QuotaSetup(manager=manager, processor_options={"rules": rules}))
    try:
        client = await client_for(service)
        body = request_bytes(ended_spans([llm_attrs(inp=6, out=6)]))  # service.name "app"
        assert (await post(client, body))[0] == 200
        assert totals(manager) == {"api-team": (12, 6, 6, 1, 0)}
    finally:
        service.close()


async def test_an_alert_names_the_otlp_span_that_crossed_the_threshold(client_for: Any) -> None:
    from otel_llm_quota import SpanRef
    from otel_llm_quota.testing import RecordingAlertHandler

    recorder = RecordingAlertHandler()
    manager = LLMProviderManager(store=False, metrics=False)
    manager.add_alert_handler(recorder)
    await manager.set_quota_limit("openai", 100, 50)
    service = QuotaService(QuotaSetup(manager=manager))
    try:
        client = await client_for(service)
        spans = ended_spans([llm_attrs(inp=10, out=0), llm_attrs(inp=50, out=0)])
        assert (await post(client, request_bytes(spans)))[0] == 200
        await manager.check_quotas()
        [alert] = recorder.alerts
        context = spans[1].context
        assert alert.span == SpanRef(context.trace_id, context.span_id, 1)
    finally:
        service.close()


async def test_children_after_parents_in_one_request_still_count_the_innermost_once(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    spans = ended_spans([llm_attrs(inp=5, out=5)] * 3, nested=True)  # inner ends first
    service = make_service()
    client = await client_for(service)
    assert (await post(client, request_bytes(list(reversed(spans)))))[0] == 200
    assert totals(service.manager) == {"openai": (10, 5, 5, 1, 0)}


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff not protobuf"),
        (PROTOBUF, b"\x0a\x80\x80\x80\x80\x10"),  # a length beyond the body
        (JSON, b"{not json"),
        (JSON, b"[1, 2]"),
        (JSON, b'{"resourceSpans": "x"}'),
        (JSON, b"[" * 100_000 + b"]" * 100_000),
        (JSON, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"a": ' * 30 + b"1" + b"}" * 90),
    ],
)
async def test_a_malformed_body_is_a_400_with_a_status_and_the_service_stays_up(
    make_service: Callable[..., QuotaService], client_for: Any, content_type: str, body: bytes
) -> None:
    service = make_service()
    client = await client_for(service)
    status, answer, _ = await post(client, body, content_type)
    assert status == 400
    if content_type == PROTOBUF:
        assert status_pb2.Status.FromString(answer).message
    else:
        assert json.loads(answer)["message"]
    good = request_bytes(ended_spans([llm_attrs(inp=3, out=4)]))
    assert (await post(client, good))[0] == 200
    assert totals(service.manager) == {"openai": (7, 3, 4, 1, 0)}


async def test_a_truncated_protobuf_body_is_a_400(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    service = make_service()
    client = await client_for(service)
    body = request_bytes(ended_spans([llm_attrs(inp=1000, out=1) for _ in range(10)]))
    for cut in (len(body) // 3, len(body) - 1):
        status, _, _ = await post(client, body[:cut])
        assert status == 400
    assert totals(service.manager) == {}
    gz = gzip.compress(body)
    status, _, _ = await post(client, gz[: len(gz) // 2], **{"Content-Encoding": "gzip"})
    assert status == 400
    status, _, _ = await post(client, gz, **{"Content-Encoding": "gzip"})
    assert status == 200
    assert totals(service.manager)["openai"][0] == 10_010


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "", "x/y"])
async def test_a_wrong_content_type_is_a_415(
    make_service: Callable[..., QuotaService], client_for: Any, content_type: str
) -> None:
    client = await client_for(make_service())
    body = request_bytes(ended_spans([llm_attrs()]))
    status, _, _ = await post(client, body, content_type)
    assert status == 415


async def test_an_unknown_content_encoding_is_a_415(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    client = await client_for(make_service())
    status, _, _ = await post(client, b"x", **{"Content-Encoding": "br"})
    assert status == 415


async def test_a_body_over_the_limit_is_a_413_declared_or_chunked(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    service = make_service(limits=Limits(max_body_bytes=1000))
    client = await client_for(service)
    status, _, _ = await post(client, b"\x00" * 1001)
    assert status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"\x00" * 500

    response = await client.post("/v1/traces", data=chunks(), headers={"Content-Type": PROTOBUF})
    assert response.status == 413
    assert (await post(client, request_bytes(ended_spans([llm_attrs()]))))[0] == 200


async def test_a_gzip_bomb_is_a_413(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    service = make_service(limits=Limits(max_decompressed_bytes=1 << 20))
    client = await client_for(service)
    bomb = gzip.compress(b"\x00" * (64 << 20), compresslevel=9)  # 64 MiB in ~64 KB
    status, body, _ = await post(client, bomb, **{"Content-Encoding": "gzip"})
    assert status == 413
    assert b"decompressed" in status_pb2.Status.FromString(body).message.encode()


async def test_a_json_body_over_8_mib_is_a_413_protobuf_of_that_size_is_not(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    """Parsed JSON takes about ten times its size: OTLP/JSON has a lower cap than protobuf."""
    client = await client_for(make_service())
    padding = "x" * (9 << 20)
    status, _, _ = await post(
        client, json.dumps({"resourceSpans": [], "p": padding}).encode(), JSON
    )
    assert status == 413
    big = request_bytes(ended_spans([llm_attrs(**{"gen_ai.prompt": padding})]))
    assert (await post(client, big))[0] == 200


def test_decompress_stops_at_the_cap_instead_of_expanding_a_bomb() -> None:
    bomb = gzip.compress(b"\x00" * (256 << 20), compresslevel=9)  # 256 MiB in ~250 KB
    tracemalloc.start()
    try:
        with pytest.raises(BodyError) as caught:
            decompress(bomb, "gzip", 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 8 << 20  # about the 1 MiB cap, not 256 MiB


def test_decompress_takes_concatenated_gzip_members() -> None:
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 10) == b"abcd"
    with pytest.raises(BodyError):
        decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 3)


async def test_overload_answers_503_with_retry_after_and_recovers(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    service = make_service(limits=Limits(max_concurrent_requests=1))
    client = await client_for(service)
    body = request_bytes(ended_spans([llm_attrs(inp=11, out=0)]))
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:5]
        started.set()
        await release.wait()
        yield body[5:]

    held = asyncio.ensure_future(
        client.post("/v1/traces", data=slow_body(), headers={"Content-Type": PROTOBUF})
    )
    await started.wait()
    # Until the server has the first request (it is reading its body): sleep(0) only yields to the
    # server's task on this same loop, no wall-clock wait.
    while service._in_flight == 0:  # noqa: ASYNC110
        await asyncio.sleep(0)
    status, _, headers = await post(client, body)
    assert status == 503
    assert headers["Retry-After"] == "1"
    release.set()
    assert (await held).status == 200
    assert (await post(client, body))[0] == 200  # the same spans: redelivered, not recounted
    assert totals(service.manager) == {"openai": (11, 11, 0, 1, 0)}


async def test_a_stopping_service_answers_503(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    service = make_service()
    client = await client_for(service)
    service.stopping = True
    status, _, headers = await post(client, request_bytes(ended_spans([llm_attrs()])))
    assert (status, headers["Retry-After"]) == (503, "1")
    assert (await client.get("/healthz")).status == 503


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _deep_request(depth: int) -> bytes:
    """An ExportTraceServiceRequest, written byte by byte (protobuf's own builder refuses to go
    this deep), whose one span attribute nests key-value lists ``depth`` levels deep."""
    value = b"\x18\x01"  # AnyValue{int_value: 1}
    for _ in range(depth):
        key_value = _field(1, b"k") + _field(2, value)  # KeyValue{key, value}
        value = _field(6, _field(1, key_value))  # AnyValue{kvlist_value: {values: [...]}}
    attribute = _field(1, b"gen_ai.usage.input_tokens") + _field(2, value)
    span = _field(1, b"t" * 16) + _field(2, b"s" * 8) + _field(9, attribute)
    return _field(1, _field(2, _field(2, span)))  # resource_spans > scope_spans > spans


@pytest.mark.parametrize(("depth", "status"), [(3, 200), (25, 200), (5_000, 400)])
def test_deeply_nested_attribute_values_are_a_skipped_value_or_a_400(
    make_service: Callable[..., QuotaService], depth: int, status: int
) -> None:
    """A nested value where a token count belongs is skipped (counted), one nested deeper than
    protobuf's recursion limit is a malformed body: never a crash or a 500."""
    service = make_service()
    assert service._export(_deep_request(depth), "", False)[0] == status
    stats = service.processor.stats
    assert stats.errors == 0
    assert stats.skipped_values == (1 if status == 200 else 0)


_VALID_BODY = pb_request(
    [
        llm_attrs(inp=3, out=4, **{"gen_ai.response.id": "r-1", "llm.quota.config_id": "team"}),
        {"http.method": "GET"},
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=2_000),
        st.builds(
            lambda cut, flips: _mutate(_VALID_BODY, cut, flips),
            st.integers(0, len(_VALID_BODY)),
            st.lists(st.tuples(st.integers(0, len(_VALID_BODY) - 1), st.integers(0, 255))),
        ),
    ),
    as_json=st.booleans(),
    gzipped=st.booleans(),
)
def test_any_body_is_answered_200_or_400_and_never_raises(
    data: bytes, as_json: bool, gzipped: bool
) -> None:
    manager = LLMProviderManager(store=False, metrics=False)
    service = QuotaService(QuotaSetup(manager=manager), metrics=False)
    try:
        body = gzip.compress(data) if gzipped else data
        status, payload = service._export(body, "gzip" if gzipped else "", as_json)
        assert status in (200, 400), payload
        assert service.processor.stats.errors == 0
    finally:
        service.close()


def _mutate(body: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    mutable = bytearray(body[:cut] if cut else body)
    for index, byte in flips:
        if index < len(mutable):
            mutable[index] = byte
    return bytes(mutable)


# -- security -------------------------------------------------------------------------------------


async def test_bearer_token_is_required_when_configured(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    service = make_service(token="s3cret-token")
    client = await client_for(service)
    body = request_bytes(ended_spans([llm_attrs(inp=2, out=2)]))
    assert (await post(client, body))[0] == 401
    assert (await post(client, body, Authorization="Bearer wrong"))[0] == 401
    assert (await post(client, body, Authorization="Basic s3cret-token"))[0] == 401
    assert (await post(client, body, Authorization="Bearer s3cret-token\u00e9"))[0] == 401
    metrics_served = service._registry is not None  # not with exporter-prometheus 0.60b0
    if metrics_served:
        assert (await client.get("/metrics")).status == 401
    assert totals(service.manager) == {}
    assert (await post(client, body, Authorization="Bearer s3cret-token"))[0] == 200
    assert totals(service.manager) == {"openai": (4, 2, 2, 1, 0)}
    assert (await client.get("/healthz")).status == 200
    if metrics_served:
        metrics = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert metrics.status == 200


async def test_ten_megabyte_attribute_values_are_not_kept_and_valid_totals_are_exact(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    big = "x" * (10 << 20)
    specs = [
        llm_attrs(inp=1, out=1, **{"gen_ai.prompt": big}),  # content: never read
        llm_attrs(inp=2, out=2, **{"gen_ai.response.id": big}),
        llm_attrs(inp=4, out=4, **{"llm.quota.config_id": big}),  # too long: falls back
        llm_attrs(provider=big, inp=8, out=8),  # unusable as an id: the default config
        {"http.url": big},
    ]
    service = make_service()
    client = await client_for(service)
    for spec in specs:  # one 10 MB value per request: the 16 MiB body limit applies
        status, body, _ = await post(client, request_bytes(ended_spans([spec])))
        assert status == 200
        assert not otlp_response(body).HasField("partial_success")
    assert totals(service.manager) == {"openai": (14, 7, 7, 3, 0), "unknown": (16, 8, 8, 1, 0)}
    tracemalloc.start()
    try:
        service.ingest.ingest(encode_spans(ended_spans(specs[:2])))
        kept = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert sum(stat.size for stat in kept.statistics("filename")) < 1 << 20


async def test_distinct_config_ids_are_capped_by_max_configs(
    make_service: Callable[..., QuotaService], client_for: Any
) -> None:
    """100,000 distinct config ids: at most max_configs configs, every token still counted."""
    service = make_service(max_configs=500)
    client = await client_for(service)
    count = 0
    for start in range(0, 100_000, 5_000):
        specs = [
            llm_attrs(inp=1, out=2, **{"llm.quota.config_id": f"cfg-{n}"})
            for n in range(start, start + 5_000)
        ]
        status, _, _ = await post(client, pb_request(specs, first_id=start + 1))
        assert status == 200
        count += len(specs)
    assert count == 100_000
    infos = service.manager.ledger.get_all()
    assert len(infos) <= 501  # max_configs plus the overflow config
    assert sum(q.total_tokens for q in infos) == 300_000
    assert sum(q.successful_requests for q in infos) == 100_000


# -- the same rules as the in-process processor ---------------------------------------------------

_SCOPES = [
    "openai-v2",
    "opentelemetry.instrumentation.openai",
    "opentelemetry.instrumentation.langchain",
]

_span_spec = st.fixed_dictionaries(
    {},
    optional={
        "gen_ai.provider.name": st.sampled_from(["openai", "anthropic", ""]),
        "gen_ai.request.model": st.sampled_from(["m1", "m2"]),
        # Few distinct counts: spans of separate traces then repeat each other's usage, as a
        # framework's span repeats the provider span's (the pairing rule).
        "gen_ai.usage.input_tokens": st.sampled_from([0, 10, 250, "12", -1]),
        "gen_ai.usage.output_tokens": st.sampled_from([0, 5, 99]),
        "gen_ai.usage.total_tokens": st.integers(0, 3000),
        "gen_ai.response.id": st.sampled_from(["r1", "r2", "r3"]),
        "llm.quota.config_id": st.sampled_from(["team-a", "team-b", " ", ""]),
        "error.type": st.just("timeout"),
        "gen_ai.operation.name": st.sampled_from(["chat", "execute_tool"]),
    },
)
_chain = st.lists(
    st.tuples(st.sampled_from(_SCOPES), _span_spec, st.booleans()), min_size=1, max_size=3
)


def _run_chains(chains: list[list[tuple[str, dict[str, Any], bool]]]) -> tuple[Any, list[Any]]:
    """The chains' spans (outer to inner, inner ends first) through an in-process processor."""
    manager = LLMProviderManager(store=False, metrics=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    processor = QuotaSpanProcessor(manager)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The service pairs framework spans from its first span on; in-process, pairing starts with
    # the first framework span's on_start: one such span first makes both start alike.
    # One tracer per instrumentation, as an instrumentation has (and as the service interns
    # scopes): older SDK releases (1.39) made a new scope object per get_tracer call.
    tracers = {scope: provider.get_tracer(scope) for scope in _SCOPES}
    tracers[_SCOPES[2]].start_span("warm-up").end()
    for chain in chains:
        opened = []
        context = None
        for scope, attrs, failed in chain:
            span = tracers[scope].start_span("s", context=context, attributes=attrs)
            if failed:
                span.set_status(Status(StatusCode.ERROR))
            opened.append(span)
            context = set_span_in_context(span)
        for span in reversed(opened):
            span.end()
    provider.shutdown()
    result = (totals(manager), processor.stats)
    manager.close()
    return result, list(exporter.get_finished_spans())


_USAGE = {
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "m1",
    "gen_ai.usage.input_tokens": 10,
    "gen_ai.usage.output_tokens": 5,
}
_PAIRED = [  # a provider span, and a framework span repeating its usage in another trace
    [("openai-v2", {**_USAGE, "gen_ai.response.id": "r1"}, False)],
    [(_SCOPES[2], _USAGE, False)],
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(chains=_PAIRED, batch=1)
@example(chains=_PAIRED, batch=5)
@example(chains=_PAIRED[::-1], batch=1)
@given(chains=st.lists(_chain, min_size=1, max_size=6), batch=st.integers(1, 20))
def test_otlp_path_counts_exactly_like_the_in_process_processor(
    chains: list[list[tuple[str, dict[str, Any], bool]]], batch: int
) -> None:
    (expected, expected_stats), spans = _run_chains(chains)
    manager = LLMProviderManager(store=False, metrics=False)
    try:
        ingest = OtlpIngest(QuotaSpanProcessor(manager))
        for start in range(0, len(spans), batch):  # export batches, in end order as the SDK's
            request = ExportTraceServiceRequest.FromString(
                encode_spans(spans[start : start + batch]).SerializeToString()
            )
            ingest.ingest(request)
        assert totals(manager) == expected
        stats = ingest.processor.stats
        assert (stats.counted_spans, stats.duplicate_spans, stats.skipped_values) == (
            expected_stats.counted_spans,
            expected_stats.duplicate_spans,
            expected_stats.skipped_values,
        )
    finally:
        manager.close()


async def test_otlp_metrics_are_pushed_to_an_otlp_receiver(
    monkeypatch: pytest.MonkeyPatch, client_for: Any
) -> None:
    from aiohttp import web
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    received: list[ExportMetricsServiceRequest] = []

    async def metrics(request: web.Request) -> web.Response:
        received.append(ExportMetricsServiceRequest.FromString(await request.read()))
        return web.Response(body=b"", content_type=PROTOBUF)

    receiver = web.Application()
    receiver.router.add_post("/v1/metrics", metrics)
    server = TestServer(receiver, host="127.0.0.1")
    await server.start_server()
    try:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", str(server.make_url("/v1/metrics"))
        )
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # only the flush exports
        manager = LLMProviderManager(store=False, metrics=False)
        service = QuotaService(QuotaSetup(manager=manager), metrics=False, otlp_metrics=True)
        client = await client_for(service)
        status, _, _ = await post(client, request_bytes(ended_spans([llm_attrs(inp=9, out=1)])))
        assert status == 200
        await asyncio.to_thread(service.close)  # its last export
    finally:
        await server.close()
    usage = [
        point.as_double if point.HasField("as_double") else point.as_int
        for request in received
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == "llm.quota.usage"
        for point in metric.gauge.data_points
    ]
    assert usage == [10]


# -- run_service and the command ------------------------------------------------------------------


async def test_run_service_serves_tls_and_flushes_the_store_when_stopped(tmp_path: Any) -> None:
    import ssl

    import aiohttp

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    store = f"sqlite:///{tmp_path}/quota.db"
    # A long flush interval: only the final flush at stop can bring the usage to the store.
    manager = LLMProviderManager(store=store, metrics=False, flush_interval_seconds=3600)
    service = QuotaService(QuotaSetup(manager=manager))
    urls: asyncio.Queue[str] = asyncio.Queue()
    stop = asyncio.Event()
    task = asyncio.ensure_future(
        run_service(
            service, "127.0.0.1", 0, ssl_context=server_context, ready=urls.put_nowait, stop=stop
        )
    )
    url = await urls.get()
    assert url.startswith("https://127.0.0.1:")
    body = request_bytes(ended_spans([llm_attrs(inp=30, out=12)]))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url + "/v1/traces", data=body, headers={"Content-Type": PROTOBUF}, ssl=client_context
        ) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
            await session.post(url.replace("https", "http") + "/v1/traces", data=body)
    stop.set()
    await task
    reader = LLMProviderManager(store=store, metrics=False)
    try:
        info = reader.ledger.get("openai")
        assert info is not None
        assert (info.total_tokens, info.total_requests) == (42, 1)
    finally:
        reader.close()


def test_serve_command_refuses_half_a_tls_pair_and_a_bad_config(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from otel_llm_quota.cli import cli

    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    result = CliRunner().invoke(cli, ["serve", "--tls-cert", str(cert)])
    assert result.exit_code == 1
    assert "--tls-cert and --tls-key go together" in result.output
    bad = tmp_path / "quotas.json"
    bad.write_text('{"quotas": [{"config_id": "a", "limit": -5}]}')
    result = CliRunner().invoke(cli, ["serve", "--config", str(bad), "--port", "0"])
    assert result.exit_code == 1
    assert "quotas" in result.output


def test_serve_names_the_store_option_that_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from otel_llm_quota.cli import cli

    # serve copies --store into the variable: setenv makes monkeypatch restore it afterwards
    monkeypatch.setenv("OTEL_LLM_QUOTA_STORE", "")
    result = CliRunner().invoke(cli, ["serve", "--store", "bogus://x", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: --store: unknown store URL"), result.output


# -- cost ----------------------------------------------------------------------------------------

_PRICES = [  # USD per million tokens: each rate different, so a misread count shows
    {"provider": "anthropic", "model": "claude-x*", "input": 3.0, "output": 15.0}
    | {"cache_read": 0.30, "cache_write": 3.75},
]
_CACHE_KEYS = [  # (cache read, cache write) attribute keys of the instrumentations read
    ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    ("gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cache_creation_input_tokens"),
    ("llm.token_count.prompt_details.cache_read", "llm.token_count.prompt_details.cache_write"),
]


def costs(manager: LLMProviderManager) -> dict[str, tuple[int, int]]:
    return {q.config_id: (q.cost_microusd, q.unpriced_requests) for q in manager.ledger.get_all()}


@pytest.mark.parametrize(("read_key", "write_key"), _CACHE_KEYS)
async def test_an_otlp_span_of_a_priced_model_costs_what_it_costs_in_process(
    make_service: Callable[..., QuotaService], client_for: Any, read_key: str, write_key: str
) -> None:
    """The processor's model and cache-token reads work on the service's span views: the same
    spans cost the same through OTLP as in process, cache tokens at their own rates."""
    cached = {  # input tokens include the cache reads and writes, as the conventions say
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-x",
        "gen_ai.response.model": "claude-x-2026",
        "gen_ai.usage.input_tokens": 215,
        "gen_ai.usage.output_tokens": 10,
        read_key: 10,
        write_key: 5,
    }
    specs = [cached, {**cached, read_key: 0}]
    specs.append({**cached, "gen_ai.response.model": "unknown-model"})  # unpriced
    in_process = LLMProviderManager(store=False, metrics=False)
    in_process.set_prices(_PRICES)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    provider.add_span_processor(QuotaSpanProcessor(in_process))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for attrs in specs:
        provider.get_tracer("test").start_span("chat", attributes=attrs).end()
    provider.shutdown()
    expected = costs(in_process)
    in_process.close()
    # By hand, micro-USD: 200 x 3 + 10 x 15 + 10 x 0.30 + 5 x 3.75 = 771.75 -> 772, and with no
    # cache reads 210 x 3 + 10 x 15 + 5 x 3.75 = 798.75 -> 799; the unknown model is unpriced.
    assert expected == {"anthropic": (772 + 799, 1)}
    service = make_service()
    service.manager.set_prices(_PRICES)
    client = await client_for(service)
    status, _, _ = await post(client, request_bytes(list(exporter.get_finished_spans())))
    assert status == 200
    assert costs(service.manager) == expected
