"""Real peers on 127.0.0.1 for the handler tests: an HTTP server that records requests, and
helpers to run the Debian Prometheus / Alertmanager binaries in a temporary directory."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the tests ask for these with require_module before using this module
    import httpx
    from aiohttp import web

T = TypeVar("T")


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class RecordingServer:
    """An aiohttp server that records every request and answers from a script.

    ``statuses`` are the status codes of the next answers (then 200). With ``hang`` set, requests
    wait until ``release`` is set (the fixture sets it at teardown).
    """

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    requests: list[Recorded] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = await request.read()
        self.requests.append(Recorded(request.method, request.path_qs, dict(request.headers), body))
        self.arrived.set()
        if self.hang:
            await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "error")

    async def start(self) -> RecordingServer:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._runner = runner
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


async def poll(
    probe: Callable[[], Awaitable[T | None]], *, deadline_seconds: float, what: str
) -> T:
    """Call ``probe`` until it returns something other than None, or fail after the deadline.

    For servers that change state asynchronously (a scrape, a notification): the test waits
    exactly as long as needed and fails with ``what`` when the deadline passes.
    """
    end = time.monotonic() + deadline_seconds
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_seconds}s waiting for {what}")
        await asyncio.sleep(0.2)


async def wait_ready(
    client: httpx.AsyncClient, url: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll ``url`` (``/-/ready``) until 200; fail with the server's log if it exits first."""

    import httpx

    async def ready() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            response = await client.get(url)
        except httpx.TransportError:
            return None
        return True if response.status_code == 200 else None

    await poll(ready, deadline_seconds=20, what=f"{url} to be ready")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def start_process(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server binary with its output going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def require_http_peers() -> None:
    """The HTTP tests need aiohttp (the peer) and httpx (the handlers' client)."""
    from .conftest import require_module

    require_module("aiohttp")
    require_module("httpx")
