"""``RedisStore``: the store contract on Redis or Redis Cluster (redis-py's asyncio API).

Needs only Redis 7.0 (or Valkey): hashes, sets, strings with an expiry and Lua scripts run
with ``EVALSHA`` (loaded again with ``SCRIPT LOAD`` after a ``NOSCRIPT``: a restarted server or
a ``SCRIPT FLUSH``). No ``HEXPIRE``, no functions.

Key layout (``P`` is the key prefix, ``llm_quota:`` by default, so several applications can
share one Redis; ``T`` is the hex BLAKE2b digest (128 bits) of the UTF-8 config id)::

    P{T}:cfg              hash   id (the real config id), provider, record (JSON), epoch,
                                 ls lf li lo lx (lifetime counters), av ad (alert version, data)
    P{T}:w:<start>:<ep>   hash   s f i o x: one period window; EXPIRE ttl at each write
    P{T}:wr:<writer>      string the last seq applied for that writer (the idempotency mark),
                                 with a 7-day expiry refreshed at each batch
    P{T}:windows          set    names of the window keys (for delete; expired ones pruned
                                 when a new window appears)
    P{T}:writers          set    names of the writer-mark keys (for delete; pruned likewise)
    P{T}:gone             string the tombstone ``delete`` leaves (``TOMBSTONE_SECONDS``), lifted
                                 by a write that creates the config again
    Pconfigs              set    every config id (its own slot)
    Pinstance             string the store's instance id (``SET NX``)

The lifetime counters and the alert record live in the config hash rather than in hashes of
their own: a flush then reads a config's whole state with two ``HMGET`` (config, window).

Every key of one configuration carries the hash tag ``{T}``, so in a cluster they live in one
slot. The tag is a digest rather than the config id itself because an id may contain ``{`` and
``}``, which would end the tag early and split a config's keys over slots; the real id is kept
in the ``cfg`` hash and in ``Pconfigs``. For the same reason the key prefix may not contain
braces.

A flush is one script call per chunk of ``chunk_size`` deltas, which loops over its deltas: on
one Redis the calls go in one non-transactional pipeline; in a cluster the deltas are grouped
by the master that holds their slot (redis-py's slot map) and each master's calls are sent to
it directly, all at once. The scripts are flagged ``allow-cross-slot-keys`` (Redis 7.0), which
lets a script touch keys of any slot its node holds; every key of one delta is in one slot, so
a slot that moved away (a resharding) fails the call at a delta's first command, never halfway
through a delta, and the store reads the slot map again before its next call. For each delta
the script compares the writer's mark with the batch's seq, adds the counts only when the seq
is newer (so a batch retried after a timeout counts once), and returns the config's state as it
read it before adding, the client adding the counts it sent (Lua numbers are doubles, the
client's integers exact). Redis does not undo the writes of a script that fails: if one fails
halfway (a moved slot), the deltas before the failure are applied and marked, so the flusher's
retry of the same batch skips them and applies the rest. The flush ends with one ``SADD
Pconfigs`` of its config ids (idempotent; outside the scripts because the index has a slot of
its own: a ``delete`` racing with a flush of the same config may leave the index out of step:
its id listed with no state, which reads as ``exists=False``, or, in a cluster, where the
masters run their parts in parallel, state whose id is missing until the config's next flush
lists it again). ``read`` is the same with a read-only script. The store itself never retries:
the flusher does, with the same idempotency key; socket timeouts (2 s by default) make a dead
server fail fast. Every redis-py error becomes ``StoreError``, whose message names the redacted
URL and the operation, never a password or a TLS key path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from otel_llm_quota.stores._base import (
    TOMBSTONE_SECONDS,
    ZERO,
    AlertRecord,
    ConfigRecord,
    ConfigSync,
    Counts,
    FlushBatch,
    StoreError,
    add_counts,
)
from otel_llm_quota.stores._url import redact_url

__all__ = ["DEFAULT_KEY_PREFIX", "RedisStore"]

DEFAULT_KEY_PREFIX: Final = "llm_quota:"
_DEFAULT_SOCKET_TIMEOUT_SECONDS: Final = 2.0
_DEFAULT_CHUNK_SIZE: Final = 500
_DEFAULT_MARK_TTL_SECONDS: Final = 7 * 24 * 3600
"""How long a writer's idempotency mark outlives its last batch (a retry comes much sooner)."""

_CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)

