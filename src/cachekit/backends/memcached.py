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

Every command has one deadline (``timeout``, connect included): the sockets
this backend opens set their timeout to the time left before each read and
write, so a server that trickles its answer cannot hold a call past it. A
server that answers but refuses (``SERVER_ERROR``/``CLIENT_ERROR``) raises
``BackendRejectedError`` and is not marked down. After ``fork()`` the child
opens its own connections instead of sharing the parent's.

Keys go through ``encode_key(key, 250, ascii_only=True)``: anything memcached's
text protocol cannot carry verbatim is hashed, so a key can never inject a
command. Values are bytes; values over ``max_value_size`` raise
``ValueTooLargeError`` before anything is sent (memcached drops the old item
when an oversized ``set`` fails).

This module routes commands to nodes and translates failures; next to it live
the entry conversions (``memcached_items``), the pymemcache clients
(``memcached_clients``), the deadline-bound sockets (``memcached_sockets``),
the URL and option parsing (``memcached_url``), which failures are refusals
(``memcached_errors``) and the node names and cooldown (``memcached_nodes``).
"""

from __future__ import annotations

import functools
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Final

from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient

from ..errors import (
    BackendRejectedError,
    BackendUnavailableError,
    CacheError,
    ConfigurationError,
    ValueTooLargeError,
)
from ..keys import encode_key
from .base import MISSING, Backend
from .memcached_clients import _delete_counted, _drop_inherited, _FastPooledClient, _Process
from .memcached_errors import _FAILURES, _message, _rejected
from .memcached_items import (
    MAX_ABSOLUTE_EXPTIME,
    MAX_KEY_BYTES,
    MAX_RELATIVE_TTL,
    memcached_expire,
    memcached_key,
)

# The `name as name` imports are re-exports: aio/memcached.py imports them from here.
from .memcached_items import _as_bytes as _as_bytes
from .memcached_nodes import NodeCooldown
from .memcached_nodes import _node_name as _node_name
from .memcached_sockets import _deadline, _DeadlineTLS, _socket_module
from .memcached_url import DEFAULT_PORT as DEFAULT_PORT
from .memcached_url import _check_seconds as _check_seconds
from .memcached_url import _parse_url, parse_servers

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_ABSOLUTE_EXPTIME",
    "MAX_KEY_BYTES",
    "MAX_RELATIVE_TTL",
    "MemcachedBackend",
    "ServerValueTooLargeError",
    "memcached_expire",
    "memcached_key",
    "parse_servers",
]

#: memcached's default item size is 1 MiB (``-I 1m``) for header + key + value;
#: 512 bytes leave room for the item header and a 250-byte key.
DEFAULT_MAX_VALUE_SIZE: Final = 1024 * 1024 - 512
#: Deadline of one whole command (connect included), seconds.
DEFAULT_TIMEOUT: Final = 0.25
#: Key -> node choices remembered per pool: pymemcache's ring hashes in pure
#: Python (about 10 us per node per key), more than a loopback round trip.
ROUTE_CACHE_SIZE: Final = 65_536


class ServerValueTooLargeError(ValueTooLargeError, BackendRejectedError):
    """memcached refused an item as too large for its ``-I`` limit (it has dropped the old item)."""


class MemcachedBackend(Backend):
    """Memcached over pymemcache: one node or a consistent-hash pool of nodes.

    Build it from a URL (``memcached://h1:11211,h2:11211?timeout=0.25``), a
    list of ``(host, port)``, or a ready pymemcache ``PooledClient``,
    ``HashClient`` or ``Client`` (a plain ``Client`` is not thread-safe, and a
    client passed in keeps its own sockets and timeouts, is not reopened after
    ``fork()`` and is not closed by ``close()``).
    """

    schemes = ("memcached",)

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] | Any = (("127.0.0.1", DEFAULT_PORT),),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        pool_size: int | None = None,
        pool_idle_timeout: float = 0.0,
        no_delay: bool = True,
        tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        node_cooldown: float = 1.0,
    ) -> None:
        self.timeout = _check_seconds("timeout", timeout, 0, 60, low_open=True)
        connect_timeout = _check_seconds(
            "connect_timeout",
            self.timeout if connect_timeout is None else connect_timeout,
            0,
            60,
            low_open=True,
        )
        pool_idle_timeout = _check_seconds(
            "pool_idle_timeout", pool_idle_timeout, 0, math.inf, low_open=False
        )
        self.node_cooldown = _check_seconds("node_cooldown", node_cooldown, 0, 3600, low_open=False)
        for name, count in (("max_value_size", max_value_size), ("pool_size", pool_size)):
            if count is None and name == "pool_size":
                continue
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ConfigurationError(f"memcached {name} must be an integer >= 1, got {count!r}")
        self.max_value_size = max_value_size
        self._limit = max_value_size
        if tls and tls_context is None:
            tls_context = ssl.create_default_context()  # verifies certificates and host names
        self.tls_context = tls_context

        self._owned = not isinstance(servers, (HashClient, PooledClient, Client))
        self._addresses: list[tuple[str, int]] = []
        self._options: dict[str, Any] = {}
        if self._owned:
            self._addresses = [(str(h), int(p)) for h, p in servers]
            if not self._addresses:
                raise ConfigurationError("MemcachedBackend needs at least one server")
            self._options = {
                "connect_timeout": connect_timeout,
                "timeout": self.timeout,
                "no_delay": no_delay,
                "ignore_exc": False,  # the Cache decides what a failure means
                "default_noreply": False,  # wait for every answer that matters
                "max_pool_size": pool_size,
                "pool_idle_timeout": pool_idle_timeout,
                "tls_context": None if tls_context is None else _DeadlineTLS(tls_context),
                "socket_module": _socket_module,  # deadline-bound sockets
            }
        _Process.hook()
        self._attach(self._build() if self._owned else servers)
        self._fork_lock = threading.Lock()

    def _build(self) -> Any:
        """Create the pymemcache client for this backend's servers (no connection yet)."""
        if len(self._addresses) == 1:
            return _FastPooledClient(self._addresses[0], **self._options)
        ring = HashClient(self._addresses, use_pooling=True, **self._options)
        for name, node in list(ring.clients.items()):  # each node gets the lean read path too
            ring.clients[name] = _FastPooledClient(node.server, **self._options)
        return ring

    def _attach(self, client: Any) -> None:
        """Route every call through ``client`` (and its per-node clients)."""
        self.client = client
        # name -> the client that talks to that node
        self._nodes: dict[str, Any]
        self._hasher: Any
        if isinstance(client, HashClient):
            self._nodes = dict(client.clients)
            self._hasher = client.hasher
            # the ring never changes (see the module docstring), so choices can be kept
            self._route: Callable[[str], Any] = functools.lru_cache(ROUTE_CACHE_SIZE)(
                self._hasher.get_node
            )
        else:
            self._nodes = {_node_name(client.server): client}
            self._hasher = None
        # a key_prefix on a client passed in counts against memcached's 250 bytes
        prefix = len(getattr(client, "key_prefix", b"") or b"")
        self._key: Callable[[str], str] = (
            memcached_key
            if not prefix
            else functools.partial(encode_key, max_length=MAX_KEY_BYTES - prefix, ascii_only=True)
        )
        self.server_address = "memcached://" + ",".join(self._nodes)
        self._single_name = next(iter(self._nodes))
        # node name -> monotonic time until which it is skipped (pools only)
        self._down = NodeCooldown(0.0 if self._hasher is None else self.node_cooldown)
        self._pid = _Process.pid

    def _after_fork(self) -> None:
        """In a forked child: leave the parent's connections to it and open our own."""
        _Process.pid = os.getpid()  # also after a fork that ran no hooks
        with self._fork_lock:
            if self._pid == _Process.pid:
                return  # another thread of this child got here first
            if not self._owned:  # not ours to rebuild; its owner reconnects it
                self._pid = _Process.pid
                return
            inherited = list(self._nodes.values())
            self._attach(self._build())
        for client in inherited:
            _drop_inherited(client)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemcachedBackend:
        """Build from ``memcached://host:port[,host:port...]?timeout=0.25&max_value_size=...``.

        Query options: ``timeout``, ``connect_timeout``, ``max_value_size``,
        ``pool_size``, ``pool_idle_timeout``, ``no_delay``, ``tls``,
        ``node_cooldown``; keyword ``options`` override them (``tls_context=``
        takes an ``ssl.SSLContext``).
        """
        servers, kwargs = _parse_url(url, cls.schemes)
        kwargs.update(options)
        return cls(servers, **kwargs)

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
    def _command(self) -> Iterator[None]:
        """Run one backend command under one deadline (an enclosing command's, if any)."""
        if self._pid != os.getpid():  # off the hot path: ask the system
            self._after_fork()
        deadline = _deadline
        outer = deadline.at
        if not outer:
            deadline.at = time.monotonic() + self.timeout
        try:
            yield
        finally:
            deadline.at = outer

    @contextmanager
    def _on(self, node: str, op: str, size: int = 0, key: str | None = None) -> Iterator[Any]:
        """Yield ``node``'s client; translate its failures into cachekit errors."""
        if self._down:
            self._down.check(node)
        at = _deadline.at
        if at and time.monotonic() >= at:  # an earlier node used the whole deadline
            raise BackendUnavailableError(
                f"memcached {op}: the {self.timeout} s deadline passed before {node} was asked"
            )
        try:
            yield self._nodes[node]
        except _FAILURES as exc:
            raise self._failure(node, op, exc, size, key) from exc
        if self._down:
            self._down.answered(node)

    def _failure(
        self, node: str, op: str, exc: BaseException, size: int = 0, key: str | None = None
    ) -> CacheError:
        """The cachekit error for ``exc``; a node that did not answer is marked down."""
        if _rejected(exc):
            message = _message(exc).decode("utf-8", "replace")
            if b"too large" in _message(exc):
                # the server's item limit (-I) is below max_value_size
                return ServerValueTooLargeError(size, self._limit, key)
            return BackendRejectedError(f"memcached {node} refused {op}: {message}")
        self._down.mark(node)
        client = self._nodes.get(node)
        if isinstance(client, _FastPooledClient):
            client.drop_idle()
        return BackendUnavailableError(
            f"memcached {node} failed during {op}: {type(exc).__name__}: {exc}"
        )

    def _check_size(self, key: str, data: bytes) -> None:
        if len(data) > self._limit:
            raise ValueTooLargeError(len(data), self._limit, key)

    # ------------------------------------------------------------ the contract

    def get(self, key: str) -> Any:
        """Return the stored bytes, or ``MISSING``."""
        mkey = self._key(key)
        if self._pid != _Process.pid:
            self._after_fork()
        # the hot path, kept flat: what _command() and _on() do, without their frames
        node = self._single_name if self._hasher is None else str(self._route(mkey))
        if self._down:
            self._down.check(node)
        deadline = _deadline
        outer = deadline.at
        if not outer:
            deadline.at = time.monotonic() + self.timeout
        try:
            value = self._nodes[node].get(mkey)
        except _FAILURES as exc:
            raise self._failure(node, "get", exc) from exc
        finally:
            deadline.at = outer
        if self._down:
            self._down.answered(node)
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
        with self._command():
            for node, mkeys in self._group(by_mkey).items():
                try:
                    with self._on(node, "get_many") as client:
                        found = client.get_many(mkeys)
                except (BackendUnavailableError, BackendRejectedError) as exc:
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
        with self._command(), self._on(self._node_of(mkey), "set", len(data), key) as client:
            stored = client.set(mkey, data, expire=expire, noreply=False)
        if not stored:
            raise BackendRejectedError(f"memcached did not store {key!r} (NOT_STORED)")

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
        with self._command():
            for node, mkeys in self._group(values).items():
                try:
                    with self._on(node, "set_many") as client:
                        failed = client.set_many(
                            {m: values[m] for m in mkeys}, expire, noreply=False
                        )
                except CacheError as exc:
                    error = error or exc
                    continue
                if failed:
                    error = error or BackendRejectedError(
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
        with self._command(), self._on(self._node_of(mkey), "add", len(data), key) as client:
            return bool(client.add(mkey, data, expire=expire, noreply=False))

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""
        mkey = self._key(key)
        with self._command(), self._on(self._node_of(mkey), "delete") as client:
            return bool(client.delete(mkey, noreply=False))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` with one pipelined round trip per node; return how many were present.

        Every node is tried; if one failed, ``BackendUnavailableError`` is raised
        afterwards so the caller knows some invalidations did not land.
        """
        mkeys = list(dict.fromkeys(self._key(k) for k in keys))
        removed = 0
        error: CacheError | None = None
        with self._command():
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
            if self._pid != os.getpid():  # a child closing what it inherited: its copies only
                for client in self._nodes.values():
                    _drop_inherited(client)
                return
            for client in self._nodes.values():
                client.close()

    # ------------------------------------------------------------ capabilities

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds exactly ``expected`` (``gets`` + ``cas``)."""
        data = _as_bytes(key, value)
        self._check_size(key, data)
        expire = memcached_expire(ttl)
        mkey = self._key(key)
        node = self._node_of(mkey)
        with self._command(), self._on(node, "compare_and_set", len(data), key) as client:
            current, token = client.gets(mkey)
            if current is None or token is None or current != expected:
                return False
            # an immediately expiring value: the cas-guarded equivalent is a cas
            # that stores it already expired (memcached drops it)
            exptime = -1 if expire is None else expire
            return bool(client.cas(mkey, data, token, expire=exptime, noreply=False))

    def server_stats(self) -> dict[str, float]:
        """Return ``evictions``, ``expired``, ``hits``, ``misses`` summed over every node."""
        fields = {
            "evictions": b"evictions",
            "expired": b"expired_unfetched",
            "hits": b"get_hits",
            "misses": b"get_misses",
        }
        totals = dict.fromkeys(fields, 0.0)
        with self._command():
            for node in self._nodes:
                with self._on(node, "stats") as client:
                    stats = client.stats()
                for name, stat in fields.items():
                    raw = stats.get(stat, stats.get(stat.decode(), 0))
                    with suppress(TypeError, ValueError):  # a stat this server does not keep
                        totals[name] += float(raw)
        return totals
