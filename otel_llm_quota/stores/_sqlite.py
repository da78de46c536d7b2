"""``SQLiteStore``: the store contract in one SQLite file, shared by the processes of one machine.

Every process (and every store object) opens its own connection to the file; SQLite's locks make
the operations atomic across them: a flush is one ``BEGIN IMMEDIATE`` transaction, so is a reset,
a delete and an alert compare-and-set. The file is in WAL mode (readers never wait for the
writer) with ``synchronous=NORMAL`` (a committed flush survives a crash of the process; a power
cut may lose the last flushes, never corrupt the file) and a busy timeout: an operation waits up
to ``busy_timeout_ms`` for another process's transaction, then fails with ``StoreError``.

Rows (schema version 2, ``PRAGMA user_version``; version 1 files are migrated on open):

* ``configs``: one per configuration: the reset ``epoch``, the provider learnt from usage, and
  the config record (``has_record`` = 1 once ``put_config`` wrote one);
* ``windows``: usage per ``(config_id, window_start, epoch)``, with ``expires_at`` = last write +
  the window's ``ttl_seconds`` (NULL: never); expired rows are deleted by ``apply`` at most once
  a minute per store object;
* ``lifetime``: usage over all windows; ``alerts``: the version and JSON of the alert record;
* ``applied``: the last ``seq`` applied per ``(writer, config_id)`` (the idempotency marks),
  forgotten after 7 days without a write;
* ``parents``: a config's parent (nested budgets); created on open when missing, so files
  written before it existed open unchanged;
* ``meta``: the store's instance id.

Counters are SQLite INTEGERs (exact int64). Only the standard library's ``sqlite3`` is used;
SQLite 3.24 or later with JSON functions (every Python build since 3.10 in practice).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from otel_llm_quota._fork import reinit_after_fork
from otel_llm_quota.stores._base import (
    TOMBSTONE_SECONDS,
    ZERO,
    AlertRecord,
    ConfigRecord,
    ConfigSync,
    Counts,
    FlushBatch,
    StoreError,
)

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child inherited: referenced forever, so they are never closed there."""

