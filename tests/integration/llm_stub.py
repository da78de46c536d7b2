"""A loopback stub of the OpenAI chat-completions and Anthropic messages APIs, for the real clients.

It binds 127.0.0.1 on a free port, serves from a daemon thread and talks to nothing else. Usage
numbers are fixed, so tests can assert exact token totals:

* OpenAI: ``prompt_tokens=11, completion_tokens=7, total_tokens=18``;
* Anthropic: ``input_tokens=13, output_tokens=5``; a stream sends ``output_tokens=1`` in
  ``message_start`` and the cumulative ``5`` in ``message_delta``, as the real API does.

The request's ``model`` chooses a behaviour: ``err500`` / ``err429`` in it answer with the
provider's error body; ``cache`` in it adds cached-token fields (OpenAI ``cached_tokens=3``,
``reasoning_tokens=2``; Anthropic ``cache_read_input_tokens=3``, ``cache_creation_input_tokens=2``).
``big`` in it multiplies every usage number by 1,000 (so that a cost in micro-USD shows each
rate: the cost tests); ``custom`` in it answers with the request's model instead of the stub's
priced one (a fine-tuned or self-hosted model no price table knows).
Every response has its own id (``chatcmpl-stub-N`` / ``msg_stub_N``), as real responses do.

Run it alone with ``python tests/integration/llm_stub.py`` (prints the port).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
ANTHROPIC_INPUT_TOKENS = 13
ANTHROPIC_OUTPUT_TOKENS = 5
OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"
TEXT_PARTS = ("Hello", " from", " stub")


def _scale(model: str) -> int:
    return 1000 if "big" in model else 1


def _openai_usage(model: str) -> dict[str, Any]:
    k = _scale(model)
    usage: dict[str, Any] = {key: value * k for key, value in OPENAI_USAGE.items()}
    if "cache" in model:
        usage["prompt_tokens_details"] = {"cached_tokens": 3 * k, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 2 * k,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _anthropic_usage(model: str, output_tokens: int) -> dict[str, Any]:
    cached = "cache" in model
    k = _scale(model)
    return {
        "input_tokens": ANTHROPIC_INPUT_TOKENS * k,
        "output_tokens": output_tokens * k,
        "cache_creation_input_tokens": 2 * k if cached else 0,
        "cache_read_input_tokens": 3 * k if cached else 0,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
        pass  # keep test output clean

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _sse(self, events: list[tuple[str | None, Any]], headers: dict[str, str]) -> None:
        # No content-length: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event, data in events:
            payload = data if isinstance(data, str) else json.dumps(data)
            chunk = (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
            self.wfile.write(chunk.encode())
            self.wfile.flush()
        self.close_connection = True

    def do_POST(self) -> None:  # named by http.server
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.record(self.path, dict(self.headers.items()), body)
        model = str(body.get("model", ""))
        path = self.path.rstrip("/")
        if path.endswith("/chat/completions"):
            self._openai(body, model)
        elif path.endswith("/messages"):
            self._anthropic(body, model)
        else:
            error = {"message": f"no route {self.path}", "type": "invalid_request_error"}
            self._json(404, {"error": error}, {})

    def _openai(self, body: dict[str, Any], model: str) -> None:
        headers = {"x-request-id": "req_openai_stub"}
        if "err500" in model:
            error = {"message": "stub error", "type": "server_error", "param": None, "code": None}
            self._json(500, {"error": error}, headers)
            return
        if "err429" in model:
            error = {
                "message": "stub rate limit",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
            self._json(429, {"error": error}, {**headers, "retry-after": "0"})
            return
        response_id = f"chatcmpl-stub-{self.server.next_id()}"
        base = {
            "id": response_id,
            "created": int(time.time()),
            "model": model if "custom" in model else OPENAI_MODEL,
            "system_fingerprint": "fp_stub",
            "service_tier": "default",
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(TEXT_PARTS), "refusal": None}
            choice = {"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}
            response = {**base, "object": "chat.completion", "choices": [choice]}
            self._json(200, {**response, "usage": _openai_usage(model)}, headers)
            return
        base["object"] = "chat.completion.chunk"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            extra = {"usage": None} if include_usage else {}
            return {**base, "choices": [choice], **extra}

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": part}) for part in TEXT_PARTS]
        chunks.append(chunk({}, "stop"))
        if include_usage:
            chunks.append({**base, "choices": [], "usage": _openai_usage(model)})
        self._sse([(None, c) for c in chunks] + [(None, "[DONE]")], headers)

    def _anthropic(self, body: dict[str, Any], model: str) -> None:
        headers = {"request-id": "req_anthropic_stub"}
        if "err500" in model:
            error = {"type": "api_error", "message": "stub error"}
            self._json(500, {"type": "error", "error": error}, headers)
            return
        if "err429" in model:
            error = {"type": "rate_limit_error", "message": "stub rate limit"}
            self._json(429, {"type": "error", "error": error}, {**headers, "retry-after": "0"})
            return
        message: dict[str, Any] = {
            "id": f"msg_stub_{self.server.next_id()}",
            "type": "message",
            "role": "assistant",
            "model": model if "custom" in model else ANTHROPIC_MODEL,
            "stop_sequence": None,
        }
        if not body.get("stream"):
            message.update(
                content=[{"type": "text", "text": "".join(TEXT_PARTS)}],
                stop_reason="end_turn",
                usage=_anthropic_usage(model, ANTHROPIC_OUTPUT_TOKENS),
            )
            self._json(200, message, headers)
            return
        message.update(content=[], stop_reason=None, usage=_anthropic_usage(model, 1))
        block = {"type": "text", "text": ""}
        events: list[tuple[str | None, Any]] = [
            ("message_start", {"type": "message_start", "message": message}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ),
            ("ping", {"type": "ping"}),
        ]
        for part in TEXT_PARTS:
            delta = {"type": "text_delta", "text": part}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            )
        final_delta = {"stop_reason": "end_turn", "stop_sequence": None}
        final_usage = {"output_tokens": ANTHROPIC_OUTPUT_TOKENS * _scale(model)}
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {"type": "message_delta", "delta": final_delta, "usage": final_usage},
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._sse(events, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[dict[str, Any]] = []

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def record(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})


class LLMStub:
    """``with LLMStub() as stub: openai.OpenAI(base_url=stub.openai_base_url, ...)``."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="llm-stub", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far: path, headers, JSON body."""
        return list(self._server.requests)

    def start(self) -> LLMStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LLMStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    with LLMStub() as stub:
        print("listening on", stub.port, flush=True)
        threading.Event().wait()