# Lua, kept to Redis 7.0 commands. A flush or a read is one script call per chunk of configs
# (``chunk_size``): on one Redis a chunk is any configs, in a cluster the configs of one master
# (the scripts carry the ``allow-cross-slot-keys`` flag, which lets a script touch keys of
# several slots of its own node; ``KEYS[1]``, one config's hash, only routes the call). Each
# config's keys are named from its key base ``P{T}:`` passed in ``ARGV``.
# Counts travel as decimal strings: Lua numbers are doubles, exact only below 2**53. The apply
# script adds them as strings (``add``) to write them, but its reply carries each config's
# state as read *before* the delta, with a flag saying whether the delta was applied and to the
# reported window, and the client adds the delta it sent (exact Python integers).
#
# Each config's reply is one string: ``<flag> <epoch> <window s f i o x c u>
# <lifetime s f i o x c u> <alert version> <provider length> <record length>`` (a length of
# -1: none), a newline, then the provider, the record JSON and the alert data, back to back.
# ``flag``: 0 not applied (or a read), 1 applied to another window than the reported one (the
# store's epoch moved on), 3 applied to the reported window. A config the store does not know
# reads ``U`` (unknown) or ``D`` (deleted: its tombstone ``P{T}:gone`` is there).

_STATE_LUA = """
local function reply(flag, b, start, c)
  local ep = c[2] or '0'
  local w = redis.call('HMGET', b .. 'w:' .. start .. ':' .. ep, 's', 'f', 'i', 'o', 'x', 'c',
    'u')
  local p, r, a = c[3], c[4], c[11] or ''
  return table.concat({flag, ep, w[1] or '0', w[2] or '0', w[3] or '0', w[4] or '0',
    w[5] or '0', w[6] or '0', w[7] or '0', c[5] or '0', c[6] or '0', c[7] or '0',
    c[8] or '0', c[9] or '0', c[12] or '0', c[13] or '0',
    c[10] or '0', p and string.len(p) or -1, r and string.len(r) or -1}, ' ')
    .. '\\n' .. (p or '') .. (r or '') .. a, w
end
local CFG = {'id', 'epoch', 'provider', 'record', 'ls', 'lf', 'li', 'lo', 'lx', 'av', 'ad',
  'lc', 'lu'}
"""

