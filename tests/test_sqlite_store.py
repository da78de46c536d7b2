"""SQLiteStore beyond the shared contract (tests/test_store_contract.py): URL forms, file mode,
several connections and real processes on one file, and every fault a file can have (locked,
read-only, missing directory, corrupt, full), each a ``StoreError`` that names the path."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_llm_quota.stores import (
    ConfigRecord,
    Delta,
    FlushBatch,
    StoreError,
    Window,
    open_store,
)
from otel_llm_quota.stores._sqlite import SQLiteStore
from otel_llm_quota.testing import FakeClock

W = Window(1_700_000_000, 0, 7200)


def batch(writer: str, seq: int, *deltas: Delta) -> FlushBatch:
    return FlushBatch(writer, seq, deltas)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "quota.db"


# -- URLs ------------------------------------------------------------------------------------


async def test_relative_url_is_relative_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    store = open_store("sqlite:///sub/quota.db")
    assert isinstance(store, SQLiteStore)
    try:
        assert store.path == str(tmp_path / "sub" / "quota.db")
        assert (tmp_path / "sub" / "quota.db").is_file()
        assert store.url == f"sqlite:///{tmp_path}/sub/quota.db"
        assert store.url.startswith("sqlite:////")  # the absolute form, whatever opened it
        assert str(tmp_path / "sub" / "quota.db") in repr(store)
        assert store.shared is True
    finally:
        await store.aclose()


async def test_absolute_url(db: Path) -> None:
    store = open_store(f"sqlite:///{db}?busy_timeout_ms=250")
    assert isinstance(store, SQLiteStore)
    try:
        assert str(db).startswith("/")
        assert store.path == str(db)
        assert store.url == f"sqlite:///{db}"
        assert store._busy_timeout_ms == 250
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/quota.db",
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///q.db?x=1",
    ],
)
def test_bad_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)sqlite"):
        open_store(url)


# -- the file --------------------------------------------------------------------------------


async def test_new_file_has_mode_0600_whatever_the_umask(db: Path) -> None:
    old = os.umask(0)
    try:
        store = SQLiteStore(db)
        await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
    finally:
        os.umask(old)
    try:
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE(os.stat(f"{db}{suffix}").st_mode)
            assert mode == 0o600, (suffix, oct(mode))
    finally:
        await store.aclose()


async def test_wider_wal_and_shm_files_are_narrowed_to_the_database_mode(db: Path) -> None:
    first = SQLiteStore(db)  # keeps -wal and -shm in place while the second one opens
    for suffix in ("-wal", "-shm"):
        os.chmod(f"{db}{suffix}", 0o666)
    second = SQLiteStore(db)
    try:
        for suffix in ("-wal", "-shm"):
            assert stat.S_IMODE(os.stat(f"{db}{suffix}").st_mode) == 0o600
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_existing_file_keeps_its_mode(db: Path) -> None:
    SQLiteStore(db)
    os.chmod(db, 0o640)
    store = SQLiteStore(db)
    await store.aclose()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o640


async def test_aclose_is_idempotent_and_later_calls_fail_cleanly(db: Path) -> None:
    store = SQLiteStore(db)
    await store.aclose()
    await store.aclose()
    assert "closed" in repr(store)
    with pytest.raises(StoreError, match="closed"):
        await store.config_ids()


async def test_state_survives_reopening(db: Path) -> None:
    store = SQLiteStore(db)
    await store.put_config(ConfigRecord("a", "openai", 100, (80.0,), "day", "UTC", 1.0))
    await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
    await store.compare_and_set_alert("a", 0, "{}")
    first = await store.instance_id()
    await store.aclose()
    store = SQLiteStore(db)
    try:
        [a] = await store.read([("a", W.start)])
        assert a.window_counts == (1, 0, 10, 0, 0, 0, 0)
        assert a.record is not None
        assert a.record.limit == 100
        assert a.alert is not None
        assert a.alert.version == 1
        assert await store.instance_id() == first
        # The writer's idempotency mark survived too: a replay after the restart counts once.
        [a] = await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
        assert a.window_counts == (1, 0, 10, 0, 0, 0, 0)
    finally:
        await store.aclose()


def _exists(path: Path) -> bool:
    return path.is_file()


def _remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


async def test_a_replaced_file_gets_a_new_instance_id(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        first = await store.instance_id()
        await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
        _remove_database(db)
        second = await store.instance_id()
        assert second != first
        assert _exists(db)  # recreated: the flusher re-sends its share into the new file
        [a] = await store.apply(batch("w", 1, Delta("a", W, (1, 0, 3, 0, 0, 0, 0))))
        assert a.window_counts == (1, 0, 3, 0, 0, 0, 0)
        other = SQLiteStore(db)
        assert await other.instance_id() == second
        await other.aclose()
    finally:
        await store.aclose()


async def test_config_record_provider_is_kept_apart_from_the_usage_provider(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0), "openai")))
        record = ConfigRecord("a", None, 2**62, (50.0, 80.5), None, "Europe/Paris", 2.5)
        await store.put_config(record)
        [a] = await store.read([("a", W.start)])
        assert a.record == record
        assert a.provider == "openai"
    finally:
        await store.aclose()


async def test_compare_and_set_with_no_record_and_a_nonzero_version_loses(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        won, rec = await store.compare_and_set_alert("a", 3, "{}")
        assert not won
        assert rec.version == 0
        [a] = await store.read([("a", 0)])
        assert a.alert is None
    finally:
        await store.aclose()


# -- expiry ----------------------------------------------------------------------------------


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_old_windows_and_idempotency_marks_are_deleted(db: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    store = SQLiteStore(db, clock=clock)
    try:
        forever = Window(0, 0, None)
        await store.apply(batch("old", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
        await store.apply(batch("old", 2, Delta("n", forever, (1, 0, 10, 0, 0, 0, 0))))
        clock.advance(7200 + 61)  # past the window's ttl and the sweep interval
        await store.apply(batch("new", 1, Delta("b", W, (1, 0, 1, 0, 0, 0, 0))))
        assert _rows(db, "SELECT config_id FROM windows ORDER BY 1") == [("b",), ("n",)]
        [a] = await store.read([("a", W.start)])
        assert a.window_counts == (0, 0, 0, 0, 0, 0, 0)
        assert a.lifetime == (1, 0, 10, 0, 0, 0, 0)  # the lifetime never expires
        assert ("old", "a") in _rows(db, "SELECT writer, config_id FROM applied")
        clock.advance(7 * 86400)
        await store.apply(batch("new", 2, Delta("b", W, (1, 0, 1, 0, 0, 0, 0))))
        assert _rows(db, "SELECT writer, config_id FROM applied") == [("new", "b")]
    finally:
        await store.aclose()


# -- integers --------------------------------------------------------------------------------


async def test_int64_overflow_is_a_store_error_not_a_wrong_number(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        with pytest.raises(StoreError, match=str(db)):
            await store.apply(batch("w", 1, Delta("a", W, (1, 0, 2**63, 0, 0, 0, 0))))
        await store.apply(batch("w", 2, Delta("a", W, (1, 0, 2**63 - 1, 0, 0, 0, 0))))
        with pytest.raises(StoreError, match="int64"):
            await store.apply(batch("w", 3, Delta("a", W, (1, 0, 1, 0, 0, 0, 0))))
    finally:
        await store.aclose()


# -- two connections, real processes --------------------------------------------------------


async def test_two_store_objects_on_one_file_are_one_store(db: Path) -> None:
    one, two = SQLiteStore(db), SQLiteStore(db)
    try:
        assert await one.instance_id() == await two.instance_id()
        await one.apply(batch("w1", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0), "openai")))
        [a] = await two.apply(batch("w2", 1, Delta("a", W, (1, 0, 5, 0, 0, 0, 0))))
        assert a.window_counts == (2, 0, 15, 0, 0, 0, 0)
        assert a.provider == "openai"
        [a] = await two.apply(batch("w1", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))  # a replay
        assert a.window_counts == (2, 0, 15, 0, 0, 0, 0)
        assert await two.reset("a") == 1
        [a] = await one.read([("a", W.start)])
        assert a.epoch == 1
        won1, _ = await one.compare_and_set_alert("a", 0, "one")
        won2, rec = await two.compare_and_set_alert("a", 0, "two")
        assert (won1, won2) == (True, False)
        assert rec.data == "one"
        assert await two.delete("a") is True
        assert await one.config_ids() == []
    finally:
        await one.aclose()
        await two.aclose()


_CHILD = r"""
import asyncio, sys
from otel_llm_quota.stores import Delta, FlushBatch, Window, open_store