_DEFAULT_BUSY_TIMEOUT_MS = 5000
_SCHEMA_VERSION = 2
"""2 added the cost columns (cost, unpriced, cost_limit, cost_thresholds): a version-1 file is
migrated in place (``_MIGRATE_1``)."""
_SWEEP_INTERVAL_S = 60.0
"""Expired windows and old idempotency marks are deleted at most this often (per store)."""
_APPLIED_TTL_S = 7 * 86400.0
"""An idempotency mark of a writer that wrote nothing for this long is forgotten."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS configs (
    config_id TEXT PRIMARY KEY,
    provider TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    has_record INTEGER NOT NULL DEFAULT 0,
    record_provider TEXT,
    "limit" INTEGER,
    thresholds TEXT NOT NULL DEFAULT '[]',
    period TEXT,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    updated_at REAL NOT NULL DEFAULT 0,
    cost_limit INTEGER,
    cost_thresholds TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows (
    config_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    input INTEGER NOT NULL,
    output INTEGER NOT NULL,
    other INTEGER NOT NULL,
    expires_at REAL,
    cost INTEGER NOT NULL DEFAULT 0,
    unpriced INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (config_id, window_start, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lifetime (
    config_id TEXT PRIMARY KEY,
    successes INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    input INTEGER NOT NULL,
    output INTEGER NOT NULL,
    other INTEGER NOT NULL,
    cost INTEGER NOT NULL DEFAULT 0,
    unpriced INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    config_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (
    writer TEXT NOT NULL,
    config_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (writer, config_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deleted (
    config_id TEXT PRIMARY KEY,
    until REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Version 1 -> 2: the cost columns, added at the end as in _SCHEMA (so rows read the same).
_MIGRATE_1 = (
    "ALTER TABLE configs ADD COLUMN cost_limit INTEGER",
    "ALTER TABLE configs ADD COLUMN cost_thresholds TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE windows ADD COLUMN cost INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE windows ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE lifetime ADD COLUMN cost INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE lifetime ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0",
)

_ENSURE_CONFIG = (
    "INSERT INTO configs (config_id, provider) VALUES (?, ?) ON CONFLICT (config_id) DO UPDATE"
    " SET provider = excluded.provider"
    " WHERE configs.provider IS NULL AND excluded.provider IS NOT NULL"
)
_ADD_WINDOW = (
    "INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (config_id, window_start, epoch) DO UPDATE SET"
    " successes = successes + excluded.successes, failures = failures + excluded.failures,"
    " input = input + excluded.input, output = output + excluded.output,"
    " other = other + excluded.other, expires_at = excluded.expires_at,"
    " cost = cost + excluded.cost, unpriced = unpriced + excluded.unpriced"
)
_ADD_LIFETIME = (
    "INSERT INTO lifetime VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (config_id) DO UPDATE SET"
    " successes = successes + excluded.successes, failures = failures + excluded.failures,"
    " input = input + excluded.input, output = output + excluded.output,"
    " other = other + excluded.other,"
    " cost = cost + excluded.cost, unpriced = unpriced + excluded.unpriced"
)
_MARK_APPLIED = (
    "INSERT INTO applied VALUES (?, ?, ?, ?) ON CONFLICT (writer, config_id) DO UPDATE"
    " SET seq = excluded.seq, updated_at = excluded.updated_at"
)
# Per distinct config id of a batch: whether the config exists, whether it has a provider, and
# the writer's idempotency mark for it.
_BEFORE_APPLY = (
    "SELECT j.value, c.config_id IS NOT NULL, c.provider IS NOT NULL, a.seq FROM json_each(?) AS j"
    " LEFT JOIN configs AS c ON c.config_id = j.value"
    " LEFT JOIN applied AS a ON a.writer = ? AND a.config_id = j.value"
)
# One row per wanted (config_id, window_start) that exists, in the order asked (j.key is the
# index in the JSON array). CROSS JOIN keeps the JSON list as the outer loop (a primary-key
# lookup per wanted config, never a scan of every config).
_SYNC = """
SELECT j.key, c.epoch, c.provider, c.has_record, c.record_provider, c."limit",
       c.thresholds, c.period, c.timezone, c.updated_at,
       w.successes, w.failures, w.input, w.output, w.other,
       l.successes, l.failures, l.input, l.output, l.other,
       a.version, a.data,
       w.cost, w.unpriced, l.cost, l.unpriced, c.cost_limit, c.cost_thresholds, p.parent
FROM json_each(?) AS j
CROSS JOIN configs AS c ON c.config_id = json_extract(j.value, '$[0]')
LEFT JOIN windows AS w ON w.config_id = c.config_id
     AND w.window_start = json_extract(j.value, '$[1]') AND w.epoch = c.epoch
