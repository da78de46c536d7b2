"""A loopback stand-in for the OpenAI chat-completions API, for ``otel-llm-quota demo``.

It binds 127.0.0.1 on a free port and serves ``POST /v1/chat/completions`` (plain and streamed,
with ``stream_options.include_usage``) from daemon threads; it talks to nothing else and needs
no key. Each answer bills a usage that varies from request to request (so the demo's bars move
unevenly) and is recorded in ``billed()``: what a real provider would invoice, to compare with
what the quotas counted.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Billed", "DemoStub", "usage_for"]

_REPLIES = (
    "Sure, here is a short answer.",
    "The summary is below.",
    "Thanks for asking: the order ships tomorrow.",
    "Here are three ideas worth a look.",
)


@dataclass(frozen=True, slots=True)
class Billed:
    """What the stub has answered so far: requests and their tokens."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def usage_for(body: dict[str, Any], number: int) -> tuple[int, int]:
    """The (prompt, completion) tokens billed for request ``number`` (1, 2, ...) with ``body``.

    The prompt grows with the words sent; the completion varies with the request number and
    stays within ``max_completion_tokens``/``max_tokens`` when the request sets one.
    """
    words = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
    prompt = 12 + 3 * words
    completion = 24 + (number * 37) % 61
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(cap, int) and cap > 0:
        completion = min(completion, cap)
    return prompt, completion


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
        pass  # the demo's screen is for quotas, not access logs

    def _send(self, status: int, content_type: str, raw: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("x-request-id", "req_demo_stub")
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        else:
            self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # named by http.server
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not self.path.rstrip("/").endswith("/chat/completions"):
            error = {"message": f"no route {self.path}", "type": "invalid_request_error"}
            self._send(404, "application/json", json.dumps({"error": error}).encode())
            return
        number, prompt, completion = self.server.bill(body)
        model = str(body.get("model") or "gpt-4o-mini")
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        text = _REPLIES[number % len(_REPLIES)]
        base = {
            "id": f"chatcmpl-demo-{number}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_demo",
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "finish_reason": "stop", "logprobs": None, "message": message}
            response = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            self._send(200, "application/json", json.dumps(response).encode())
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base["object"] = "chat.completion.chunk"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**base, "choices": [choice], **({"usage": None} if include_usage else {})}

        chunks: list[Any] = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": word + " "}) for word in text.split()]
        chunks.append(chunk({}, "stop"))
        if include_usage:
            chunks.append({**base, "choices": [], "usage": usage})
        events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self._send(200, "text/event-stream", events.encode(), close=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.billed = Billed()

    def bill(self, body: dict[str, Any]) -> tuple[int, int, int]:
        with self._lock:
            number = next(self._numbers)
            prompt, completion = usage_for(body, number)
            old = self.billed
            self.billed = Billed(
                old.requests + 1, old.prompt_tokens + prompt, old.completion_tokens + completion
            )
        return number, prompt, completion


class DemoStub:
    """The stub server: ``with DemoStub() as stub: OpenAI(base_url=stub.base_url, ...)``."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otel-llm-quota-demo-stub",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1)."""
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The ``base_url`` for the ``openai`` client."""
        return f"http://127.0.0.1:{self.port}/v1"

    def billed(self) -> Billed:
        """Requests and tokens answered so far."""
        return self._server.billed

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> DemoStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
