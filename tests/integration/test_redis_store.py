"""RedisStore against real servers (what the contract suite cannot show): credentials and unix
sockets in URLs, TLS with client certificates, key prefixes, a client passed in, a cluster with
configs on every master, scripts lost by SCRIPT FLUSH, no retries, and the ambiguous failure (the
server applied a flush whose reply was lost) counted once on retry."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
from _redis import (
    RedisClusterServers,
    RedisServer,
    ReplyDroppingProxy,
    free_port,
    require_redis,
)
from redis.crc import key_slot

from otel_llm_quota.stores import (
    ConfigRecord,
    Counts,
    Delta,
    FlushBatch,
    StoreError,
    Window,
    open_store,
)
from otel_llm_quota.stores._base import TOMBSTONE_SECONDS
from otel_llm_quota.stores._redis import RedisStore

pytestmark = pytest.mark.integration

W = Window(1_700_000_000, 0, 7200)
PASSWORD = "s3cret-pw"


def one(
    config_id: str = "a",
    seq: int = 1,
    writer: str = "w",
    counts: Counts = (1, 0, 10, 5, 0, 0, 0),
) -> FlushBatch:
    return FlushBatch(writer, seq, (Delta(config_id, W, counts, "openai"),))


@pytest.fixture
async def stores() -> AsyncIterator[list[RedisStore]]:
    """Stores made by a test, closed at teardown."""
    made: list[RedisStore] = []
    yield made
    for store in made:
        await store.aclose()


def opened(stores: list[RedisStore], url: str, **options: object) -> RedisStore:
    store = open_store(url, **options)
    assert isinstance(store, RedisStore)
    stores.append(store)
    return store


# -- credentials, unix sockets, TLS ------------------------------------------------------------


@pytest.mark.parametrize("username", [None, "quota-app"])
async def test_password_and_acl_user_urls_work_and_are_redacted(
    redis_server_factory: Callable[..., RedisServer],
    stores: list[RedisStore],
    username: str | None,
) -> None:
    server = redis_server_factory(password=PASSWORD, username=username)
    store = opened(stores, server.url)
    [a] = await store.apply(one())
    assert a.window_counts == (1, 0, 10, 5, 0, 0, 0)
    for text in (store.url, repr(store)):
        assert PASSWORD not in text
        assert "***" in text
    wrong = opened(stores, server.url.replace(PASSWORD, "wrong-pw"))
    with pytest.raises(StoreError) as caught:
        await wrong.apply(one())
    message = str(caught.value)
    assert "wrong-pw" not in message
    assert PASSWORD not in message
    assert "apply" in message
    assert wrong.url in message
    assert caught.value.__cause__ is None  # the redis-py exception is not chained to the logs


@pytest.mark.parametrize("password", [None, PASSWORD])
async def test_unix_socket_url(
    redis_server_factory: Callable[..., RedisServer],
    stores: list[RedisStore],
    password: str | None,
) -> None:
    server = redis_server_factory(unix_socket=True, password=password)
    url = server.unix_url if password else f"unix://{server.socket_path}"  # unix:///path
    store = opened(stores, url)
    assert store.url.startswith("unix:")
    assert str(server.socket_path) in store.url
    assert PASSWORD not in store.url
    await store.apply(one())
    [a] = await store.read([("a", W.start)])
    assert a.lifetime == (1, 0, 10, 5, 0, 0, 0)


def _tls_files(tmp_path: Path) -> dict[str, str]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("quota-client")
    files = {
        "ca": tmp_path / "ca.pem",
        "server_cert": tmp_path / "server.pem",
        "server_key": tmp_path / "server.key",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client-secret.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(files["server_cert"]))
    server_cert.private_key_pem.write_to_path(str(files["server_key"]))
    client_cert.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client_cert.private_key_pem.write_to_path(str(files["client_key"]))
    return {name: str(path) for name, path in files.items()}


@pytest.mark.parametrize("where", ["options", "query"])
async def test_tls_with_client_certificate(
    redis_server_factory: Callable[..., RedisServer],
    stores: list[RedisStore],
    tmp_path: Path,
    where: str,
) -> None:
    files = _tls_files(tmp_path)
    tls_port = free_port()
    redis_server_factory(
        extra_args=(
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            files["server_cert"],
            "--tls-key-file",
            files["server_key"],
            "--tls-ca-cert-file",
            files["ca"],
            "--tls-auth-clients",
            "yes",
        )
    )
    tls = {
        "ssl_ca_certs": files["ca"],
        "ssl_certfile": files["client_cert"],
        "ssl_keyfile": files["client_key"],
    }
    base = f"rediss://127.0.0.1:{tls_port}/0"
    if where == "options":
        store = opened(stores, base, **tls)
    else:
        store = opened(stores, base + "?" + "&".join(f"{k}={v}" for k, v in tls.items()))
    [a] = await store.apply(one())
    assert a.window_counts == (1, 0, 10, 5, 0, 0, 0)
    assert "client-secret" not in store.url
    assert "client-secret" not in repr(store)
    # Without a client certificate the server refuses the handshake: the error names the
    # redacted URL, not the key path given to the store.
    no_cert = opened(
        stores, base, ssl_ca_certs=files["ca"], ssl_keyfile=files["client_key"] + ".missing"
    )
    with pytest.raises(StoreError) as caught:
        await no_cert.apply(one())
    assert "client-secret" not in str(caught.value)
    assert base in str(caught.value)


# -- key prefixes and client objects -----------------------------------------------------------


async def test_two_key_prefixes_on_one_server_do_not_see_each_other(
    redis_url: str, redis_server: RedisServer, stores: list[RedisStore]
) -> None:
    app1 = opened(stores, redis_url)  # the default prefix, llm_quota:
    app2 = opened(stores, redis_url, key_prefix="other_app:")
    await app1.apply(one("shared-name", counts=(1, 0, 1, 0, 0, 0, 0)))
    await app2.apply(one("shared-name", counts=(5, 0, 50, 0, 0, 0, 0)))
    await app2.put_config(ConfigRecord("only-in-2", None, 10, (80.0,), "day", "UTC", 1.0))
    [in1] = await app1.read([("shared-name", W.start)])
    [in2] = await app2.read([("shared-name", W.start)])
    assert in1.window_counts == (1, 0, 1, 0, 0, 0, 0)
    assert in2.window_counts == (5, 0, 50, 0, 0, 0, 0)
    assert await app1.config_ids() == ["shared-name"]
    assert await app2.config_ids() == ["only-in-2", "shared-name"]
    assert await app1.instance_id() != await app2.instance_id()
    assert await app1.delete("shared-name")
    [in2] = await app2.read([("shared-name", W.start)])
    assert in2.exists
    with redis_server.client() as direct:
        keys = direct.keys("*")
    assert keys
    assert all(k.startswith(("llm_quota:", "other_app:")) for k in keys)


def test_the_stores_package_imports_redis_py_only_for_redis_store() -> None:
    code = (
        "import sys, otel_llm_quota.stores as s; assert 'redis' not in sys.modules; "
        "from otel_llm_quota.stores import RedisStore; assert 'redis' in sys.modules; "
        "assert RedisStore is s.RedisStore"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_key_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        RedisStore("redis://127.0.0.1:1/0", key_prefix="app{1}:")


async def test_a_client_object_passed_in(redis_url: str, stores: list[RedisStore]) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client=client)
    stores.append(store)
    [a] = await store.apply(one())
    assert a.provider == "openai"
    assert a.window_counts == (1, 0, 10, 5, 0, 0, 0)  # decode_responses=True replies work too
    await store.put_config(ConfigRecord("a", "openai", 100, (50.0,), "day", "UTC", 1.0))
    [a] = await store.read([("a", W.start)])
    assert a.record is not None
    assert a.record.limit == 100
    assert store.url.startswith("redis://127.0.0.1:")
    await store.aclose()
    assert await client.ping()  # not ours to close
    await client.aclose()


async def test_a_cluster_client_object_passed_in(
    redis_cluster_url: str, redis_cluster: RedisClusterServers, stores: list[RedisStore]
) -> None:
    client = redis.asyncio.cluster.RedisCluster(
        startup_nodes=[
            redis.asyncio.cluster.ClusterNode(h, p) for h, p in redis_cluster.startup_nodes
        ]
    )
    store = RedisStore(client=client, close_client=True)
    stores.append(store)
    [a] = await store.apply(one())
    assert a.window_counts == (1, 0, 10, 5, 0, 0, 0)
    assert store.url.startswith("redis+cluster://127.0.0.1:")


# -- cluster -----------------------------------------------------------------------------------


async def test_cluster_spreads_configs_over_every_master(
    redis_cluster_url: str, redis_cluster: RedisClusterServers, stores: list[RedisStore]
) -> None:
    store = opened(stores, redis_cluster_url)
    # Braces in ids would split a config's keys over slots if the id were the hash tag.
    ids = [f"team-{n}/{{gpt}}-é" for n in range(60)] + ["{", "}", "{}", "a{b}c"]
    batch = FlushBatch(
        "w", 1, tuple(Delta(i, W, (1, 0, n + 1, 0, 0, 0, 0)) for n, i in enumerate(ids))
    )
    synced = await store.apply(batch)
    assert [s.window_counts[2] for s in synced] == list(range(1, len(ids) + 1))
    for node in redis_cluster.nodes:
        with node.client() as direct:
            assert direct.dbsize() > 5, f"no configs on master {node.port}"
    assert sorted(await store.config_ids()) == sorted(ids)
    read = await store.read([(i, W.start) for i in ids])
    assert [s.lifetime[2] for s in read] == list(range(1, len(ids) + 1))
    assert await store.reset("{}") == 1
    won, rec = await store.compare_and_set_alert("a{b}c", 0, "{}")
    assert won
    assert rec.version == 1
    for i in ids:
        assert await store.delete(i)
    left: list[str] = []
    for node in redis_cluster.nodes:
        with node.client() as direct:
            left += direct.keys("llm_quota:{*")
    assert sorted(left) == sorted(store.config_key_base(i) + "gone" for i in ids)  # tombstones


async def test_a_dead_cluster_master_fails_the_flush_with_store_error(
    stores: list[RedisStore],
) -> None:
    require_redis()
    with RedisClusterServers() as cluster:  # a cluster of its own: one master is killed
        store = opened(stores, cluster.url)
        ids = [f"c{n}" for n in range(30)]
        await store.apply(
            FlushBatch("w", 1, tuple(Delta(i, W, (1, 0, 1, 0, 0, 0, 0)) for i in ids))
        )
        cluster.nodes[1].kill()
        for seq in (2, 3):  # the open connection breaks, then the reconnect is refused
            with pytest.raises(StoreError, match="apply"):
                await store.apply(
                    FlushBatch("w", seq, tuple(Delta(i, W, (1, 0, 1, 0, 0, 0, 0)) for i in ids))
                )
        await store.aclose()


# -- scripts, retries, timeouts ----------------------------------------------------------------


async def test_scripts_are_reloaded_after_script_flush(
    redis_url: str, redis_server: RedisServer, stores: list[RedisStore]
) -> None:
    store = opened(stores, redis_url)
    await store.apply(one(seq=1))
    with redis_server.client() as direct:
        direct.script_flush()
    [a] = await store.apply(one(seq=2))  # pipelined EVALSHA: NOSCRIPT, SCRIPT LOAD, again
    assert a.window_counts == (2, 0, 20, 10, 0, 0, 0)
    with redis_server.client() as direct:
        direct.script_flush()
    assert await store.reset("a") == 1  # a single EVALSHA
    with redis_server.client() as direct:
        direct.script_flush()
    [a] = await store.read([("a", W.start)])
    assert a.epoch == 1
    assert a.lifetime == (2, 0, 20, 10, 0, 0, 0)


async def test_scripts_are_reloaded_after_script_flush_on_a_cluster(
    redis_cluster_url: str, redis_cluster: RedisClusterServers, stores: list[RedisStore]
) -> None:
    store = opened(stores, redis_cluster_url)
    ids = [f"c{n}" for n in range(30)]
    await store.apply(FlushBatch("w", 1, tuple(Delta(i, W, (1, 0, 1, 0, 0, 0, 0)) for i in ids)))
    for node in redis_cluster.nodes:
        with node.client() as direct:
            direct.script_flush()
    synced = await store.apply(
        FlushBatch("w", 2, tuple(Delta(i, W, (1, 0, 1, 0, 0, 0, 0)) for i in ids))
    )
    assert {s.window_counts for s in synced} == {(2, 0, 2, 0, 0, 0, 0)}


async def test_no_retries_inside_the_store(
    reply_dropping_proxy: ReplyDroppingProxy, stores: list[RedisStore]
) -> None:
    store = opened(stores, reply_dropping_proxy.url())
    await store.apply(one(seq=1))
    reply_dropping_proxy.set_mode("refuse")
    before = reply_dropping_proxy.accepted
    with pytest.raises(StoreError, match="apply"):
        await store.apply(one(seq=2))
    assert reply_dropping_proxy.accepted - before <= 1  # one connection attempt, no retry


async def test_the_cluster_client_makes_no_retries(
    redis_cluster_url: str, stores: list[RedisStore]
) -> None:
    # redis-py's RedisCluster retries 3 times by default (reinitialising and sleeping between
    # tries); the store turns that off: the flusher retries with the same idempotency key.
    store = opened(stores, redis_cluster_url)
    assert isinstance(store.client, redis.asyncio.cluster.RedisCluster)
    assert store.client.retry.get_retries() == 0
    await store.apply(one())


def test_secrets_in_a_redis_py_error_text_are_scrubbed() -> None:
    # No redis-py error seen so far quotes a password or key path, but the message is built from
    # its text, so the store replaces every secret it was given before using it.
    store = RedisStore(
        f"rediss://user:{PASSWORD}@127.0.0.1:1/0?ssl_ca_certs=/etc/ca-secret.pem",
        ssl_keyfile="/etc/client-secret.key",
    )
    text = f"cannot use {PASSWORD}, /etc/client-secret.key or /etc/ca-secret.pem"
    message = str(store._error("apply", redis.RedisError(text)))
    assert "secret" not in message
    assert message.startswith("Redis store rediss://user:***@127.0.0.1:1/0?***: apply failed")


async def test_the_ambiguous_failure_counts_once(
    reply_dropping_proxy: ReplyDroppingProxy,
    redis_server: RedisServer,
    stores: list[RedisStore],
) -> None:
    store = opened(stores, reply_dropping_proxy.url(), socket_timeout=0.5)
    await store.apply(one(seq=1))
    window_key = store.config_key_base("a") + f"w:{W.start}:{W.epoch}"
    reply_dropping_proxy.set_mode("drop_replies")
    batch = one(seq=2)
    with pytest.raises(StoreError, match=r"(?i)timeout") as caught:
        await store.apply(batch)
    assert reply_dropping_proxy.url() in str(caught.value)
    with redis_server.client() as direct:  # the server did apply it
        assert direct.hget(window_key, "s") == "2"
    reply_dropping_proxy.set_mode("forward")
    [a] = await store.apply(batch)  # the flusher's retry, same writer and seq
    assert a.window_counts == (2, 0, 20, 10, 0, 0, 0)
    with redis_server.client() as direct:
        assert direct.hmget(window_key, ["s", "i", "o"]) == ["2", "20", "10"]
        assert direct.hget(store.config_key_base("a") + "cfg", "ls") == "2"


async def test_a_dead_server_fails_fast_with_the_operation_named(
    stores: list[RedisStore],
) -> None:
    store = opened(stores, f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")
    for operation, call in [
        ("apply", store.apply(one())),
        ("read", store.read([("a", 0)])),
        ("config_ids", store.config_ids()),
        ("reset", store.reset("a")),
        ("delete", store.delete("a")),
        ("compare_and_set_alert", store.compare_and_set_alert("a", 0, "{}")),
        ("instance_id", store.instance_id()),
        ("put_config", store.put_config(ConfigRecord("a", None, 1, (), None, "UTC", 0.0))),
    ]:
        with pytest.raises(StoreError) as caught:
            await call
        assert operation in str(caught.value)
        assert PASSWORD not in str(caught.value)
        assert "127.0.0.1" in str(caught.value)


# -- what lands in Redis -----------------------------------------------------------------------


async def test_keys_expire_and_delete_removes_every_key(
    redis_url: str, redis_server: RedisServer, stores: list[RedisStore]
) -> None:
    store = opened(stores, redis_url)
    forever = Window(0, 0, None)
    await store.apply(one(seq=1))
    await store.apply(FlushBatch("w", 2, (Delta("a", forever, (1, 0, 1, 0, 0, 0, 0)),)))
    await store.apply(FlushBatch("w2", 1, (Delta("a", Window(W.start + 3600, 0, 7200), ZERO1),)))
    await store.compare_and_set_alert("a", 0, "{}")
    base = store.config_key_base("a")
    with redis_server.client() as direct:
        assert 7000 < direct.ttl(f"{base}w:{W.start}:0") <= 7200
        assert direct.ttl(f"{base}w:0:0") == -1  # a quota that never resets: no expiry
        assert 6 * 86400 < direct.ttl(f"{base}wr:w") <= 7 * 86400
        assert direct.scard(f"{base}windows") == 3
        assert direct.scard(f"{base}writers") == 2
    assert await store.delete("a")
    with redis_server.client() as direct:
        assert direct.keys(f"{base}*") == [f"{base}gone"]  # only the tombstone is left
        assert TOMBSTONE_SECONDS - 100 < direct.ttl(f"{base}gone") <= TOMBSTONE_SECONDS
        assert direct.smembers("llm_quota:configs") == set()


ZERO1 = (0, 0, 1, 0, 0, 0, 0)


async def test_the_writer_mark_expiry_is_an_option(
    redis_url: str, redis_server: RedisServer, stores: list[RedisStore]
) -> None:
    store = opened(stores, redis_url, writer_mark_ttl_seconds=3600)
    await store.apply(one())
    with redis_server.client() as direct:
        assert 3500 < direct.ttl(store.config_key_base("a") + "wr:w") <= 3600


async def test_expired_windows_are_pruned_from_the_windows_set(
    redis_url: str, redis_server: RedisServer, stores: list[RedisStore]
) -> None:
    store = opened(stores, redis_url)
    base = store.config_key_base("a")
    await store.apply(one(seq=1))
    with redis_server.client() as direct:
        direct.delete(f"{base}w:{W.start}:0")  # as if it had expired
    await store.apply(FlushBatch("w", 2, (Delta("a", Window(W.start + 3600, 0, 7200), ZERO1),)))
    with redis_server.client() as direct:
        assert direct.smembers(f"{base}windows") == {f"{base}w:{W.start + 3600}:0"}


# -- chunked scripts ---------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["single", "cluster"])
async def test_small_chunks_keep_every_reply_in_its_place(
    request: pytest.FixtureRequest, stores: list[RedisStore], topology: str
) -> None:
    # Deltas are grouped by master and cut into chunks of chunk_size: each reply must still go
    # back to its own delta, replays and new configs mixed, unknown and deleted ones in a read.
    url = request.getfixturevalue("redis_url" if topology == "single" else "redis_cluster_url")
    store = opened(stores, url, chunk_size=7)
    ids = [f"cfg-{n}" for n in range(45)]
    first = FlushBatch("w", 1, tuple(Delta(i, W, (1, 0, n, 0, 0, 0, 0)) for n, i in enumerate(ids)))
    await store.apply(FlushBatch("w", 1, first.deltas[::3]))  # a third of them: replays below
    synced = await store.apply(first)
    assert [s.window_counts for s in synced] == [(1, 0, n, 0, 0, 0, 0) for n in range(45)]
    assert all(s.exists and not s.deleted for s in synced)
    assert await store.delete("cfg-10")
    read = await store.read([(i, W.start) for i in ["nope", *ids, "cfg-10"]])
    assert [s.config_id for s in read] == ["nope", *ids, "cfg-10"]
    assert [s.lifetime[2] for s in read[1:-1]] == [0 if n == 10 else n for n in range(45)]
    assert (read[0].exists, read[0].deleted) == (False, False)
    assert (read[11].exists, read[11].deleted) == (False, True)
    assert read[-1] == read[11]


async def test_counts_beyond_2_to_the_53_stay_exact(
    redis_url: str, stores: list[RedisStore]
) -> None:
    # The script adds decimal strings (Lua numbers are doubles): no count may be rounded.
    store = opened(stores, redis_url)
    big = 2**61 + 3
    for seq in (1, 2, 3):
        [a] = await store.apply(one(seq=seq, counts=(1, 0, big, 999_999_999_999_999, 0, big, 7)))
    assert a.window_counts == (3, 0, 3 * big, 3 * 999_999_999_999_999, 0, 3 * big, 21)
    assert a.lifetime == a.window_counts
    [a] = await store.read([("a", W.start)])
    assert a.window_counts == (3, 0, 3 * big, 3 * 999_999_999_999_999, 0, 3 * big, 21)


async def test_a_moved_slot_fails_one_flush_and_its_retry_counts_once(
    stores: list[RedisStore],
) -> None:
    # A master's chunk runs as one script there; a slot that moved to another master since the
    # store read the slot map fails the script at that config (keys before it stay applied).
    # The store then reads the slot map again, and the flusher's retry of the same batch skips
    # what was applied and applies the rest, each delta once.
    require_redis()
    with RedisClusterServers() as cluster:  # a cluster of its own: a slot is moved
        store = opened(stores, cluster.url)
        await store.apply(one("warm-up"))  # the store reads the slot map
        owners: dict[int, RedisServer] = {}
        for node in cluster.nodes:
            with node.client() as direct:
                for start, end, master, *_ in direct.execute_command("CLUSTER", "SLOTS"):
                    if int(master[1]) == node.port:
                        owners.update(dict.fromkeys(range(int(start), int(end) + 1), node))
        moved = "moved-config"
        slot = key_slot(store.config_key_base(moved).encode())
        old_owner = owners[slot]
        new_owner = next(n for n in cluster.nodes if n is not old_owner)
        with new_owner.client() as direct:
            new_id = direct.execute_command("CLUSTER", "MYID")
        for node in cluster.nodes:
            with node.client() as direct:
                direct.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
        before = [f"on-old-{n}" for n in range(200)]
        before = [
            i for i in before if owners[key_slot(store.config_key_base(i).encode())] is old_owner
        ][:5]
        ids = [*before, moved]
        batch = FlushBatch("w", 1, tuple(Delta(i, W, (1, 0, 7, 0, 0, 0, 0)) for i in ids))
        with pytest.raises(StoreError, match="apply"):
            await store.apply(batch)
        synced = await store.apply(batch)
        assert [s.window_counts for s in synced] == [(1, 0, 7, 0, 0, 0, 0)] * len(ids)
        with new_owner.client() as direct:
            assert direct.exists(store.config_key_base(moved) + "cfg")
        await store.aclose()