W = Window(1_700_000_000, 0, 7200)

async def main(url, mode, name):
    store = open_store(url)
    print("ready", await store.instance_id(), flush=True)
    sys.stdin.readline()  # everyone starts together
    if mode == "cas":  # every process races for each of 100 alerts
        won = [i for i in range(100) if (await store.compare_and_set_alert(f"a{i}", 0, name))[0]]
        print(",".join(map(str, won)), flush=True)
    else:
        for seq in range(1, 101):
            # Every process retries the same 100 batches of one writer, and sends 100 of its own.
            await store.apply(FlushBatch("shared", seq, (Delta("a", W, (1, 0, 10, 0, 0, 0, 0)),)))
            await store.apply(FlushBatch(name, seq, (Delta("a", W, (1, 0, 1, 0, 0, 0, 0)),)))
        print("done", flush=True)
    await store.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


def _run_processes(db: Path, mode: str, count: int) -> list[str]:
    """Start ``count`` processes on ``db``, release them together, return their last lines.

    Every process must have seen the same instance id (created by whichever came first)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, f"sqlite:///{db}", mode, f"p{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    try:
        ids = set()
        for proc in procs:
            assert proc.stdout is not None
            ready, instance = proc.stdout.readline().split()
            assert ready == "ready"
            ids.add(instance)
        assert len(ids) == 1
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * count
        return outs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_processes_racing_for_alerts_have_one_winner_each(db: Path) -> None:
    SQLiteStore(db)  # created once, so no process races to create the tables
    outs = _run_processes(db, "cas", 4)
    winners = {int(i): f"p{proc}" for proc, out in enumerate(outs) for i in out.split(",") if out}
    wins = sum(len(out.split(",")) for out in outs if out)
    assert wins == 100  # no alert won twice, none lost by all
    assert sorted(winners) == list(range(100))
    store = SQLiteStore(db)
    synced = await store.read([(f"a{i}", 0) for i in range(100)])
    await store.aclose()
    for i, sync in enumerate(synced):
        assert sync.alert is not None
        assert (sync.alert.version, sync.alert.data) == (1, winners[i])


async def test_processes_retrying_the_same_batches_count_them_once(db: Path) -> None:
    outs = _run_processes(db, "apply", 4)  # the four race to create the tables too
    assert outs == ["done"] * 4
    store = SQLiteStore(db)
    [a] = await store.read([("a", W.start)])
    await store.aclose()
    # 100 shared batches once each (10 tokens), 100 own batches per process (1 token).
    assert a.window_counts == (100 + 4 * 100, 0, 100 * 10 + 4 * 100, 0, 0, 0, 0)
    assert a.lifetime == a.window_counts


def test_a_forked_child_uses_its_own_connection(db: Path) -> None:
    store = SQLiteStore(db)
    asyncio.run(store.apply(batch("parent", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0)))))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread holds the store's lock while the process forks
        with store._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            asyncio.run(store.apply(batch("child", 1, Delta("a", W, (1, 0, 5, 0, 0, 0, 0)))))
            code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    [a] = asyncio.run(store.read([("a", W.start)]))
    assert a.window_counts == (2, 0, 15, 0, 0, 0, 0)
    asyncio.run(store.aclose())


# -- faults ----------------------------------------------------------------------------------


@pytest.fixture
def locker(db: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to the file (as another process would have), autocommit."""
    SQLiteStore(db)
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    yield conn
    conn.close()


