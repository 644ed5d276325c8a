"""Memcached backend (pymemcache): one node over a thread-safe pool, or a consistent-hash pool.

One node is served by a pymemcache ``PooledClient`` (one connection per
concurrent thread). Several nodes sit on pymemcache's ``HashClient`` ring
(rendezvous hashing), but every call is routed to the node's own pooled client
by this class: ``HashClient``'s failure handling answers ``delete`` with
``False`` ("not found") and ``get`` with a miss while a node is in its retry
window, which would silently lose an invalidation. Here a node that fails
raises ``BackendUnavailableError`` and is then skipped (raising at once) for
``node_cooldown`` seconds; the ring never changes, so keys are never remapped
onto a node that could later serve a stale copy. ``get_many`` returns what the
answering nodes hold and raises only when every node asked has failed.

Keys go through ``encode_key(key, 250, ascii_only=True)``: anything memcached's
text protocol cannot carry verbatim is hashed, so a key can never inject a
command. Values are bytes; values over ``max_value_size`` raise
``ValueTooLargeError`` before anything is sent (memcached drops the old item
when an oversized ``set`` fails).
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError, MemcacheServerError

from ..errors import (
    BackendUnavailableError,
    CacheError,
    ConfigurationError,
    SerializationError,
    ValueTooLargeError,
)
from ..keys import encode_key
from .base import MISSING, Backend

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_KEY_BYTES",
    "MAX_RELATIVE_TTL",
    "MemcachedBackend",
    "memcached_expire",
    "memcached_key",
    "parse_servers",
]

log = logging.getLogger("cachekit.memcached")

#: memcached's key limit in bytes (the text protocol refuses longer keys).
MAX_KEY_BYTES: Final = 250
#: memcached's default item size is 1 MiB (``-I 1m``) for header + key + value;
#: 512 bytes leave room for the item header and a 250-byte key.
DEFAULT_MAX_VALUE_SIZE: Final = 1024 * 1024 - 512
#: Expiry times above this many seconds are read by memcached as a unix timestamp.
MAX_RELATIVE_TTL: Final = 60 * 60 * 24 * 30
#: Connect and read timeout, seconds (pymemcache's own default is to wait forever).
DEFAULT_TIMEOUT: Final = 0.25
DEFAULT_PORT: Final = 11211
#: Key -> node choices remembered per pool: pymemcache's ring hashes in pure
#: Python (about 10 us per node per key), more than a loopback round trip.
ROUTE_CACHE_SIZE: Final = 65_536

# Everything pymemcache or the socket layer raises for a server that is down,
# slow or refusing; RuntimeError is the pool's "too many connections".
_FAILURES: Final = (MemcacheError, OSError, RuntimeError)


def memcached_expire(ttl: float | None, now: Callable[[], float] = time.time) -> int | None:
    """Return memcached's ``exptime`` for ``ttl`` seconds, or ``None`` when the entry must go.

    ``None`` -> 0 (no expiry); ``ttl <= 0`` -> ``None`` (delete instead of
    storing); sub-second TTLs round up to 1 s (memcached counts whole seconds,
    and rounding down would give 0 = never expire); TTLs over 30 days become an
    absolute unix time, because memcached reads larger numbers that way.
    """
    if ttl is None or ttl == math.inf:
        return 0
    if ttl != ttl:  # NaN
        raise ConfigurationError("ttl must be a number of seconds, not NaN")
    if ttl <= 0:
        return None
    seconds = math.ceil(ttl)
    if seconds > MAX_RELATIVE_TTL:
        return math.ceil(now() + ttl)
    return seconds


def memcached_key(key: str) -> str:
    """Return the key memcached receives for ``key`` (printable ASCII, at most 250 bytes)."""
    return encode_key(key, max_length=MAX_KEY_BYTES, ascii_only=True)


def parse_servers(netloc: str) -> list[tuple[str, int]]:
    """Parse ``host:port[,host:port...]`` (IPv6 in brackets; port defaults to 11211)."""
    servers: list[tuple[str, int]] = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        part = unquote(part.strip())
        if not part:
            continue
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif part.count(":") == 1:
            host, _, port_text = part.partition(":")
        else:
            host, port_text = part, ""
        try:
            port = int(port_text) if port_text else DEFAULT_PORT
        except ValueError as exc:
            raise ConfigurationError(f"memcached:// bad port in {part!r}") from exc
        if not host or not 0 < port < 65536:
            raise ConfigurationError(f"memcached:// bad server {part!r}")
        servers.append((host, port))
    if not servers:
        raise ConfigurationError("memcached:// URL names no server (memcached://host:port)")
    return servers


def _node_name(server: Any) -> str:
    if isinstance(server, tuple) and len(server) == 2:
        return f"{server[0]}:{server[1]}"
    return str(server)


def _as_bytes(key: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise SerializationError(
        f"MemcachedBackend stores bytes, got {type(value).__name__} for key {key!r}; "
        "give the Cache a serializer"
    )


_BOOL_OPTIONS = ("no_delay", "tls")
_INT_OPTIONS = ("max_value_size", "pool_size")
_FLOAT_OPTIONS = ("timeout", "connect_timeout", "pool_idle_timeout", "node_cooldown")


class _FastPooledClient(PooledClient):  # type: ignore[misc]
    """A ``PooledClient`` whose ``get`` (the hot path) borrows a connection without a lock.

    pymemcache's pool takes a lock and a context manager per call (~5 us, about a
    fifth of a loopback hit); ``deque.pop``/``append`` are atomic, so reads use an
    idle list of plain clients instead. Writes keep the regular pool.
    """

    _MAX_IDLE = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle: collections.deque[Client] = collections.deque()

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            client = self._idle.pop()
        except IndexError:
            client = self._create_client()
        try:
            value = client.get(key, default)
        except BaseException:
            client.close()  # a failed connection is never reused
            raise
        if len(self._idle) < self._MAX_IDLE:
            self._idle.append(client)
        else:
            client.close()
        return value

    def close(self) -> None:
        super().close()
        while self._idle:
            self._idle.pop().close()


def _parse_query(query: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _INT_OPTIONS + _FLOAT_OPTIONS + _BOOL_OPTIONS:
        if name not in query:
            continue
        text = query.pop(name)
        try:
            if name in _INT_OPTIONS:
                out[name] = int(text)
            elif name in _FLOAT_OPTIONS:
                out[name] = float(text)
            else:
                if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(text)
                out[name] = text.lower() in ("1", "true", "yes", "on")
        except ValueError as exc:
            raise ConfigurationError(f"memcached:// option {name}={text!r} is not valid") from exc
    return out


class MemcachedBackend(Backend):
    """Memcached over pymemcache: one node or a consistent-hash pool of nodes.

    Build it from a URL (``memcached://h1:11211,h2:11211?timeout=0.25``), a
    list of ``(host, port)``, or a ready pymemcache ``PooledClient``,
    ``HashClient`` or ``Client`` (a plain ``Client`` is not thread-safe, and a
    client passed in keeps its own timeouts and is not closed by ``close()``).
    """

    schemes = ("memcached",)

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] | Any = (("127.0.0.1", DEFAULT_PORT),),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        pool_size: int | None = None,
        pool_idle_timeout: float = 0.0,
        no_delay: bool = True,
        tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        node_cooldown: float = 1.0,
    ) -> None:
        for name, seconds in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not 0 < seconds <= 60:
                raise ConfigurationError(f"memcached {name} must be in (0, 60] seconds")
        if max_value_size < 1:
            raise ConfigurationError("memcached max_value_size must be >= 1")
        if pool_size is not None and pool_size < 1:
            raise ConfigurationError("memcached pool_size must be >= 1")
        if node_cooldown < 0:
            raise ConfigurationError("memcached node_cooldown must be >= 0")
        self.max_value_size = max_value_size
        self._limit = max_value_size
        self.node_cooldown = node_cooldown
        if tls and tls_context is None:
            tls_context = ssl.create_default_context()  # verifies certificates and host names

        self._owned = not isinstance(servers, (HashClient, PooledClient, Client))
        self.client: Any
        if not self._owned:
            self.client = servers
        else:
            addresses = [(str(h), int(p)) for h, p in servers]
            if not addresses:
                raise ConfigurationError("MemcachedBackend needs at least one server")
            common: dict[str, Any] = {
                "connect_timeout": connect_timeout,
                "timeout": timeout,
                "no_delay": no_delay,
                "ignore_exc": False,  # the Cache decides what a failure means
                "default_noreply": False,  # wait for every answer that matters
                "max_pool_size": pool_size,
                "pool_idle_timeout": pool_idle_timeout,
                "tls_context": tls_context,
            }
            if len(addresses) == 1:
                self.client = _FastPooledClient(addresses[0], **common)
            else:
                self.client = HashClient(addresses, use_pooling=True, **common)

        # name -> the client that talks to that node
        self._nodes: dict[str, Any]
        self._hasher: Any
        if isinstance(self.client, HashClient):
            self._nodes = dict(self.client.clients)
            self._hasher = self.client.hasher
            # the ring never changes (see the module docstring), so choices can be kept
            self._route: Callable[[str], Any] = functools.lru_cache(ROUTE_CACHE_SIZE)(
                self._hasher.get_node
            )
        else:
            self._nodes = {_node_name(self.client.server): self.client}
            self._hasher = None
        # a key_prefix on a client passed in counts against memcached's 250 bytes
        prefix = len(getattr(self.client, "key_prefix", b"") or b"")
        self._key: Callable[[str], str] = (
            memcached_key
            if not prefix
            else functools.partial(encode_key, max_length=MAX_KEY_BYTES - prefix, ascii_only=True)
        )
        self.server_address = "memcached://" + ",".join(self._nodes)
        self._single: Any = None if self._hasher is not None else self.client
        self._single_name = next(iter(self._nodes))
        # node name -> monotonic time until which it is skipped (pools only)
        self._down: dict[str, float] = {}
        self._down_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemcachedBackend:
        """Build from ``memcached://host:port[,host:port...]?timeout=0.25&max_value_size=...``.

        Query options: ``timeout``, ``connect_timeout``, ``max_value_size``,
        ``pool_size``, ``pool_idle_timeout``, ``no_delay``, ``tls``,
        ``node_cooldown``; keyword ``options`` override them (``tls_context=``
        takes an ``ssl.SSLContext``).
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in cls.schemes:
            raise ConfigurationError(f"not a memcached:// URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        kwargs = _parse_query(query)
        query.pop("serializer", None)  # consumed by Cache.from_url
        if query:
            raise ConfigurationError(f"unknown memcached:// options: {', '.join(sorted(query))}")
        kwargs.update(options)
        return cls(parse_servers(parts.netloc), **kwargs)

    def __repr__(self) -> str:
        return f"MemcachedBackend({', '.join(self._nodes)})"

    @property
    def nodes(self) -> tuple[str, ...]:
        """The ``host:port`` names of the nodes, in ring order."""
        return tuple(self._nodes)

    # ------------------------------------------------------------ routing and errors

    def node_for(self, key: str) -> str:
        """Return the node (``host:port``) that holds ``key`` (a cachekit key, before encoding)."""
        return self._node_of(self._key(key))

    def _node_of(self, mkey: str) -> str:
        if self._hasher is None:
            return self._single_name
        return str(self._route(mkey))

    def _group(self, mkeys: Iterable[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for mkey in mkeys:
            groups.setdefault(self._node_of(mkey), []).append(mkey)
        return groups

    @contextmanager
    def _on(self, node: str, op: str, size: int = 0, key: str | None = None) -> Iterator[Any]:
        """Yield ``node``'s client; translate its failures into cachekit errors."""
        if self._down:
            self._check_down(node)
        try:
            yield self._nodes[node]
        except _FAILURES as exc:
            if isinstance(exc, MemcacheServerError) and b"too large" in _message(exc):
                # the server's item limit (-I) is below max_value_size
                raise ValueTooLargeError(size, self._limit, key) from exc
            self._mark_down(node)
            raise BackendUnavailableError(
                f"memcached {node} failed during {op}: {type(exc).__name__}: {exc}"
            ) from exc
        if self._down:
            with self._down_lock:
                self._down.pop(node, None)

    def _check_down(self, node: str) -> None:
        until = self._down.get(node)
        if until is not None and time.monotonic() < until:
            raise BackendUnavailableError(
                f"memcached {node} failed recently; skipped for up to {self.node_cooldown} s"
            )

    def _mark_down(self, node: str) -> None:
        # One node: the Cache's circuit breaker does this job; a pool needs it
        # per node, or one dead node would cost a timeout on a third of all calls.
        if self._hasher is None or not self.node_cooldown:
            return
        with self._down_lock:
            if node not in self._down:
                log.warning(
                    "cachekit: memcached node %s failed; its keys fail fast for %s s",
                    node,
                    self.node_cooldown,
                )
            self._down[node] = time.monotonic() + self.node_cooldown

    def _check_size(self, key: str, data: bytes) -> None:
        if len(data) > self._limit:
            raise ValueTooLargeError(len(data), self._limit, key)

    # ------------------------------------------------------------ the contract

    def get(self, key: str) -> Any:
        """Return the stored bytes, or ``MISSING``."""
        mkey = self._key(key)
        single = self._single
        if single is not None:
            try:
                value = single.get(mkey)
            except _FAILURES as exc:
                raise BackendUnavailableError(
                    f"memcached {self._single_name} failed during get: {type(exc).__name__}: {exc}"
                ) from exc
        else:
            with self._on(self._node_of(mkey), "get") as client:
                value = client.get(mkey)
        return MISSING if value is None else value

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: bytes}`` for the present keys: one ``get k1 k2 ...`` per node.

        In a pool, keys on a failed node are left out (misses); it raises only
        when every node asked has failed.
        """
        by_mkey = {self._key(k): k for k in keys}
        if not by_mkey:
            return {}
        out: dict[str, Any] = {}
        error: CacheError | None = None
        answered = 0
        for node, mkeys in self._group(by_mkey).items():
            try:
                with self._on(node, "get_many") as client:
                    found = client.get_many(mkeys)
            except BackendUnavailableError as exc:
                error = error or exc
                continue
            answered += 1
            for mkey, value in found.items():
                out[by_mkey[mkey]] = value
        if error is not None and not answered:
            raise error
        return out

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds; raises ``ValueTooLargeError`` before sending."""
        data = _as_bytes(key, value)
        self._check_size(key, data)
        expire = memcached_expire(ttl)
        if expire is None:
            self.delete(key)
            return
        mkey = self._key(key)
        with self._on(self._node_of(mkey), "set", len(data), key) as client:
            stored = client.set(mkey, data, expire=expire, noreply=False)
        if not stored:
            raise BackendUnavailableError(f"memcached did not store {key!r}")

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item with one pipelined round trip per node; sizes are checked first."""
        items = {k: _as_bytes(k, v) for k, v in mapping.items()}
        for key, data in items.items():
            self._check_size(key, data)
        expire = memcached_expire(ttl)
        if expire is None:
            self.delete_many(items)
            return
        values = {self._key(k): v for k, v in items.items()}
        error: CacheError | None = None
        for node, mkeys in self._group(values).items():
            try:
                with self._on(node, "set_many") as client:
                    failed = client.set_many({m: values[m] for m in mkeys}, expire, noreply=False)
            except CacheError as exc:
                error = error or exc
                continue
            if failed:
                error = error or BackendUnavailableError(
                    f"memcached {node} did not store {len(failed)} of {len(mkeys)} keys"
                )
        if error is not None:  # every node was tried, so one failure does not stop the rest
            raise error

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was stored."""
        data = _as_bytes(key, value)
        self._check_size(key, data)
        expire = memcached_expire(ttl)
        if expire is None:  # an entry that expires at once: stored only in name, as in memory
            return self.get(key) is MISSING
        mkey = self._key(key)
        with self._on(self._node_of(mkey), "add", len(data), key) as client:
            return bool(client.add(mkey, data, expire=expire, noreply=False))

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""
        mkey = self._key(key)
        with self._on(self._node_of(mkey), "delete") as client:
            return bool(client.delete(mkey, noreply=False))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` with one pipelined round trip per node; return how many were present.

        Every node is tried; if one failed, ``BackendUnavailableError`` is raised
        afterwards so the caller knows some invalidations did not land.
        """
        mkeys = list(dict.fromkeys(self._key(k) for k in keys))
        removed = 0
        error: CacheError | None = None
        for node, group in self._group(mkeys).items():
            try:
                with self._on(node, "delete_many") as client:
                    removed += _delete_counted(client, group)
            except CacheError as exc:
                error = error or exc
        if error is not None:
            raise error
        return removed

    def close(self) -> None:
        """Close the connections of a client this backend created."""
        if self._owned:
            for client in self._nodes.values():
                client.close()

    # ------------------------------------------------------------ capabilities

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds exactly ``expected`` (``gets`` + ``cas``)."""
        data = _as_bytes(key, value)
        self._check_size(key, data)
        expire = memcached_expire(ttl)
        mkey = self._key(key)
        with self._on(self._node_of(mkey), "compare_and_set", len(data), key) as client:
            current, token = client.gets(mkey)
            if current is None or token is None or current != expected:
                return False
            if expire is None:
                # an immediately expiring value: the cas-guarded equivalent is a
                # cas that stores it already expired (memcached drops it)
                return bool(client.cas(mkey, data, token, expire=-1, noreply=False))
            return bool(client.cas(mkey, data, token, expire=expire, noreply=False))

    def server_stats(self) -> dict[str, float]:
        """Return ``evictions``, ``expired``, ``hits``, ``misses`` summed over every node."""
        fields = {
            "evictions": b"evictions",
            "expired": b"expired_unfetched",
            "hits": b"get_hits",
            "misses": b"get_misses",
        }
        totals = dict.fromkeys(fields, 0.0)
        for node in self._nodes:
            with self._on(node, "stats") as client:
                stats = client.stats()
            for name, stat in fields.items():
                raw = stats.get(stat, stats.get(stat.decode(), 0))
                with suppress(TypeError, ValueError):  # a stat this server does not keep
                    totals[name] += float(raw)
        return totals


def _message(exc: BaseException) -> bytes:
    arg = exc.args[0] if exc.args else b""
    return arg if isinstance(arg, bytes) else str(arg).encode()


def _delete_counted(client: Any, mkeys: list[str]) -> int:
    """Pipeline ``delete`` for ``mkeys`` and count the ``DELETED`` answers."""
    pool = getattr(client, "client_pool", None)
    if pool is not None:
        with pool.get_and_release(destroy_on_fail=True) as conn:
            return _delete_on(conn, mkeys)
    if hasattr(client, "_misc_cmd"):
        return _delete_on(client, mkeys)
    client.delete_many(mkeys, noreply=False)  # a client type that cannot count
    return 0


def _delete_on(conn: Any, mkeys: list[str]) -> int:
    # pymemcache's public delete_many() drops the answers; its _misc_cmd keeps them
    cmds = [b"delete " + conn.check_key(k, conn.key_prefix) + b"\r\n" for k in mkeys]
    lines = conn._misc_cmd(cmds, b"delete", False)
    return sum(1 for line in lines if line == b"DELETED")
