"""Async memcached backend: a small asyncio text-protocol client, byte-compatible with the sync one.

It speaks only the commands cachekit needs (``get``, ``gets``, ``set``,
``add``, ``cas``, ``delete``, ``stats``) over asyncio streams, because the
maintained asyncio clients fall short of the contract (docs/asyncio-backends.md
has the measurements): aiomcache returns a connection whose command was
cancelled to its pool, so after a timeout the next command can read the
previous one's answer; emcache places keys on several nodes with its own ring,
not pymemcache's, so a sync and an async pool would look for a key on
different nodes.

What it shares with ``MemcachedBackend``: the URL form and options, the key
encoding (``memcached_key``), the expiry rule (``memcached_expire``), the
value checks (bytes only, ``max_value_size`` checked before sending), flags 0
on every item (what pymemcache writes for bytes), the rendezvous ring of
pymemcache's ``HashClient`` (nodes named ``host:port``), the per-node cooldown
of a pool, and the error translation (``SERVER_ERROR``/``CLIENT_ERROR`` ->
``BackendRejectedError``, anything else -> ``BackendUnavailableError``).

Every command runs under one deadline (``timeout``, connect included): a
timer fails the command's pending answer and aborts its connection. A
connection whose command did not finish (deadline, error, cancellation) is
aborted, never reused, so an answer left on the wire cannot be read by the
next command; bytes that arrive when no command is waiting also retire it.
Connections belong to the event loop that opened them: each loop gets its own
idle lists, closed by ``aclose()`` or when that loop shuts down.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from typing import Any, ClassVar, TypeVar

from pymemcache.client.rendezvous import RendezvousHash

from ...errors import (
    BackendRejectedError,
    BackendUnavailableError,
    CacheError,
    ConfigurationError,
    ValueTooLargeError,
)
from ..base import MISSING, AsyncBackend
from ..memcached import (
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    ROUTE_CACHE_SIZE,
    MemcachedBackend,
    ServerValueTooLargeError,
    _as_bytes,
    _check_seconds,
    _node_name,
    memcached_expire,
    memcached_key,
)
from ..memcached_nodes import NodeCooldown
from ._loops import Deadline, PerLoop
from ._protocol import (
    FAILURES,
    ONE_LINE,
    Connection,
    Refused,
    answer_lines,
    close_all,
    many_values,
    one_value,
    stats_lines,
    store_command,
    values_with_cas,
)

__all__ = ["AsyncMemcachedBackend"]

log = logging.getLogger("cachekit.memcached")

_T = TypeVar("_T")


class AsyncMemcachedBackend(AsyncBackend):
    """Memcached over asyncio: one node, or a pool on pymemcache's rendezvous ring.

    Build it from a URL (``memcached://h1:11211,h2:11211?timeout=0.25``) or a
    list of ``(host, port)``. Options as ``MemcachedBackend``: ``timeout``
    (the deadline of a whole command), ``connect_timeout``, ``max_value_size``,
    ``pool_size`` (idle connections kept per node and loop), ``pool_idle_timeout``,
    ``tls``/``tls_context``, ``node_cooldown``.
    """

    schemes: ClassVar[tuple[str, ...]] = ("memcached",)

    def __init__(
        self,
        servers: Sequence[tuple[str, int]] = (("127.0.0.1", DEFAULT_PORT),),
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
        self.connect_timeout = _check_seconds(
            "connect_timeout",
            self.timeout if connect_timeout is None else connect_timeout,
            0,
            60,
            low_open=True,
        )
        self.pool_idle_timeout = _check_seconds(
            "pool_idle_timeout", pool_idle_timeout, 0, float("inf"), low_open=False
        )
        self.node_cooldown = _check_seconds("node_cooldown", node_cooldown, 0, 3600, low_open=False)
        for name, count in (("max_value_size", max_value_size), ("pool_size", pool_size)):
            if count is None and name == "pool_size":
                continue
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ConfigurationError(f"memcached {name} must be an integer >= 1, got {count!r}")
        if not no_delay:
            raise ConfigurationError("the asyncio memcached backend always sets TCP_NODELAY")
        self.max_value_size = max_value_size
        self._limit = max_value_size
        self._pool_size = 64 if pool_size is None else pool_size
        if tls and tls_context is None:
            tls_context = ssl.create_default_context()  # verifies certificates and host names
        self.tls_context = tls_context
        addresses = [(str(h), int(p)) for h, p in servers]
        if not addresses:
            raise ConfigurationError("AsyncMemcachedBackend needs at least one server")
        self._addresses = {_node_name(a): a for a in addresses}
        self.server_address = "memcached://" + ",".join(self._addresses)
        names = list(self._addresses)
        self._single: str | None = names[0] if len(names) == 1 else None
        self._route: Callable[[str], str] = functools.lru_cache(ROUTE_CACHE_SIZE)(
            RendezvousHash(names).get_node  # the ring of pymemcache's HashClient
        )
        # the sync driver's per-node cooldown (pools only: one node has the breaker)
        self._down = NodeCooldown(0.0 if self._single is not None else self.node_cooldown)
        # node name -> idle connections, one such table per event loop
        self._pools: PerLoop[dict[str, collections.deque[Connection]]] = PerLoop(
            "AsyncMemcachedBackend",
            lambda: {name: collections.deque() for name in self._addresses},
            close_all,
        )
        self._idle = self._pools.get

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncMemcachedBackend:
        """Build from ``memcached://host:port[,host:port...]?timeout=0.25&max_value_size=...``."""
        # the sync backend's URL checks and query options; it ends with cls(servers, **options)
        build: Any = MemcachedBackend.from_url.__func__  # type: ignore[attr-defined]
        backend: AsyncMemcachedBackend = build(cls, url, **options)
        return backend

    def __repr__(self) -> str:
        return f"AsyncMemcachedBackend({', '.join(self._addresses)})"

    @property
    def nodes(self) -> tuple[str, ...]:
        """The ``host:port`` names of the nodes, in ring order."""
        return tuple(self._addresses)

    def node_for(self, key: str) -> str:
        """Return the node (``host:port``) that holds ``key`` (a cachekit key, before encoding)."""
        return self._node_of(memcached_key(key))

    def _node_of(self, mkey: str) -> str:
        single = self._single
        return single if single is not None else self._route(mkey)

    # ------------------------------------------------------------ connections

    async def _connect(self, node: str, budget: float) -> Connection:
        host, port = self._addresses[node]
        context = self.tls_context
        with Deadline(min(budget, self.connect_timeout)):
            _, conn = await asyncio.get_running_loop().create_connection(
                Connection, host, port, ssl=context, server_hostname=host if context else None
            )
        return conn

    def _take(self, idle: collections.deque[Connection]) -> Connection | None:
        while idle:
            conn = idle.pop()
            if self.pool_idle_timeout and time.monotonic() - conn.idle_since > (
                self.pool_idle_timeout
            ):
                conn.abort()
                continue
            return conn
        return None

    def _give_back(self, idle: collections.deque[Connection], conn: Connection) -> None:
        if len(idle) < self._pool_size and not self._pools.closed:
            if self.pool_idle_timeout:
                conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()

    async def _on(
        self,
        node: str,
        op: str,
        call: Callable[[Connection], Awaitable[_T]],
        size: int = 0,
        key: str | None = None,
    ) -> _T:
        """Run ``call`` on a connection to ``node`` under one deadline; translate failures."""
        if self._down:
            self._down.check(node)
        idle = self._idle()[node]
        conn = self._take(idle)
        timer = None
        try:
            if conn is None:
                loop = asyncio.get_running_loop()
                at = loop.time() + self.timeout
                conn = await self._connect(node, self.timeout)
                timer = loop.call_at(at, conn.expire)  # connecting used part of the deadline
            else:
                # the deadline ends the command through its connection (the timer fails
                # the pending answer): cheaper than cancelling the task (asyncio.timeout)
                timer = conn.loop.call_later(self.timeout, conn.expire)
            result = await call(conn)
        except BaseException as exc:
            if conn is not None:
                conn.abort()  # an answer may still be on its way: never reuse it
            if isinstance(exc, FAILURES):
                raise self._failure(node, op, exc, size, key) from exc
            raise
        finally:
            if timer is not None:
                timer.cancel()
        self._give_back(idle, conn)
        if self._down:
            self._down.answered(node)
        return result

    def _failure(
        self, node: str, op: str, exc: BaseException, size: int = 0, key: str | None = None
    ) -> CacheError:
        """The cachekit error for ``exc``; a node that did not answer is marked down."""
        if isinstance(exc, Refused):
            if "too large" in str(exc):
                return ServerValueTooLargeError(size, self._limit, key)
            return BackendRejectedError(f"memcached {node} refused {op}: {exc}")
        self._down.mark(node)
        return BackendUnavailableError(
            f"memcached {node} failed during {op}: {type(exc).__name__}: {exc}"
        )

    def _check_size(self, key: str, data: bytes) -> None:
        if len(data) > self._limit:
            raise ValueTooLargeError(len(data), self._limit, key)

    def _group(self, mkeys: Iterable[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for mkey in mkeys:
            groups.setdefault(self._node_of(mkey), []).append(mkey)
        return groups

    async def _each_node(
        self, groups: Mapping[str, _T], op: str, call: Callable[[str, _T], Awaitable[Any]]
    ) -> list[Any]:
        """``call(node, group)`` for every node at once; each result or the error it raised."""
        if len(groups) == 1:
            node, group = next(iter(groups.items()))
            try:
                return [await call(node, group)]
            except CacheError as exc:
                return [exc]
        results = await asyncio.gather(
            *(call(node, group) for node, group in groups.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, CacheError):
                raise result
        return list(results)

    # ------------------------------------------------------------ the contract

    async def get(self, key: str) -> Any:
        """Return the stored bytes, or ``MISSING``."""
        mkey = memcached_key(key)
        node = self._node_of(mkey)
        command = b"get " + mkey.encode() + b"\r\n"
        value = await self._on(node, "get", lambda conn: conn.request(command, one_value))
        return MISSING if value is None else value

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: bytes}`` for the present keys: one ``get k1 k2 ...`` per node, at once.

        In a pool, keys on a failed node are left out (misses); it raises only
        when every node asked has failed.
        """
        by_mkey = {memcached_key(k): k for k in keys}
        if not by_mkey:
            return {}
        single = self._single
        if single is not None:  # one node: no grouping, no tasks
            command = b"get " + " ".join(by_mkey).encode() + b"\r\n"
            found = await self._on(
                single, "get_many", lambda conn: conn.request(command, many_values)
            )
            return {by_mkey[m.decode()]: data for m, (data, _) in found.items()}

        async def fetch(node: str, mkeys: list[str]) -> dict[bytes, tuple[bytes, int]]:
            command = b"get " + " ".join(mkeys).encode() + b"\r\n"
            found: dict[bytes, tuple[bytes, int]] = await self._on(
                node, "get_many", lambda conn: conn.request(command, many_values)
            )
            return found

        out: dict[str, Any] = {}
        errors: list[CacheError] = []
        for result in await self._each_node(self._group(by_mkey), "get_many", fetch):
            if isinstance(result, CacheError):
                errors.append(result)
                continue
            for mkey, (data, _) in result.items():
                out[by_mkey[mkey.decode()]] = data
        if errors and len(errors) == len(self._group(by_mkey)):
            raise errors[0]
        return out

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds; raises ``ValueTooLargeError`` before sending."""
        data = _as_bytes(key, value)
        self._check_size(key, data)
        expire = memcached_expire(ttl)
        if expire is None:
            await self.delete(key)
            return
        mkey = memcached_key(key)
        command = store_command(b"set", mkey.encode(), data, expire)
        answer = await self._on(
            self._node_of(mkey),
            "set",
            lambda conn: conn.request(command, ONE_LINE),
            len(data),
            key,
        )
        if answer != [b"STORED"]:
            raise BackendRejectedError(f"memcached did not store {key!r} ({answer[0]!r})")

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item with one pipelined round trip per node; sizes are checked first."""
        items = {k: _as_bytes(k, v) for k, v in mapping.items()}
        for key, data in items.items():
            self._check_size(key, data)
        expire = memcached_expire(ttl)
        if expire is None:
            await self.delete_many(items)
            return
        if not items:
            return
        values = {memcached_key(k): v for k, v in items.items()}

        async def store(node: str, mkeys: list[str]) -> None:
            commands = [store_command(b"set", m.encode(), values[m], expire) for m in mkeys]
            answers = await self._on(
                node,
                "set_many",
                lambda conn: conn.request(b"".join(commands), answer_lines(len(mkeys))),
            )
            failed = sum(1 for a in answers if a != b"STORED")
            if failed:
                raise BackendRejectedError(
                    f"memcached {node} did not store {failed} of {len(mkeys)} keys"
                )

        for result in await self._each_node(self._group(values), "set_many", store):
            if isinstance(result, CacheError):  # every node was tried first
                raise result

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was stored."""
        data = _as_bytes(key, value)
        self._check_size(key, data)
        expire = memcached_expire(ttl)
        if expire is None:  # an entry that expires at once: stored only in name, as in memory
            return await self.get(key) is MISSING
        mkey = memcached_key(key)
        command = store_command(b"add", mkey.encode(), data, expire)
        answer = await self._on(
            self._node_of(mkey),
            "add",
            lambda conn: conn.request(command, ONE_LINE),
            len(data),
            key,
        )
        return bool(answer == [b"STORED"])

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""
        mkey = memcached_key(key)
        command = b"delete " + mkey.encode() + b"\r\n"
        answer = await self._on(
            self._node_of(mkey), "delete", lambda conn: conn.request(command, ONE_LINE)
        )
        return bool(answer == [b"DELETED"])

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` with one pipelined round trip per node; return how many were present.

        Every node is tried; if one failed, its error is raised afterwards so
        the caller knows some invalidations did not land.
        """
        mkeys = list(dict.fromkeys(memcached_key(k) for k in keys))
        if not mkeys:
            return 0

        async def remove(node: str, group: list[str]) -> int:
            commands = [b"delete " + m.encode() + b"\r\n" for m in group]
            answers = await self._on(
                node,
                "delete_many",
                lambda conn: conn.request(b"".join(commands), answer_lines(len(group))),
            )
            return sum(1 for a in answers if a == b"DELETED")

        removed = 0
        error: CacheError | None = None
        for result in await self._each_node(self._group(mkeys), "delete_many", remove):
            if isinstance(result, CacheError):
                error = error or result
            else:
                removed += result
        if error is not None:
            raise error
        return removed

    async def aclose(self) -> None:
        """Close the running loop's connections; the backend must not be used afterwards.

        Connections opened on other event loops are closed when those loops shut down.
        """
        await self._pools.aclose()

    # ------------------------------------------------------------ capabilities

    async def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds exactly ``expected`` (``gets`` + ``cas``)."""
        data = _as_bytes(key, value)
        self._check_size(key, data)
        expire = memcached_expire(ttl)
        mkey = memcached_key(key)
        raw = mkey.encode()

        async def run(conn: Connection) -> bool:
            found = (await conn.request(b"gets " + raw + b"\r\n", values_with_cas)).get(raw)
            if found is None or found[0] != expected:
                return False
            # an immediately expiring value: a cas that stores it already expired
            exptime = -1 if expire is None else expire
            command = store_command(b"cas", raw, data, exptime, b" %d" % found[1])
            return bool(await conn.request(command, ONE_LINE) == [b"STORED"])

        return await self._on(self._node_of(mkey), "compare_and_set", run, len(data), key)

    async def server_stats(self) -> dict[str, float]:
        """Return ``evictions``, ``expired``, ``hits``, ``misses`` summed over every node."""
        fields = {
            "evictions": b"evictions",
            "expired": b"expired_unfetched",
            "hits": b"get_hits",
            "misses": b"get_misses",
        }

        totals = dict.fromkeys(fields, 0.0)
        for node in self._addresses:
            answer = await self._on(
                node, "stats", lambda conn: conn.request(b"stats\r\n", stats_lines)
            )
            for name, stat in fields.items():
                with suppress(ValueError):  # a stat this server does not keep
                    totals[name] += float(answer.get(stat, b"0"))
        return totals