LEFT JOIN lifetime AS l ON l.config_id = c.config_id
LEFT JOIN alerts AS a ON a.config_id = c.config_id
LEFT JOIN parents AS p ON p.config_id = c.config_id
"""

# Nested budgets: a config's parent, in a table of its own so that files of schema version 1
# written before it existed need no migration (it is created on open if missing).
_PARENTS = (
    "CREATE TABLE IF NOT EXISTS parents (config_id TEXT PRIMARY KEY, parent TEXT NOT NULL)"
    " WITHOUT ROWID"
)

# sqlite3 error names (Python 3.11+ sets ``sqlite_errorname``; older ones are matched on the
# message) -> what to tell the operator.
_EXPLANATIONS = (
    (("SQLITE_NOTADB",), "file is not a database", "the file is not a SQLite database"),
    (
        ("SQLITE_BUSY", "SQLITE_LOCKED"),
        "database is locked",
        "the database is locked by another connection for longer than busy_timeout_ms={ms}",
    ),
    (
        ("SQLITE_READONLY",),
        "readonly database",
        "the database is read-only (check the permissions of the file and of its directory)",
    ),
    (("SQLITE_FULL",), "database or disk is full", "the database or the disk is full"),
    (
        ("SQLITE_CANTOPEN",),
        "unable to open database file",
        "cannot open the database file (check that it and its directory are accessible)",
    ),
    (("SQLITE_CORRUPT",), "malformed", "the database file is corrupt"),
)


def _path_from_url(url: str) -> tuple[str, dict[str, str]]:
    """The file path of ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (SQLAlchemy's
    convention) and the query options."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ValueError(f"not a sqlite:// URL: {url!r}")
    if parts.netloc:
        raise ValueError(
            f"a SQLite store URL has no host: 'sqlite:///relative.db' or 'sqlite:////abs.db', "
            f"not {url!r}"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path == ":memory:":
        raise ValueError(
            f"a SQLite store URL names a file ('sqlite:///quota.db'), not {url!r}; "
            "use memory:// for a store in the process"
        )
    return path, dict(parse_qsl(parts.query, keep_blank_values=True))


@functools.lru_cache(maxsize=256)
def _thresholds(text: str) -> tuple[float, ...]:
    """The thresholds of a JSON list (cached: most configs share a few threshold lists)."""
    return tuple(float(t) for t in json.loads(text))


class SQLiteStore:
    """A quota store in one SQLite file, shared by every process that opens it (see module doc).

    Args:
        path: the database file. It is created (mode 0600) if missing; its directory must
            exist (a missing directory is an error that names it, not created silently: a typo
            in a path should not scatter databases). A relative path is relative to the current
            directory at construction.
        busy_timeout_ms: how long an operation waits for another connection's transaction
            before it fails with ``StoreError`` (default 5000).
        clock: POSIX seconds, for window expiry and the idempotency marks' age (tests inject a
            ``FakeClock``).

    The constructor opens the file, sets it up and creates the tables, so a missing directory,
    an unwritable or corrupt file raises ``StoreError`` (naming the path) right away.

    Blocking: the methods are coroutines because the protocol is, but ``sqlite3`` is blocking
    and they do not hand the work to a thread: each call blocks its event loop for the time of
    one SQLite transaction (a few hundred ms for a flush of 10,000 configs, see
    benchmarks/README.md), and at most ``busy_timeout_ms`` more while another process holds
    the write lock. That is meant for the flusher's own thread and loop, not for an
    application's event loop. One connection per object (``check_same_thread=False``) guarded
    by a lock, so the object may also be used from another thread (the CLI); a caller waits at
    most ``busy_timeout_ms`` for that lock too. A forked child opens its own connection.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if type(busy_timeout_ms) is not int or busy_timeout_ms < 0:
            raise ValueError(f"busy_timeout_ms must be an int >= 0, not {busy_timeout_ms!r}")
        self._path = os.path.abspath(os.fspath(path))
        self._busy_timeout_ms = busy_timeout_ms
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._next_sweep = float("-inf")
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the file the connection has open."""
        with self._lock:
            self._conn = self._open()
        reinit_after_fork(self._at_fork_reinit)

    def _at_fork_reinit(self) -> None:
        """In a forked child: a new lock, and a new connection at first use. The inherited one
        is kept open but never used (SQLite connections must not cross a fork; closing it could
        disturb the parent's locks and WAL)."""
        self._lock = threading.Lock()
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
        self._next_sweep = float("-inf")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """The store of ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        ``?busy_timeout_ms=N`` in the URL sets that option; keyword ``options`` win over it.
        """
        path, query = _path_from_url(url)
        for key, value in query.items():
            if key != "busy_timeout_ms":
                raise ValueError(f"unknown SQLite store URL option {key!r} (busy_timeout_ms)")
            if key not in options:
                try:
                    options[key] = int(value)
                except ValueError:
                    raise ValueError(f"busy_timeout_ms must be an integer, not {value!r}") from None
        return cls(path, **options)

    # -- properties ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file's absolute path."""
        return self._path

    @property
    def url(self) -> str:
        """``sqlite:////absolute/path`` (the absolute form, whatever form opened it)."""
        return "sqlite:///" + self._path

    @property
    def shared(self) -> bool:
        """True: other processes may open the same file."""
        return True

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"SQLiteStore({self._path!r}{state})"

    # -- connection ------------------------------------------------------------------------

    def _fail(self, op: str, reason: str) -> StoreError:
        return StoreError(f"SQLite store {self._path}: {op}: {reason}")

    def _explain(self, op: str, exc: BaseException) -> StoreError:
        if isinstance(exc, sqlite3.Error):
            name = getattr(exc, "sqlite_errorname", "") or ""
            message = str(exc)
            for names, fragment, explanation in _EXPLANATIONS:
                if name.startswith(names) or fragment in message:
                    why = explanation.format(ms=self._busy_timeout_ms)
                    return self._fail(op, f"{why} ({message})")
            return self._fail(op, f"{type(exc).__name__}: {message}")
        return self._fail(op, f"{type(exc).__name__}: {exc}")

    def _open(self) -> sqlite3.Connection:
        """Create the file if missing (mode 0600), connect, set WAL and create the tables."""
        directory = os.path.dirname(self._path)
        if not os.path.isdir(directory):
            raise self._fail("open", f"the directory {directory} does not exist")
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                why += f" (the directory {directory} is not writable)"
            raise self._fail("create the file", why) from exc
        else:
            os.close(fd)
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_ms / 1000,  # sqlite3_busy_timeout
                isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,  # guarded by self._lock
            )
        except sqlite3.Error as exc:
            raise self._explain("open", exc) from exc
        try:
            self._setup(conn)
            self._identity = self._file_identity()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, sqlite3.Error):
                if not os.access(directory, os.W_OK | os.X_OK):
                    name = os.path.basename(self._path)
                    raise self._fail(
                        "open",
                        f"the directory {directory} is not writable: WAL mode needs to create "
                        f"{name}-wal and {name}-shm beside the file ({exc})",
                    ) from exc
                raise self._explain("open", exc) from exc
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        if sqlite3.sqlite_version_info < (3, 24):
            raise self._fail("open", f"needs SQLite 3.24 or later, not {sqlite3.sqlite_version}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise self._fail("open", f"cannot use WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        # A write now (not at the first flush) finds a read-only file, which SQLite otherwise
        # opens silently read-only; the same transaction creates or checks the tables.
        with self._transaction(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version == 1:
                for statement in _MIGRATE_1:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise self._fail(
                    "open",
                    f"schema version {version} (this otel-llm-quota knows version "
                    f"{_SCHEMA_VERSION}): written by another version of otel-llm-quota?",
                )
            # Nested budgets' table: in new files, and added to files of any known version
            # (a file without it reads as having no parents).
            conn.execute(_PARENTS)
            conn.execute("DELETE FROM meta WHERE 0")  # writes nothing, fails if read-only
        self._tighten_sidecar_modes()

    def _tighten_sidecar_modes(self) -> None:
        """Give the -wal and -shm files no wider permissions than the database file.

        SQLite already creates them with the database file's mode; this repairs files left
        wider by another tool. Files of another user are left alone."""
        try:
            main = os.stat(self._path)
        except OSError:
            return
        allowed = stat.S_IMODE(main.st_mode)
        for suffix in ("-wal", "-shm"):
            try:
                st = os.stat(self._path + suffix)
                if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~allowed:
                    os.chmod(self._path + suffix, stat.S_IMODE(st.st_mode) & allowed)
            except OSError:
                pass

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` (takes the write lock now, waiting up to the busy timeout) ...
        ``COMMIT``; ``_run`` rolls back on error."""
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")

    def _run(self, op: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the connection under the lock; every failure becomes StoreError."""
        if not self._lock.acquire(timeout=self._busy_timeout_ms / 1000):
            raise self._fail(
                op, f"another thread used the store for over {self._busy_timeout_ms} ms"
            )
        try:
            if self._closed:
                raise self._fail(op, "the store is closed")
            conn = self._conn
            if conn is None:  # a failed reopen: try again
                conn = self._conn = self._open()
            try:
                return work(conn)
            except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
                # OverflowError: an int beyond int64; ValueError/TypeError: data sqlite3 cannot
                # bind (a str with surrogates, a bad type).
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise self._explain(op, exc) from exc
        finally:
            self._lock.release()

    # -- operations ------------------------------------------------------------------------

    async def instance_id(self) -> str:
        """The id in ``meta`` (created once, by the first caller of any process; later calls
        only read it, so the flusher's call per cycle takes no write lock).

        If the file was replaced or deleted since this object opened it (its inode changed),
        the connection is reopened on the new file first, so the new id shows the change."""

        def work(conn: sqlite3.Connection) -> str:
            select = "SELECT value FROM meta WHERE key = 'instance_id'"
            row = conn.execute(select).fetchone()
            if row is None:  # the first caller of any process creates it; the others read it
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('instance_id', ?)", (uuid.uuid4().hex,)
                )
                row = conn.execute(select).fetchone()
            return str(row[0])

        self._reopen_if_replaced()
        return self._run("instance_id", work)

    def _reopen_if_replaced(self) -> None:
        """Drop the connection if the path no longer names the file it opened (``_run`` then
        opens the file now at the path, creating it if it is missing).

        Only ``instance_id`` does this, on purpose: the flusher calls it first in every cycle,
        sees the new id and re-sends this process's share. Writes in between still go to the
        old (deleted) file and are lost with it, which that re-send makes good; reopening in
        ``apply`` instead would count the batch in the new file and then again in the re-send.
        """
        if not self._lock.acquire(timeout=self._busy_timeout_ms / 1000):
            return  # _run reports the busy lock
        try:
            if self._conn is None or self._file_identity() == self._identity:
                return
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        finally:
            self._lock.release()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL_S
        conn.execute("DELETE FROM windows WHERE expires_at < ?", (now,))
        conn.execute("DELETE FROM applied WHERE updated_at < ?", (now - _APPLIED_TTL_S,))
        conn.execute("DELETE FROM deleted WHERE until < ?", (now,))

    def _syncs(
        self, conn: sqlite3.Connection, wanted: Sequence[tuple[str, int]]
    ) -> list[ConfigSync]:
        out: list[ConfigSync | None] = [None] * len(wanted)
        for row in conn.execute(_SYNC, (json.dumps(wanted),)):
            i = row[0]
            cid = wanted[i][0]
            record = None
            if row[3]:
                thresholds = _thresholds(row[6])
                record = ConfigRecord(
                    cid,
                    row[4],
                    row[5],
                    thresholds,
                    row[7],
                    row[8],
                    row[9],
                    row[26],
                    _thresholds(row[27]) if row[26] is not None else (),
                    row[28],
                )
            window: Counts = (*row[10:15], row[22], row[23]) if row[10] is not None else ZERO
            lifetime: Counts = (*row[15:20], row[24], row[25]) if row[15] is not None else ZERO
            if type(sum(window) + sum(lifetime)) is not int:  # an int64 overflow became a REAL
                raise OverflowError(f"a counter of {cid!r} left the int64 range: {row!r}")
            alert = None if row[20] is None else AlertRecord(row[20], row[21])
            out[i] = ConfigSync(cid, True, row[1], row[2], window, lifetime, record, alert)
        missing = [wanted[i][0] for i, sync in enumerate(out) if sync is None]
        tombstones: set[str] = set()
        if missing:
            tombstones = {
                row[0]
                for row in conn.execute(
                    "SELECT config_id FROM deleted WHERE until > ? AND config_id IN"
                    " (SELECT value FROM json_each(?))",
                    (self._clock(), json.dumps(missing)),
                )
            }
        return [
            ConfigSync(
                wanted[i][0],
                False,
                0,
                None,
                ZERO,
                ZERO,
                None,
                None,
                deleted=wanted[i][0] in tombstones,
            )
            if sync is None
            else sync
            for i, sync in enumerate(out)
        ]

    async def apply(self, batch: FlushBatch) -> list[ConfigSync]:
        """Add the deltas in one transaction, once per (writer, seq, config); return the fleet
        state of each delta's config at its window start and the config's current epoch."""
        writer, seq, deltas = batch.writer, batch.seq, batch.deltas

        def work(conn: sqlite3.Connection) -> list[ConfigSync]:
            now = self._clock()
            ids = list(dict.fromkeys(d.config_id for d in deltas))
            with self._transaction(conn):
                known: dict[str, bool] = {}  # config id -> has a provider (present: exists)
                marks: dict[str, int] = {}
                for cid, exists, has_provider, mark in conn.execute(
                    _BEFORE_APPLY, (json.dumps(ids), writer)
                ):
                    if exists:
                        known[cid] = bool(has_provider)
                    if mark is not None:
                        marks[cid] = mark
                windows = []
                lifetimes = []
                for d in deltas:
                    if marks.get(d.config_id, -1) < seq:  # as MemoryStore: once per config
                        marks[d.config_id] = seq
                        w = d.window
                        expires = None if w.ttl_seconds is None else now + w.ttl_seconds
                        c = d.counts
                        windows.append((d.config_id, w.start, w.epoch, *c[:5], expires, *c[5:]))
                        lifetimes.append((d.config_id, *d.counts))
                conn.executemany(
                    _ENSURE_CONFIG,
                    [
                        (d.config_id, d.provider)
                        for d in deltas
                        if d.config_id not in known
                        or (d.provider is not None and not known[d.config_id])
                    ],
                )
                created = [(d.config_id,) for d in deltas if d.config_id not in known]
                if created:  # usage after a delete: the config is back, its tombstone gone
                    conn.executemany("DELETE FROM deleted WHERE config_id = ?", created)
                conn.executemany(_ADD_WINDOW, windows)
                conn.executemany(_ADD_LIFETIME, lifetimes)
                conn.executemany(_MARK_APPLIED, [(writer, c, seq, now) for c, *_ in lifetimes])
                self._sweep(conn, now)
                return self._syncs(conn, [(d.config_id, d.window.start) for d in deltas])

        return self._run("apply", work)

    async def read(self, wanted: Sequence[tuple[str, int]]) -> list[ConfigSync]:
        """The fleet state of each (config, window start) at the config's current epoch."""
        wanted = [(c, s) for c, s in wanted]

        def work(conn: sqlite3.Connection) -> list[ConfigSync]:
            with self._read_snapshot(conn):
                return self._syncs(conn, wanted)

        return self._run("read", work)

    @staticmethod
    @contextmanager
    def _read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN")  # deferred: one consistent snapshot, no write lock
        yield
        conn.execute("COMMIT")

    async def config_ids(self) -> list[str]:
        """Every configuration in the file, sorted."""

        def work(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT config_id FROM configs ORDER BY 1")]

        return self._run("config_ids", work)

    async def put_config(self, record: ConfigRecord) -> None:
        """Create or replace a configuration's settings (one statement: atomic)."""
        row = (
            record.config_id,
            record.provider,
            record.provider,
            record.limit,
            json.dumps([float(t) for t in record.thresholds]),
            record.period,
            record.timezone,
            float(record.updated_at),
            record.cost_limit,
            json.dumps([float(t) for t in record.cost_thresholds]),
        )

        def work(conn: sqlite3.Connection) -> None:
            with self._transaction(conn):  # the record and its parent together
                conn.execute(
                    "INSERT INTO configs (config_id, provider, has_record, record_provider,"
                    ' "limit", thresholds, period, timezone, updated_at, cost_limit,'
                    " cost_thresholds)"
                    " VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (config_id) DO UPDATE SET"
                    " provider = COALESCE(excluded.provider, provider), has_record = 1,"
                    ' record_provider = excluded.record_provider, "limit" = excluded."limit",'
                    " thresholds = excluded.thresholds, period = excluded.period,"
                    " timezone = excluded.timezone, updated_at = excluded.updated_at,"
                    " cost_limit = excluded.cost_limit, cost_thresholds = excluded.cost_thresholds",
                    row,
                )
                if record.parent is None:
                    conn.execute("DELETE FROM parents WHERE config_id = ?", (record.config_id,))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO parents VALUES (?, ?)",
                        (record.config_id, record.parent),
                    )

        self._run("put_config", work)

    async def reset(self, config_id: str) -> int:
        """Increment the config's epoch (creating the config if unknown); return it."""

        def work(conn: sqlite3.Connection) -> int:
            with self._transaction(conn):
                conn.execute(
                    "INSERT INTO configs (config_id, epoch) VALUES (?, 1)"
                    " ON CONFLICT (config_id) DO UPDATE SET epoch = epoch + 1",
                    (config_id,),
                )
                (epoch,) = conn.execute(
                    "SELECT epoch FROM configs WHERE config_id = ?", (config_id,)
                ).fetchone()
            return int(epoch)

        return self._run("reset", work)

    async def delete(self, config_id: str) -> bool:
        """Remove every row of the config in one transaction; False if it was unknown."""

        def work(conn: sqlite3.Connection) -> bool:
            with self._transaction(conn):
                known = conn.execute("DELETE FROM configs WHERE config_id = ?", (config_id,))
                found = known.rowcount > 0
                for table in ("windows", "lifetime", "alerts", "applied", "parents"):
                    conn.execute(f"DELETE FROM {table} WHERE config_id = ?", (config_id,))
                if found:  # tells the other processes it was deleted, not lost
                    conn.execute(
                        "INSERT OR REPLACE INTO deleted VALUES (?, ?)",
                        (config_id, self._clock() + TOMBSTONE_SECONDS),
                    )
            return found

        return self._run("delete", work)

    async def compare_and_set_alert(
        self, config_id: str, expected_version: int, data: str
    ) -> tuple[bool, AlertRecord]:
        """Write the alert record if its version is ``expected_version``, in one transaction.

        When there is no record and ``expected_version`` is not 0, the answer is
        ``(False, AlertRecord(0, ""))``: version 0 means "no record"."""

        def work(conn: sqlite3.Connection) -> tuple[bool, AlertRecord]:
            with self._transaction(conn):
                row = conn.execute(
                    "SELECT version, data FROM alerts WHERE config_id = ?", (config_id,)
                ).fetchone()
                current = AlertRecord(0, "") if row is None else AlertRecord(row[0], row[1])
                if current.version != expected_version:
                    return False, current
                conn.execute("INSERT OR IGNORE INTO configs (config_id) VALUES (?)", (config_id,))
                new = AlertRecord(expected_version + 1, data)
                conn.execute(
                    "INSERT INTO alerts VALUES (?, ?, ?) ON CONFLICT (config_id) DO UPDATE"
                    " SET version = excluded.version, data = excluded.data",
                    (config_id, new.version, new.data),
                )
            return True, new

        return self._run("compare_and_set_alert", work)

    async def aclose(self) -> None:
        """Close the connection. Idempotent; later operations raise StoreError."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