# ARGV: writer seq, then one per config: "start epoch ttl(0 = none) s f i o x c u blen plen" and a
# newline, then the key base (blen bytes), the provider (plen bytes, 0: none) and the config id
# (one argument per config: redis-py packs each argument in Python, at a cost per argument).
# A replay (the writer's mark >= seq) changes nothing but the mark's expiry. An applied delta
# reads the window it adds to (the reported one when the epochs agree: no second read), adds
# in Lua (``add``: exact decimal strings, as a double only below 10^15) and writes the window's
# and the lifetime's new values with one HSET each, where HINCRBY would cost one call per
# counter (a redis.call costs a few µs). The window gets its EXPIRE at every write; it is
# added to the windows set (and expired members pruned) only when the read found it empty;
# likewise for a writer's first mark on a config. A config new to the store gets its id and
# loses its tombstone.
_APPLY_LUA = (
    "#!lua flags=allow-cross-slot-keys\n"
    + _STATE_LUA
    + """
local F = {'s', 'f', 'i', 'o', 'x', 'c', 'u'}
local L = {'ls', 'lf', 'li', 'lo', 'lx', 'lc', 'lu'}
local LI = {5, 6, 7, 8, 9, 12, 13}
local function prune(set)
  for _, k in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('EXISTS', k) == 0 then redis.call('SREM', set, k) end
  end
end
local function add(a, b)
  if string.len(a) < 16 and string.len(b) < 16 then
    return string.format('%d', tonumber(a) + tonumber(b))
  end
  local r, carry, i, j = {}, 0, string.len(a), string.len(b)
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + string.byte(a, i) - 48 end
    if j > 0 then d = d + string.byte(b, j) - 48 end
    r[#r + 1] = d % 10
    carry = (d - d % 10) / 10
    i = i - 1
    j = j - 1
  end
  return string.reverse(table.concat(r))
end
local writer, seq = ARGV[1], ARGV[2]
local seqn = tonumber(seq)
local out = {}
local n = {}
for j = 3, #ARGV do
  local a = ARGV[j]
  local n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, blen, plen, at = string.match(a,
    '^(-?%d+) (-?%d+) (%d+) (-?%d+) (-?%d+) (-?%d+) (-?%d+) (-?%d+) (-?%d+) (-?%d+) (%d+) (%d+)'
    .. '\\n()')
  n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8] = n1, n2, n3, n4, n5, n6, n7, n8
  n[9], n[10] = n9, n10
  blen, plen = tonumber(blen), tonumber(plen)
  local b = string.sub(a, at, at + blen - 1)
  local cfg = b .. 'cfg'
  local mark = b .. 'wr:' .. writer
  local old = redis.call('SET', mark, seq, 'EX', '{MARK_TTL}', 'GET')
  local applied = not (old and tonumber(old) >= seqn)
  if not applied then
    redis.call('SET', mark, old, 'EX', '{MARK_TTL}')
  elseif not old and redis.call('SADD', b .. 'writers', mark) == 1 then
    prune(b .. 'writers')
  end
  local c = redis.call('HMGET', cfg, unpack(CFG))
  local u = {}
  if not c[1] then
    u[1] = 'id'
    u[2] = string.sub(a, at + blen + plen)
    redis.call('DEL', b .. 'gone')
  end
  if not c[3] and plen > 0 then
    c[3] = string.sub(a, at + blen, at + blen + plen - 1)
    u[#u + 1] = 'provider'
    u[#u + 1] = c[3]
  end
  local same = (c[2] or '0') == n[2]
  local flag = '0'
  if applied then flag = same and '3' or '1' end
  local text, w = reply(flag, b, n[1], c)
  if applied then
    local win = b .. 'w:' .. n[1] .. ':' .. n[2]
    if not same then w = redis.call('HMGET', win, 's', 'f', 'i', 'o', 'x', 'c', 'u') end
    local h = {}
    for i = 1, 7 do
      local v = n[3 + i]
      if v ~= '0' then
        h[#h + 1] = F[i]
        h[#h + 1] = add(w[i] or '0', v)
        u[#u + 1] = L[i]
        u[#u + 1] = add(c[LI[i]] or '0', v)
      end
    end
    if #h > 0 then
      redis.call('HSET', win, unpack(h))
      if n[3] ~= '0' then redis.call('EXPIRE', win, n[3]) end
      if not (w[1] or w[2] or w[3] or w[4] or w[5] or w[6] or w[7])
        and redis.call('SADD', b .. 'windows', win) == 1 then
        prune(b .. 'windows')
      end
    end
  end
  if #u > 0 then redis.call('HSET', cfg, unpack(u)) end
  out[#out + 1] = text
end
return out
"""
)

# ARGV: one per config: "<window start> <key base>". Only reads.
_READ_LUA = (
    "#!lua flags=no-writes,allow-cross-slot-keys\n"
    + _STATE_LUA
    + """
local out = {}
for j = 1, #ARGV do
  local sp = string.find(ARGV[j], ' ', 1, true)
  local b = string.sub(ARGV[j], sp + 1)
  local c = redis.call('HMGET', b .. 'cfg', unpack(CFG))
  if c[1] then
    out[#out + 1] = (reply('0', b, string.sub(ARGV[j], 1, sp - 1), c))
  elseif redis.call('EXISTS', b .. 'gone') == 1 then
    out[#out + 1] = 'D'
  else
    out[#out + 1] = 'U'
  end
end
return out
"""
)

# ARGV: config_id expected_version data. A win creates the config if need be (and lifts its
# tombstone, as every write that creates a config does).
_CAS_LUA = """
local c = redis.call('HMGET', KEYS[1], 'av', 'ad', 'id')
local v = tonumber(c[1] or '0')
if v ~= tonumber(ARGV[2]) then return {0, tostring(v), c[2]} end
redis.call('HSET', KEYS[1], 'av', tostring(v + 1), 'ad', ARGV[3], 'id', ARGV[1])
if not c[3] then redis.call('DEL', string.sub(KEYS[1], 1, -4) .. 'gone') end
return {1, tostring(v + 1), ARGV[3]}
"""

# ARGV: config_id
_RESET_LUA = """
if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 1 then
  redis.call('DEL', string.sub(KEYS[1], 1, -4) .. 'gone')
end
return redis.call('HINCRBY', KEYS[1], 'epoch', 1)
"""

