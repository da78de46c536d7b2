"""Real Redis servers on 127.0.0.1 for the store tests (Debian's ``redis-server``/``redis-cli``).

- ``RedisServer``: one ``redis-server`` in its own temporary directory on a free loopback port,
  optionally persistent (AOF, fsync on every write), password/ACL protected, or on a unix socket;
  it can be stopped, SIGKILLed, restarted on the same port (the same URL keeps working), wiped,
  and paused (``CLIENT PAUSE``).
- ``RedisClusterServers``: three masters joined with ``redis-cli --cluster create`` (no replicas).
- ``ReplyDroppingProxy``: a TCP proxy in front of a server whose mode the test switches at run
  time: ``forward``, ``drop_replies`` (commands reach the server and are applied, replies are
  thrown away: the client times out on a command that did happen, the "ambiguous failure" case),
  ``refuse`` (every connection is closed).

Importable as ``_redis`` from tests/ and tests/integration/ (tests/ is on ``sys.path``, like
``_forking``). redis-py is imported lazily, so collecting the tests does not need it; the
fixtures in tests/conftest.py call ``require_redis`` first, which fails under ``CI=true`` and
skips elsewhere when a binary or redis-py is missing.

Waiting for a server to come up polls ``PING`` until a deadline: that is synchronisation with a
real process start, not a sleep standing in for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    import redis
    import redis.cluster

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
INSTALL_HINT = "run `make system-deps` (Debian packages redis-server and redis-tools)"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
CLUSTER_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.02

ProxyMode = Literal["forward", "drop_replies", "refuse", "drop_next_script_reply"]


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message + "; CI must install it", pytrace=False)
    pytest.skip(message)


def require_redis() -> None:
    """Fail (``CI=true``) or skip (elsewhere) unless redis-server, redis-cli and redis-py exist.

    Mirrors ``require_binary``/``require_module`` of tests/integration/conftest.py, which the
    top-level conftest cannot import.
    """
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            _missing(f"executable {binary!r} is not available ({INSTALL_HINT})")
    try:
        importlib.import_module("redis")
    except ImportError:
        _missing("Python module 'redis' is not available (run `make venv`)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port whose ``+10000`` neighbour is also a valid port (the default bus port rule is
    not used here: the bus port is given explicitly, but keep both below 65536 anyway)."""
    while True:
        port = free_port()
        if port + 10000 <= 65535:
            return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, in a temporary directory of its own.

    ``persist=True`` turns on the append-only file with ``appendfsync always``: every write
    acknowledged to a client is on disk, so ``kill()`` + ``restart()`` keeps it. Without it,
    nothing is ever saved (``--save ''``, no AOF) unless ``stop(save=True)`` asks for an RDB.

    ``password`` sets ``requirepass`` (the default user); ``username`` adds an ACL user with
    that password and all permissions, so both ``redis://:pw@`` and ``redis://user:pw@`` work.
    ``unix_socket=True`` also listens on ``<tmpdir>/redis.sock`` (mode 700): see ``unix_url``.
    """

    def __init__(
        self,
        *,
        persist: bool = False,
        password: str | None = None,
        username: str | None = None,
        unix_socket: bool = False,
        extra_args: tuple[str, ...] = (),
        binary: str = "redis-server",
    ) -> None:
        if username is not None and password is None:
            raise ValueError("an ACL user needs a password")
        self.persist = persist
        self.password = password
        self.username = username
        self.binary = binary
        self.extra_args = extra_args
        self.root = Path(tempfile.mkdtemp(prefix="otel-llm-quota-redis-"))
        self.data_dir = self.root / "data"
        self.data_dir.mkdir()
        self.log_path = self.root / "redis.log"
        self.socket_path: Path | None = self.root / "redis.sock" if unix_socket else None
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- addresses -------------------------------------------------------------------------

    def _userinfo(self) -> str:
        if self.password is None:
            return ""
        return f"{self.username or ''}:{self.password}@"

    @property
    def url(self) -> str:
        """``redis://[user:pass@]127.0.0.1:PORT/0``: the same across ``restart()``."""
        return f"redis://{self._userinfo()}{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """``unix://[user:pass@]/path/redis.sock?db=0`` (needs ``unix_socket=True``)."""
        if self.socket_path is None:
            raise RuntimeError("this server has no unix socket (unix_socket=False)")
        return f"unix://{self._userinfo()}{self.socket_path}?db=0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--save",
            "",
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.username is not None:
            args += ["--user", self.username, "on", f">{self.password}", "~*", "&*", "+@all"]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        args += list(self.extra_args)
        return args

    def start(self) -> RedisServer:
        """Start on a fresh free port (retried if another process takes it first); wait until
        ``PING`` answers."""
        if self.running:
            raise RuntimeError("already running")
        for attempt in range(5):
            self.port = self._choose_port()
            try:
                self._launch()
                return self
            except _PortTaken:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _choose_port(self) -> int:
        return free_port()

    def restart(self, empty: bool = False) -> RedisServer:
        """Start again on the same port (after ``stop()``/``kill()``, or stopping it first with a
        SIGKILL if it still runs). ``empty=True`` wipes the data directory first."""
        if self.running:
            self.kill()
        if empty:
            shutil.rmtree(self.data_dir)
            self.data_dir.mkdir()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                self._launch()
                return self
            except _PortTaken:
                # The old socket is gone at once (SO_REUSEADDR); something else grabbed the
                # port between our stop and this start. Nothing to do but report it.
                if time.monotonic() > deadline:
                    raise

    def _launch(self) -> None:
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                self._args(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        assert self._proc is not None
        with self.client(socket_timeout=1.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self._proc = None
                    log = self.log_since_launch()
                    if "Address already in use" in log:
                        raise _PortTaken(log)
                    raise RuntimeError(f"redis-server exited with {code}:\n{log}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:  # refused, or BusyLoadingError while loading
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"redis-server did not answer PING:\n{self.log_tail()}")
                time.sleep(_POLL_SECONDS)

    def stop(self, save: bool = False) -> None:
        """Graceful ``SHUTDOWN SAVE`` / ``SHUTDOWN NOSAVE``; waits for the process to exit. With a
        persistent server the AOF is already complete either way."""
        if not self.running:
            self._proc = None
            return
        import redis

        assert self._proc is not None
        try:
            with self.client(socket_timeout=STOP_TIMEOUT_SECONDS) as client:
                client.shutdown(save=save, nosave=not save)
        except redis.RedisError:
            pass  # the process is waited for (and killed if need be) below
        try:
            self._proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save (a crash)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()
        self._proc = None

    def cleanup(self) -> None:
        """Kill the process if it still runs and remove the temporary directory."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- helpers for tests -----------------------------------------------------------------

    def client(self, **kwargs: Any) -> redis.Redis:
        """A synchronous redis-py client straight to the server (not through any proxy), with
        the server's credentials; ``decode_responses=True`` and no retries unless told otherwise
        (redis-py retries 10 times with backoff by default when built from host/port)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        kwargs.setdefault("socket_timeout", 5.0)
        return redis.Redis(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            **kwargs,
        )

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()

    def pause(self, ms: int) -> None:
        """``CLIENT PAUSE ms ALL``: every client's commands wait ``ms`` milliseconds, including
        those of the connection that sent it (Redis 7.0 also holds ``CLIENT UNPAUSE`` sent on
        another connection, so there is no early end). Returns as soon as the pause is on."""
        with self.client() as client:
            client.execute_command("CLIENT", "PAUSE", str(ms), "ALL")

    def log_since_launch(self) -> str:
        """What the current (or last) process wrote to the log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class _PortTaken(RuntimeError):
    """redis-server could not bind its port (another process took it after ``free_port``)."""


class RedisClusterServers:
    """Three cluster-enabled masters on 127.0.0.1 joined by ``redis-cli --cluster create`` with
    no replicas; ``start()`` returns once ``CLUSTER INFO`` says ``cluster_state:ok`` on every
    node and every node sees all three masters.

    Each node's cluster bus port is chosen free and given with ``--cluster-port`` (the default,
    port + 10000, may be taken or out of range)."""

    def __init__(self, masters: int = 3) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.nodes = [_ClusterNode() for _ in range(masters)]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:PORT`` for the first node (the project's own scheme)."""
        first = self.nodes[0]
        return f"redis+cluster://{first.host}:{first.port}"

    def start(self) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            create = subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"{host}:{port}" for host, port in self.startup_nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=CLUSTER_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if create.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}"
                )
            self._wait_ok()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + CLUSTER_TIMEOUT_SECONDS
        want = len(self.nodes)
        while True:
            states = []
            for node in self.nodes:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info if isinstance(info, str) else str(info)
                    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                    states.append(
                        fields.get("cluster_state") == "ok"
                        and fields.get("cluster_known_nodes") == str(want)
                        and fields.get("cluster_slots_ok") == "16384"
                    )
            if all(states):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {CLUSTER_TIMEOUT_SECONDS} s: {states}")
            time.sleep(_POLL_SECONDS * 5)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A synchronous redis-py cluster client (``decode_responses=True`` by default)."""
        from redis.cluster import ClusterNode, RedisCluster

        kwargs.setdefault("decode_responses", True)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.startup_nodes],
            **kwargs,
        )

    def flushall(self) -> None:
        """``FLUSHALL`` on every master (FLUSHALL acts on one node only)."""
        for node in self.nodes:
            node.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class _ClusterNode(RedisServer):
    """A cluster-enabled ``RedisServer``: ``nodes.conf`` in its data dir, explicit bus port."""

    def __init__(self) -> None:
        super().__init__()
        self.bus_port = 0

    def _choose_port(self) -> int:
        self.bus_port = free_port()
        return _free_cluster_port()

    def _args(self) -> list[str]:
        return [
            *super()._args(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.data_dir / "nodes.conf"),
            "--cluster-node-timeout",
            "5000",
            "--cluster-port",
            str(self.bus_port),
        ]


class ReplyDroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (host, port), run by an asyncio loop
    in a daemon thread of its own, so sync and async tests can use it alike.

    ``set_mode`` is thread-safe and has taken effect when it returns:

    - ``forward``: bytes pass both ways unchanged.
    - ``drop_replies``: client -> server bytes are forwarded (the command is applied), server ->
      client bytes are read and discarded, so the client waits for a reply that never comes.
    - ``refuse``: open connections are closed, new ones are closed as soon as they are accepted.
    - ``drop_next_script_reply``: forward, until a client sends a script call (``EVALSHA`` or
      ``EVAL``): that connection's replies are dropped from then on (the script runs, its
      caller times out), and the mode is ``forward`` again for every other connection. So the
      ambiguous failure hits the first flush script, whatever reads came before it.

    Switching back to ``forward`` affects only bytes read after the switch: a reply dropped
    before it is lost for good (as on a real network), so a client should reconnect.
    """

    def __init__(self, upstream: tuple[str, int], mode: ProxyMode = "forward") -> None:
        self.upstream = upstream
        self._mode: ProxyMode = mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="redis-reply-dropping-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0  # connections accepted so far (read from any thread)

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def url(self, db: int = 0, userinfo: str = "") -> str:
        """``redis://[userinfo@]127.0.0.1:PROXYPORT/db``."""
        return f"redis://{userinfo}{self.host}:{self.port}/{db}"

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ReplyDroppingProxy:
        self._thread.start()
        self._server = self._call(self._start_server())
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _start_server(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, self.host, 0)

    def set_mode(self, mode: ProxyMode) -> None:
        if mode not in ("forward", "drop_replies", "refuse", "drop_next_script_reply"):
            raise ValueError(f"unknown proxy mode {mode!r}")
        self._call(self._set_mode(mode))

    async def _set_mode(self, mode: ProxyMode) -> None:
        self._mode = mode
        if mode == "refuse":
            for writer in list(self._writers):
                writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "refuse":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        muted = [False]  # this connection's replies are dropped (drop_next_script_reply)
        pumps = {
            asyncio.ensure_future(self._pump(reader, up_writer, replies=False, muted=muted)),
            asyncio.ensure_future(self._pump(up_reader, writer, replies=True, muted=muted)),
        }
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        replies: bool,
        muted: list[bool],
    ) -> None:
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                return
            if not data or self._mode == "refuse":
                return
            if not replies and self._mode == "drop_next_script_reply" and b"EVAL" in data.upper():
                muted[0] = True
                self._mode = "forward"
            if replies and (self._mode == "drop_replies" or muted[0]):
                continue
            writer.write(data)
            try:
                await writer.drain()
            except OSError:
                return

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        # The aborted transports end every pump, so each handler finishes on its own (cancelling
        # a handler task would make asyncio's stream callback log the CancelledError).
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> ReplyDroppingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_servers() -> Iterator[Callable[..., RedisServer]]:
    """A factory of started ``RedisServer``s (keyword arguments as for ``RedisServer``), all
    cleaned up on exit; behind the ``redis_server_factory`` fixture."""
    made: list[RedisServer] = []

    def factory(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        made.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in made:
            server.cleanup()