async def test_a_lock_shorter_than_busy_timeout_is_waited_for(
    db: Path, locker: sqlite3.Connection
) -> None:
    store = SQLiteStore(db, busy_timeout_ms=30_000)
    begun = threading.Event()
    store._conn.set_trace_callback(  # type: ignore[union-attr]
        lambda sql: begun.set() if sql.startswith("BEGIN IMMEDIATE") else None
    )
    locker.execute("BEGIN EXCLUSIVE")
    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(
            asyncio.run(store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0)))))
        )
    )
    worker.start()
    assert begun.wait(10)  # the store tries to take the write lock (and has to wait) ...
    locker.execute("COMMIT")  # ... the other connection lets go: the flush goes through
    worker.join(30)
    assert len(result) == 1
    [sync] = result[0]  # type: ignore[misc]
    assert sync.window_counts == (1, 0, 10, 0, 0, 0, 0)
    await store.aclose()


async def test_a_lock_longer_than_busy_timeout_is_a_store_error(
    db: Path, locker: sqlite3.Connection
) -> None:
    store = SQLiteStore(db, busy_timeout_ms=50)
    try:
        await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=rf"{db}.*apply.*locked.*50"):
            await store.apply(batch("w", 2, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
        with pytest.raises(StoreError, match="locked"):
            await store.compare_and_set_alert("a", 0, "{}")
        locker.execute("COMMIT")
        [a] = await store.apply(batch("w", 2, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))  # the retry
        assert a.window_counts == (2, 0, 20, 0, 0, 0, 0)
    finally:
        await store.aclose()


async def test_another_thread_holding_the_store_longer_than_busy_timeout_is_a_store_error(
    db: Path,
) -> None:
    store = SQLiteStore(db, busy_timeout_ms=50)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread in the middle of a long operation
        with store._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(StoreError, match=rf"{db}.*read.*another thread.*50 ms"):
            await store.read([("a", 0)])
    finally:
        release.set()
        holder.join()
    assert (await store.read([("a", 0)]))[0].exists is False
    await store.aclose()


def _as_unprivileged(check: Callable[[], str]) -> str:
    """``check()`` run without root's right to write anything (in a forked child as nobody when
    the tests run as root, else here)."""
    if os.geteuid() != 0:
        return check()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, check().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


def _open_error(path: str) -> str:
    try:
        SQLiteStore(path)
    except StoreError as exc:
        return f"StoreError: {exc}"
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"
    return "opened"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that the unprivileged child may use (pytest's tmp_path is root's own)."""
    path = Path(tempfile.mkdtemp(prefix="otel-llm-quota-"))
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    yield path
    os.chmod(path, 0o700)
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def _give_away(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)


def test_a_read_only_file_is_a_store_error(shared_dir: Path) -> None:
    path = shared_dir / "quota.db"
    SQLiteStore(path)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            _give_away(Path(f"{path}{suffix}"))
    os.chmod(path, 0o400)
    out = _as_unprivileged(lambda: _open_error(str(path)))
    assert out.startswith("StoreError"), out
    assert str(path) in out
    assert "read-only" in out


def test_a_read_only_directory_is_a_store_error(shared_dir: Path) -> None:
    os.chmod(shared_dir, 0o500)
    path = shared_dir / "quota.db"
    out = _as_unprivileged(lambda: _open_error(str(path)))
    assert out.startswith("StoreError"), out
    assert str(path) in out
    assert "not writable" in out


def test_an_existing_file_in_a_read_only_directory_is_a_store_error(shared_dir: Path) -> None:
    path = shared_dir / "quota.db"
    SQLiteStore(path)
    for suffix in ("-wal", "-shm"):  # left by a crash, say: here, a clean close removed them
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    _give_away(path)
    os.chmod(shared_dir, 0o500)  # WAL mode must create quota.db-wal and -shm beside it
    out = _as_unprivileged(lambda: _open_error(str(path)))
    assert out.startswith("StoreError"), out
    assert str(path) in out
    assert f"{shared_dir} is not writable: WAL mode needs to create quota.db-wal" in out


def test_a_missing_directory_is_a_store_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "quota.db"
    with pytest.raises(StoreError, match=f"{tmp_path / 'no' / 'such'} does not exist"):
        open_store(f"sqlite:///{path}")
    assert not (tmp_path / "no").exists()


def test_a_file_that_is_not_a_database_is_a_store_error(db: Path) -> None:
    db.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=rf"{db}.*not a SQLite database"):
        SQLiteStore(db)


def test_a_database_of_a_newer_schema_is_a_store_error(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(db)


async def test_a_full_disk_is_a_store_error_and_loses_no_earlier_state(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        await store.apply(batch("w", 1, Delta("a", W, (1, 0, 10, 0, 0, 0, 0))))
        conn = store._conn
        assert conn is not None
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is now full
        big = tuple(
            Delta(f"config-{i:05d}-{'x' * 200}", W, (1, 0, 1, 0, 0, 0, 0)) for i in range(2000)
        )
        with pytest.raises(StoreError, match=rf"{db}.*apply.*full"):
            await store.apply(batch("w", 2, Delta("a", W, (1, 0, 10, 0, 0, 0, 0)), *big))
        conn.execute("PRAGMA max_page_count = 1073741823")  # space again
        [a] = await store.read([("a", W.start)])
        assert a.window_counts == (1, 0, 10, 0, 0, 0, 0)  # the failed batch left nothing behind
        assert await store.config_ids() == ["a"]
        synced = await store.apply(batch("w", 2, Delta("a", W, (1, 0, 10, 0, 0, 0, 0)), *big))
        assert synced[0].window_counts == (2, 0, 20, 0, 0, 0, 0)
    finally:
        await store.aclose()