# ARGV: tombstone seconds. DEL in slices: unpack() has a stack limit. The tombstone is left
# whether or not the config existed (an operator may delete a config the store lost while
# processes still count it: they drop it too).
_DELETE_LUA = """
local b = string.sub(KEYS[1], 1, -4)
local existed = redis.call('EXISTS', KEYS[1])
for _, set in ipairs({b .. 'windows', b .. 'writers'}) do
  local members = redis.call('SMEMBERS', set)
  for i = 1, #members, 1000 do
    redis.call('DEL', unpack(members, i, math.min(i + 999, #members)))
  end
  redis.call('DEL', set)
end
redis.call('DEL', KEYS[1])
redis.call('SET', b .. 'gone', '1', 'EX', ARGV[1])
return existed
"""


class _Script:
    """A Lua script run with EVALSHA; its text is loaded with SCRIPT LOAD after a NOSCRIPT
    (SCRIPT LOAD reaches every primary of a cluster)."""

    __slots__ = ("sha", "sha_bytes", "text")

    def __init__(self, text: str, mark_ttl_seconds: int = _DEFAULT_MARK_TTL_SECONDS) -> None:
        self.text = text.replace("{MARK_TTL}", str(mark_ttl_seconds))
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()
        self.sha_bytes = self.sha.encode()


_READ = _Script(_READ_LUA)
_CAS = _Script(_CAS_LUA)
_RESET = _Script(_RESET_LUA)
_DELETE = _Script(_DELETE_LUA)


@functools.lru_cache(maxsize=65536)
def _tag(config_id: str) -> str:
    """The hash tag of a config: the hex BLAKE2b-128 digest of its UTF-8 id (cached)."""
    return hashlib.blake2b(config_id.encode("utf-8"), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=65536)
def _config_keys(prefix: str, config_id: str) -> tuple[bytes, bytes, bytes, int]:
    """``(P{T}:cfg, P{T}:, config id, cluster slot)``, the strings as bytes (cached): redis-py
    sends bytes as they are, where each str argument costs it an encode per flush."""
    base = f"{prefix}{{{_tag(config_id)}}}:".encode()
    return base + b"cfg", base, config_id.encode(), key_slot(base)


_Item = tuple[bytes, int, bytes]
"""One config's part of a chunked script call: its config hash key, its slot, its argument."""


@functools.lru_cache(maxsize=65536)
def _apply_tail(prefix: str, config_id: str, provider: str | None) -> tuple[bytes, bytes]:
    """``(b" <blen> <plen>\\n" + key base + provider + config id, the config id)`` as bytes:
    the end of a config's apply argument, after its numbers (cached)."""
    _, base, raw_id, _ = _config_keys(prefix, config_id)
    name = b"" if provider is None else provider.encode()
    return b" %d %d\n" % (len(base), len(name)) + base + name + raw_id, raw_id


