"""The Redis test helpers of tests/_redis.py work with redis-py, sync and asyncio: servers that
keep or lose their data across a crash as configured, credentials and unix sockets in URLs, a
3-master cluster, ``CLIENT PAUSE``, and the proxy that applies commands but drops their replies."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
from _redis import RedisClusterServers, RedisServer, ReplyDroppingProxy
from redis.backoff import NoBackoff
from redis.retry import Retry

pytestmark = pytest.mark.integration

# A client that neither retries (redis-py retries 10 times by default when built from host/port
# keywords, none when built from a URL) nor waits long for a reply that will not come.
NO_RETRY = {"retry": Retry(NoBackoff(), 0)}


def test_set_get_sync(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.set("greeting", "hello")
    assert client.get("greeting") == "hello"
    client.close()


async def test_set_get_asyncio(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    assert await client.set("greeting", "hello")
    assert await client.get("greeting") == "hello"
    await client.aclose()


def test_redis_url_starts_empty(redis_url: str, redis_server: RedisServer) -> None:
    # Keys written by other tests are gone: the fixture flushed the shared server.
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("left-behind", 1)
    with redis_server.client() as direct:
        assert direct.get("left-behind") == "1"


def test_persistent_server_keeps_data_across_kill_and_restart(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(persist=True)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.incr("used") == 1
    assert client.incr("used") == 2
    pid = server.pid
    server.kill()
    assert not server.running
    server.restart()
    assert server.pid != pid
    # The same URL (same port) and the same client object work after the restart.
    assert client.get("used") == "2"
    client.close()


def test_restart_empty_loses_persisted_data(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(persist=True)
    with redis.Redis.from_url(server.url) as client:
        client.set("used", 5)
    server.stop()
    server.restart(empty=True)
    with redis.Redis.from_url(server.url) as client:
        assert client.get("used") is None


def test_non_persistent_server_loses_data_on_kill_but_stop_save_keeps_it(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    with server.client() as client:
        client.set("used", 5)
    server.kill()
    server.restart()
    with server.client() as client:
        assert client.get("used") is None
        client.set("used", 6)
    server.stop(save=True)  # SHUTDOWN SAVE writes dump.rdb, loaded on the next start
    server.restart()
    with server.client() as client:
        assert client.get("used") == "6"


async def test_password_acl_user_and_unix_socket_urls(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(password="s3cret", username="quota", unix_socket=True)
    assert server.url.startswith("redis://quota:s3cret@127.0.0.1:")
    assert server.unix_url.startswith("unix://quota:s3cret@/")
    for url in (server.url, server.unix_url, server.url.replace("quota:", ":")):
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        await client.incr("used")
        await client.aclose()
    with server.client() as direct:
        assert direct.get("used") == "3"
    wrong = redis.asyncio.Redis.from_url(server.url.replace("s3cret", "wrong"))
    with pytest.raises(redis.AuthenticationError):
        await wrong.ping()
    await wrong.aclose()
    anonymous = redis.asyncio.Redis.from_url(server.url.replace("quota:s3cret@", ""))
    with pytest.raises(redis.AuthenticationError):
        await anonymous.get("used")
    await anonymous.aclose()


def test_pause_holds_commands_of_other_clients(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    impatient = redis.Redis.from_url(server.url, socket_timeout=0.2, **NO_RETRY)
    patient = redis.Redis.from_url(server.url, socket_timeout=10, **NO_RETRY)
    assert impatient.ping()
    assert patient.ping()
    server.pause(1000)
    with pytest.raises(redis.TimeoutError):
        impatient.set("k", 1)
    assert patient.set("k", 2)  # answered once the pause is over
    impatient.close()
    patient.close()


async def test_cluster_keys_in_different_slots_and_hash_tagged_lua(
    redis_cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    assert redis_cluster_url == redis_cluster.url
    host, port = redis_cluster.startup_nodes[0]
    client = redis.asyncio.cluster.RedisCluster(host=host, port=port, decode_responses=True)
    keys = [f"quota:{name}" for name in ("openai", "anthropic", "mistral", "gemini", "cohere")]
    for n, key in enumerate(keys):
        await client.set(key, n)
    assert [await client.get(key) for key in keys] == [str(n) for n in range(len(keys))]
    owners = {client.get_node_from_key(key).port for key in keys}
    assert len(owners) > 1  # the keys really live on different masters

    # Multi-key Lua on one slot: the hash tag {q} puts both keys on the same node.
    script = """
        local used = redis.call('INCRBY', KEYS[1], ARGV[1])
        redis.call('SET', KEYS[2], used)
        return used
    """
    assert await client.eval(script, 2, "{q}:used", "{q}:last", 7) == 7
    assert await client.eval(script, 2, "{q}:used", "{q}:last", 5) == 12
    assert await client.get("{q}:last") == "12"
    # Without a shared tag the cluster refuses the cross-slot script.
    with pytest.raises(redis.RedisClusterException):
        await client.eval(script, 2, "a:used", "b:last", 1)
    await client.aclose()


def test_cluster_url_starts_empty(
    redis_cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    # Asked node by node: redis-py's RedisCluster.dbsize() answers for one node only.
    for node in redis_cluster.nodes:
        with node.client() as direct:
            assert direct.dbsize() == 0
    with redis_cluster.client() as client:
        client.set("left-behind", 1)


def test_proxy_drop_replies_applies_the_command_but_the_client_times_out(
    reply_dropping_proxy: ReplyDroppingProxy, redis_server: RedisServer
) -> None:
    proxy = reply_dropping_proxy
    client = redis.Redis.from_url(proxy.url(), socket_timeout=0.5, **NO_RETRY)
    assert client.ping()  # connect (and handshake) while replies still pass
    proxy.set_mode("drop_replies")
    with pytest.raises(redis.TimeoutError):
        client.incr("k")
    with redis_server.client() as direct:
        assert direct.get("k") == "1"  # applied, though the client saw a failure

    proxy.set_mode("refuse")
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(proxy.url(), socket_timeout=0.5, **NO_RETRY).ping()
    with pytest.raises(redis.ConnectionError):
        client.ping()

    proxy.set_mode("forward")
    assert client.incr("k") == 2  # the client reconnects through the proxy
    client.close()


async def test_proxy_drop_replies_with_asyncio(
    reply_dropping_proxy: ReplyDroppingProxy, redis_server: RedisServer
) -> None:
    proxy = reply_dropping_proxy
    client = redis.asyncio.Redis.from_url(proxy.url(), socket_timeout=0.5, **NO_RETRY)
    assert await client.ping()
    proxy.set_mode("drop_replies")
    with pytest.raises(redis.TimeoutError):
        await client.incr("k")
    with redis_server.client() as direct:
        assert direct.get("k") == "1"
    proxy.set_mode("forward")
    assert await client.incr("k") == 2
    await client.aclose()


def test_proxy_refuses_connections_before_any_reply() -> None:
    # A proxy with nothing behind it in refuse mode: every connection is closed at once.
    with ReplyDroppingProxy(("127.0.0.1", 9), mode="refuse") as proxy:
        client = redis.Redis.from_url(proxy.url(), socket_timeout=0.5, **NO_RETRY)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        assert proxy.accepted >= 1


def test_proxy_refuse_closes_idle_open_connections(
    reply_dropping_proxy: ReplyDroppingProxy,
) -> None:
    with socket.create_connection(reply_dropping_proxy.address, timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"
        reply_dropping_proxy.set_mode("refuse")
        # Closed by the proxy without the client sending anything more: EOF, or a reset.
        try:
            assert sock.recv(64) == b""
        except ConnectionResetError:
            pass