def _parse(config_id: str, reply: bytes | str, counts: Counts | None = None) -> ConfigSync:
    """The ``ConfigSync`` of one config's reply string (see the Lua comments); ``counts`` is
    the delta the apply script was given, added here to what the script read before it."""
    if isinstance(reply, str):  # a client with decode_responses=True
        reply = reply.encode()
    head, _, tail = reply.partition(b"\n")
    if head == b"U":
        return ConfigSync(config_id, False, 0, None, ZERO, ZERO, None, None)
    if head == b"D":
        return ConfigSync(config_id, False, 0, None, ZERO, ZERO, None, None, deleted=True)
    (flag, e, s0, s1, s2, s3, s4, s5, s6, l0, l1, l2, l3, l4, l5, l6, version, plen, rlen) = map(
        int, head.split()
    )
    window: Counts = (s0, s1, s2, s3, s4, s5, s6)
    lifetime: Counts = (l0, l1, l2, l3, l4, l5, l6)
    if counts is not None and flag & 1:
        lifetime = add_counts(lifetime, counts)
        if flag & 2:
            window = add_counts(window, counts)
    provider = None if plen < 0 else _decoded(tail[:plen])
    plen = max(plen, 0)
    record = None if rlen < 0 else _record_from_json(tail[plen : plen + rlen])
    alert = None if version == 0 else AlertRecord(version, tail[plen + max(rlen, 0) :].decode())
    return ConfigSync(config_id, True, e, provider, window, lifetime, record, alert)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record_json(record: ConfigRecord) -> str:
    doc: dict[str, Any] = {
        "config_id": record.config_id,
        "provider": record.provider,
        "limit": record.limit,
        "thresholds": list(record.thresholds),
        "period": record.period,
        "timezone": record.timezone,
        "updated_at": record.updated_at,
        "cost_limit": record.cost_limit,
        "cost_thresholds": list(record.cost_thresholds),
    }
    if record.parent is not None:  # only when set: records of older versions read the same
        doc["parent"] = record.parent
    return json.dumps(doc, separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def _decoded(value: str | bytes) -> str:
    """A provider name as text (cached: a fleet has a handful)."""
    return value.decode() if isinstance(value, bytes) else value


@functools.lru_cache(maxsize=65536)
def _record_from_json(text: str | bytes) -> ConfigRecord:
    """The record of a JSON text; cached, as every flush returns the same texts again."""
    data = json.loads(text)
    return ConfigRecord(
        config_id=str(data["config_id"]),
        provider=None if data["provider"] is None else str(data["provider"]),
        limit=None if data["limit"] is None else int(data["limit"]),
        thresholds=tuple(float(t) for t in data["thresholds"]),
        period=None if data["period"] is None else str(data["period"]),
        timezone=str(data["timezone"]),
        updated_at=float(data["updated_at"]),
        cost_limit=None if data.get("cost_limit") is None else int(data["cost_limit"]),
        cost_thresholds=tuple(float(t) for t in data.get("cost_thresholds", ())),
        parent=None if data.get("parent") is None else str(data["parent"]),
    )


class RedisStore:
    """A store on Redis or Redis Cluster (see module doc); shared by every process that uses
    the same server and key prefix.

    Give either a URL (``redis://[user:pass@]host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path/redis.sock``, ``redis+cluster://host:port``, ``rediss+cluster://``) or a
    ready ``redis.asyncio.Redis`` / ``redis.asyncio.cluster.RedisCluster`` as ``client`` (used
    as it is, timeouts and retries included, and closed by ``aclose`` only if
    ``close_client=True``).

    ``socket_timeout`` and ``socket_connect_timeout`` (seconds) bound every command and
    connection; ``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile`` configure TLS. Each of
    these may also be a query parameter of the URL, as redis-py reads them; the URL's value
    wins. Other keyword arguments go to the redis-py client. The store makes no retries
    (redis-py's are turned off): a failed command raises ``StoreError`` at once.

    ``writer_mark_ttl_seconds`` (7 days by default) is how long a writer's idempotency mark on
    a config outlives the writer's last batch: a retry needs it for seconds, but each process
    (each writer id) leaves one small key per config it flushed until then, so a fleet whose
    processes restart often may want it shorter. ``chunk_size`` deltas (or reads) go in one
    script call.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | RedisCluster | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        socket_timeout: float = _DEFAULT_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout: float = _DEFAULT_SOCKET_TIMEOUT_SECONDS,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        chunk_size: int = _DEFAULT_CHUNK_SIZE,
        writer_mark_ttl_seconds: int = _DEFAULT_MARK_TTL_SECONDS,
        close_client: bool | None = None,
        **client_options: Any,
    ) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            raise ValueError(
                f"key_prefix {key_prefix!r} must not contain '{{' or '}}' (they would change "
                "the Redis Cluster hash tag of every key)"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        if writer_mark_ttl_seconds < 1:
            raise ValueError(
                f"writer_mark_ttl_seconds must be at least 1, not {writer_mark_ttl_seconds}"
            )
        self._apply_script = _Script(_APPLY_LUA, int(writer_mark_ttl_seconds))
        self._prefix = key_prefix
        self._chunk = chunk_size
        self._secrets: list[str] = [s for s in (ssl_ca_certs, ssl_certfile, ssl_keyfile) if s]
        self._client: Redis | RedisCluster
        if client is not None:
            if url is not None:
                raise ValueError("give RedisStore a url or a client, not both")
            if not isinstance(client, (Redis, RedisCluster)):
                raise TypeError(
                    "client must be a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster,"
                    f" not {type(client).__name__}"
                )
            self._client = client
            self._url = _client_url(client)
            self._owns_client = bool(close_client)
            self._cluster = isinstance(client, RedisCluster)
        else:
            if not isinstance(url, str) or not url.strip():
                raise ValueError("RedisStore needs a url such as 'redis://localhost:6379/0'")
            self._url = redact_url(url)
            self._owns_client = True if close_client is None else close_client
            self._secrets += _url_secrets(url)
            options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_connect_timeout,
                "retry": Retry(NoBackoff(), 0),
            }
            for name, value in (
                ("ssl_ca_certs", ssl_ca_certs),
                ("ssl_certfile", ssl_certfile),
                ("ssl_keyfile", ssl_keyfile),
            ):
                if value is not None:
                    options[name] = value
            options.update(client_options)
            scheme = url.split(":", 1)[0].lower()
            try:
                if scheme in _CLUSTER_SCHEMES:
                    self._cluster = True
                    plain = _CLUSTER_SCHEMES[scheme] + url[len(scheme) :]
                    self._client = RedisCluster.from_url(plain, **options)
                else:
                    self._cluster = False
                    self._client = Redis.from_url(url, **options)
            except (ValueError, TypeError, *_ERRORS) as exc:
                raise ValueError(f"bad Redis store URL {self._url!r}: {self._scrub(exc)}") from None
        self._index = f"{self._prefix}configs"
        self._instance = f"{self._prefix}instance"
        self._closed = False
        self._initialized = not self._cluster
        self._slots_stale = False
        self._init_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """The store for ``url`` (see the class doc for ``options``); what ``open_store`` calls."""
        return cls(url, **options)

    # -- naming ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's URL with the password and query string redacted."""
        return self._url

    @property
    def shared(self) -> bool:
        """True: every process pointing at the same server and prefix shares it."""
        return True

    @property
    def key_prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client (for tests and for tools that inspect the keys)."""
        return self._client

    def config_key_base(self, config_id: str) -> str:
        """``P{T}:``, the start of every key of ``config_id`` (see module doc)."""
        return f"{self._prefix}{{{_tag(config_id)}}}:"

    def __repr__(self) -> str:
        kind = "cluster" if self._cluster else "single"
        return f"RedisStore({self._url!r}, {kind}, key_prefix={self._prefix!r})"

    # -- errors ---------------------------------------------------------------------------

    def _scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, operation: str, exc: BaseException) -> StoreError:
        return StoreError(f"Redis store {self._url}: {operation} failed: {self._scrub(exc)}")

    # -- script calls ---------------------------------------------------------------------

    async def _ready(self) -> None:
        """Initialise a cluster client once, before any command. redis-py's asyncio
        ``RedisCluster`` initialises itself on first use, but commands started concurrently on a
        fresh client then break each other's connections ("Connection closed by server")."""
        if self._initialized:
            return
        async with self._init_lock:
            if not self._initialized:
                assert isinstance(self._client, RedisCluster)
                await self._client.initialize()
                self._initialized = True

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        await self._ready()
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._client.script_load(script.text)
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)

    async def _eval_many(
        self,
        script: _Script,
        calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
        extra: Iterable[tuple[Any, ...]] = (),
    ) -> list[Any]:
        """One pipeline of EVALSHA calls (then ``extra`` commands); the calls that met a
        NOSCRIPT (never run) are run again after a SCRIPT LOAD. Returns the calls' replies;
        raises the first error of any command."""
        await self._ready()
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha_bytes, b"%d" % len(keys), *keys, *args)
        for command in extra:
            pipe.execute_command(*command)
        replies = list(await pipe.execute(raise_on_error=False))
        missing = [n for n, r in enumerate(replies[: len(calls)]) if isinstance(r, NoScriptError)]
        if missing:
            await self._client.script_load(script.text)
            pipe = self._client.pipeline(transaction=False)
            for n in missing:
                keys, args = calls[n]
                pipe.execute_command("EVALSHA", script.sha_bytes, b"%d" % len(keys), *keys, *args)
            for n, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[n] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[: len(calls)]

    async def _eval_on(
        self, script: _Script, node: ClusterNode, key: bytes, args: list[Any]
    ) -> Any:
        """One EVALSHA on one cluster master (``key`` routes it), again after a SCRIPT LOAD if
        the master answers NOSCRIPT."""
        assert isinstance(self._client, RedisCluster)
        command = ("EVALSHA", script.sha_bytes, b"1", key, *args)
        try:
            return await self._client.execute_command(*command, target_nodes=node)
        except NoScriptError:
            await self._client.script_load(script.text)
            return await self._client.execute_command(*command, target_nodes=node)

    async def _chunked(
        self,
        script: _Script,
        head: tuple[bytes, ...],
        items: Sequence[_Item],
        extra: Sequence[tuple[Any, ...]] = (),
    ) -> list[Any]:
        """Run ``script`` over ``items`` in calls of at most ``chunk_size`` items (ARGV: ``head``
        then each item's arguments), which return one reply per item; returns them in the
        items' order. One Redis: one pipeline of every call, then ``extra``. A cluster: the
        items grouped by the master that holds their slot, every call (and ``extra``) sent at
        once; after an error the slot map is read again before the next call (a slot may have
        moved: a script cannot follow a MOVED)."""
        await self._ready()
        groups: list[tuple[ClusterNode | None, list[int]]]
        if isinstance(self._client, RedisCluster):
            if self._slots_stale:
                await self._client.nodes_manager.initialize()
                self._slots_stale = False
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            node_of = self._client.nodes_manager.get_node_from_slot
            for n, item in enumerate(items):
                master = node_of(item[1])
                entry = by_node.get(master.name)
                if entry is None:
                    entry = by_node[master.name] = (master, [])
                entry[1].append(n)
            groups = list(by_node.values())
        else:
            groups = [(None, list(range(len(items))))]
        calls: list[tuple[ClusterNode | None, list[int], bytes, list[Any]]] = []
        size = self._chunk
        for node, indices in groups:
            for first in range(0, len(indices), size):
                part = indices[first : first + size]
                args: list[Any] = list(head)
                args += [items[n][2] for n in part]
                calls.append((node, part, items[part[0]][0], args))
        replies: list[Any]
        if isinstance(self._client, RedisCluster):
            client = self._client
            results = await asyncio.gather(
                *(self._eval_on(script, node, key, args) for node, _, key, args in calls if node),
                *(client.execute_command(*command) for command in extra),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    self._slots_stale = True
                    raise result
            replies = list(results[: len(calls)])
        else:
            replies = await self._eval_many(
                script, [((key,), args) for _, _, key, args in calls], extra
            )
        out: list[Any] = [None] * len(items)
        for (_, part, _, _), reply in zip(calls, replies, strict=True):
            for n, one in zip(part, reply, strict=True):
                out[n] = one
        return out

    # -- the protocol ---------------------------------------------------------------------

    async def instance_id(self) -> str:
        """The first caller's id, kept by the server: a ``GET`` (the flusher asks every cycle:
        a read, so a server refusing writes still answers it), and ``SET Pinstance <uuid4 hex>
        NX GET`` only when there is none yet."""
        try:
            await self._ready()
            current = await self._client.get(self._instance)
            if current is not None:
                return _text(current)
            mine = uuid.uuid4().hex
            previous = await self._client.set(self._instance, mine, nx=True, get=True)
        except _ERRORS as exc:
            raise self._error("instance_id", exc) from None
        return mine if previous is None else _text(previous)

    async def apply(self, batch: FlushBatch) -> list[ConfigSync]:
        """One script call per chunk of deltas (in a cluster: per chunk of one master's), then
        one ``SADD`` of the index; see the module doc."""
        deltas = batch.deltas
        if not deltas:
            return []
        prefix = self._prefix
        items: list[_Item] = []
        ids: list[bytes] = []
        for d in deltas:
            w, c = d.window, d.counts
            ttl = 0 if w.ttl_seconds is None else max(1, w.ttl_seconds)
            key, _, _, slot = _config_keys(prefix, d.config_id)
            tail, raw_id = _apply_tail(prefix, d.config_id, d.provider)
            ids.append(raw_id)
            numbers = b"%d %d %d %d %d %d %d %d %d %d" % (w.start, w.epoch, ttl, *c)
            items.append((key, slot, numbers + tail))
        head = (batch.writer.encode(), str(batch.seq).encode())
        index = ("SADD", self._index, *ids)
        try:
            replies = await self._chunked(self._apply_script, head, items, (index,))
            return [
                _parse(d.config_id, reply, d.counts)
                for d, reply in zip(deltas, replies, strict=True)
            ]
        except _ERRORS as exc:
            raise self._error(f"apply (writer {batch.writer!r}, seq {batch.seq})", exc) from None
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise self._error("apply (bad data in the store)", exc) from None

    async def read(self, wanted: Sequence[tuple[str, int]]) -> list[ConfigSync]:
        """One read-only script call per chunk of ``(config_id, window_start)`` (in a cluster:
        per chunk of one master's)."""
        if not wanted:
            return []
        prefix = self._prefix
        items: list[_Item] = []
        for config_id, start in wanted:
            key, base, _, slot = _config_keys(prefix, config_id)
            items.append((key, slot, b"%d " % int(start) + base))
        try:
            replies = await self._chunked(_READ, (), items)
            return [
                _parse(config_id, reply)
                for (config_id, _), reply in zip(wanted, replies, strict=True)
            ]
        except _ERRORS as exc:
            raise self._error("read", exc) from None
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise self._error("read (bad data in the store)", exc) from None

    async def config_ids(self) -> list[str]:
        """The members of ``Pconfigs``, sorted."""
        try:
            await self._ready()
            members = await self._client.smembers(self._index)
        except _ERRORS as exc:
            raise self._error("config_ids", exc) from None
        return sorted(_text(m) for m in members)

    async def put_config(self, record: ConfigRecord) -> None:
        """HSET the record (and the provider when it has one), DEL the tombstone (a config
        created afresh), then SADD the index."""
        base = self.config_key_base(record.config_id)
        fields: dict[str, str] = {"id": record.config_id, "record": _record_json(record)}
        if record.provider is not None:
            fields["provider"] = record.provider
        try:
            await self._ready()
            await self._client.hset(base + "cfg", mapping=fields)  # type: ignore[arg-type]
            await self._client.delete(base + "gone")
            await self._client.sadd(self._index, record.config_id)
        except _ERRORS as exc:
            raise self._error(f"put_config ({record.config_id!r})", exc) from None

    async def reset(self, config_id: str) -> int:
        """HINCRBY the epoch in the config hash."""
        base = self.config_key_base(config_id)
        try:
            epoch = await self._eval(_RESET, (base + "cfg",), (config_id,))
            await self._client.sadd(self._index, config_id)
        except _ERRORS as exc:
            raise self._error(f"reset ({config_id!r})", exc) from None
        return int(epoch)

    async def delete(self, config_id: str) -> bool:
        """One script deletes every key of the config (windows and writer marks through their
        sets) and leaves its tombstone ``P{T}:gone`` for ``TOMBSTONE_SECONDS``, then SREM the
        index."""
        try:
            existed = await self._eval(
                _DELETE, (self.config_key_base(config_id) + "cfg",), (str(TOMBSTONE_SECONDS),)
            )
            await self._client.srem(self._index, config_id)
        except _ERRORS as exc:
            raise self._error(f"delete ({config_id!r})", exc) from None
        return bool(int(existed))

    async def compare_and_set_alert(
        self, config_id: str, expected_version: int, data: str
    ) -> tuple[bool, AlertRecord]:
        """A Lua compare-and-set on the alert version (``av``) in the config hash.

        When the version differs and there is no record at all (``expected_version`` > 0 for a
        deleted config), the current record is reported as ``AlertRecord(0, "")``.
        """
        key = self.config_key_base(config_id) + "cfg"
        try:
            reply = await self._eval(_CAS, (key,), (config_id, str(expected_version), data))
            if int(reply[0]) == 1:
                await self._client.sadd(self._index, config_id)
        except _ERRORS as exc:
            raise self._error(f"compare_and_set_alert ({config_id!r})", exc) from None
        won = int(reply[0]) == 1
        current = "" if len(reply) < 3 or reply[2] is None else _text(reply[2])
        return won, AlertRecord(int(reply[1]), current)

    async def aclose(self) -> None:
        """Close the client's connections (a client passed in: only if ``close_client``)."""
        if self._closed:
            return
        self._closed = True
        if not self._owns_client:
            return
        try:
            await self._client.aclose()
        except _ERRORS as exc:
            raise self._error("aclose", exc) from None


def _url_secrets(url: str) -> list[str]:
    """The password and every query value of ``url`` (they may be key paths), to scrub from
    error messages."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    secrets = [unquote(v) for _, v in parse_qsl(parts.query) if v]
    if parts.password:
        secrets += [parts.password, unquote(parts.password)]
    return sorted(set(secrets), key=len, reverse=True)


def _client_url(client: Redis | RedisCluster) -> str:
    """A redacted URL naming a client passed in (its host, port and db; never a password)."""
    if isinstance(client, RedisCluster):
        nodes = list(client.nodes_manager.startup_nodes.values()) or client.get_nodes()
        where = f"{nodes[0].host}:{nodes[0].port}" if nodes else "?"
        return f"redis+cluster://{where}"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    tls = "ssl" in client.connection_pool.connection_class.__name__.lower()
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{'rediss' if tls else 'redis'}://{host}:{port}/{db}"
