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
from typing import Any, ClassVar, Final, TypeVar

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
from . import PerLoop, command_deadline

__all__ = ["AsyncMemcachedBackend"]

log = logging.getLogger("cachekit.memcached")

_T = TypeVar("_T")


class _Refused(Exception):
    """memcached answered ``SERVER_ERROR`` or ``CLIENT_ERROR``."""


class _Garbled(Exception):
    """An answer that is not memcached's (e.g. ``ERROR``, or an unexpected line)."""


# what the network, a stalled server or a broken answer raise
_FAILURES = (OSError, EOFError, _Garbled, _Refused)

#: Returned by a parser while the buffer does not yet hold the whole answer.
_MORE: Any = object()

Parser = Callable[[bytearray], Any]


def _check(line: bytes) -> bytes:
    """Raise for an error line; return ``line`` otherwise."""
    if line.startswith((b"SERVER_ERROR", b"CLIENT_ERROR")):
        raise _Refused(line.rstrip(b"\r\n").decode("utf-8", "replace"))
    if line.startswith(b"ERROR"):
        raise _Garbled("memcached answered ERROR (not a memcached, or an unknown command)")
    return line


_ERROR_LINES: Final = (b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")


def _values(buf: bytearray, with_cas: bool) -> Any:
    """Parse ``VALUE`` blocks up to ``END``: ``{key: (data, cas unique or 0)}``, or ``_MORE``."""
    if not buf.endswith(b"END\r\n"):  # every whole answer ends so; parse only then
        if buf.startswith(_ERROR_LINES) and b"\r\n" in buf:
            _check(bytes(buf))
        return _MORE
    data = bytes(buf)  # one copy; slicing bytes then copies each value once
    pos, size_all = 0, len(data)
    found: dict[bytes, tuple[bytes, int]] = {}
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return _MORE
        if end - pos == 3 and data.startswith(b"END", pos):
            if end + 2 != size_all:  # (an END inside a value is skipped with the value)
                raise _Garbled("memcached sent bytes after END")
            return found
        line = data[pos:end]
        fields = _check(line).split()
        if len(fields) < (5 if with_cas else 4) or fields[0] != b"VALUE":
            raise _Garbled(f"unexpected memcached answer {line[:60]!r}")
        start = end + 2
        stop = start + int(fields[3])
        if stop + 2 > size_all:
            return _MORE
        if data[stop : stop + 2] != b"\r\n":
            raise _Garbled("a memcached value was not followed by CRLF")
        found[fields[1]] = (data[start:stop], int(fields[4]) if with_cas else 0)
        pos = stop + 2


def _many(buf: bytearray) -> Any:
    return _values(buf, False)


def _with_cas(buf: bytearray) -> Any:
    return _values(buf, True)


def _one(buf: bytearray) -> Any:
    """The answer to ``get`` of one key: its bytes, ``None``, or ``_MORE``."""
    if buf == b"END\r\n":  # a miss: the common short answer
        return None
    found = _values(buf, False)
    if found is _MORE:
        return _MORE
    if not found:
        return None
    if len(found) != 1:
        raise _Garbled("memcached sent more than one value for one key")
    return next(iter(found.values()))[0]


def _lines(count: int) -> Parser:
    """A parser for ``count`` one-line answers (a pipeline of storage or delete commands)."""

    def parse(buf: bytearray) -> Any:
        seen = buf.count(b"\r\n")
        if seen < count:
            if seen and buf.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
                _check(bytes(buf[: buf.find(b"\r\n")]))
            return _MORE
        if seen > count or not buf.endswith(b"\r\n"):
            raise _Garbled("memcached sent more answers than commands")
        return [_check(line) for line in bytes(buf).split(b"\r\n")[:count]]

    return parse


def _stats(buf: bytearray) -> Any:
    """``STAT name value`` lines up to ``END``: ``{name: value}``, or ``_MORE``."""
    if buf.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
        _check(bytes(buf))
    if not (buf == b"END\r\n" or buf.endswith(b"\r\nEND\r\n")):
        return _MORE
    out: dict[bytes, bytes] = {}
    for line in bytes(buf).split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"STAT":
            out[parts[1]] = parts[2]
    return out


class _Conn(asyncio.Protocol):
    """One connection; one command at a time, whose answer is parsed as its bytes arrive."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Any] | None = None
        self.parse: Parser = _many
        self.lost: BaseException | None = None
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: never reuse this
            self.lost = _Garbled("memcached sent an answer to no command")
            return
        try:
            result = self.parse(buf)
        except Exception as exc:  # a parse or error-line failure ends this command
            self.waiter = None
            waiter.set_exception(exc)
            return
        if result is not _MORE:
            self.waiter = None
            buf.clear()
            waiter.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or EOFError("memcached closed the connection")
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.lost)

    def request(self, command: bytes, parse: Parser) -> asyncio.Future[Any]:
        """Send ``command``; the future gets ``parse``'s result for the whole answer."""
        if self.lost is not None:
            raise self.lost
        assert self.transport is not None
        waiter = self.waiter = self.loop.create_future()
        self.parse = parse
        self.transport.write(command)
        return waiter

    def expire(self) -> None:
        """The command's deadline has passed: fail its answer and drop the connection."""
        error = TimeoutError("memcached command deadline passed")
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.lost = self.lost or error
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once (its state is unknown)."""
        self.lost = self.lost or EOFError("connection dropped")
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close an idle connection at once.

        Aborted rather than closed: an idle connection has nothing left to send,
        and a TLS close would first wait for the server's close_notify, which a
        loop that is shutting down does not wait for (the socket would leak).
        """
        self.abort()


async def _close_all(pools: dict[str, collections.deque[_Conn]]) -> None:
    """Close every idle connection of one loop's table."""
    for conns in pools.values():
        while conns:
            conns.pop().close()


_ONE_LINE: Final = _lines(1)


def _store(verb: bytes, mkey: bytes, data: bytes, exptime: int, extra: bytes = b"") -> bytes:
    return b"%s %s 0 %d %d%s\r\n%s\r\n" % (verb, mkey, exptime, len(data), extra, data)


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
        # node name -> monotonic time until which it is skipped (pools only)
        self._down: dict[str, float] = {}
        # node name -> idle connections, one such table per event loop
        self._pools: PerLoop[dict[str, collections.deque[_Conn]]] = PerLoop(
            "AsyncMemcachedBackend",
            lambda: {name: collections.deque() for name in self._addresses},
            _close_all,
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

    async def _connect(self, node: str, budget: float) -> _Conn:
        host, port = self._addresses[node]
        context = self.tls_context
        async with command_deadline(min(budget, self.connect_timeout)):
            _, conn = await asyncio.get_running_loop().create_connection(
                _Conn, host, port, ssl=context, server_hostname=host if context else None
            )
        return conn

    def _take(self, idle: collections.deque[_Conn]) -> _Conn | None:
        while idle:
            conn = idle.pop()
            if self.pool_idle_timeout and time.monotonic() - conn.idle_since > (
                self.pool_idle_timeout
            ):
                conn.abort()
                continue
            return conn
        return None

    def _give_back(self, idle: collections.deque[_Conn], conn: _Conn) -> None:
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
        call: Callable[[_Conn], Awaitable[_T]],
        size: int = 0,
        key: str | None = None,
    ) -> _T:
        """Run ``call`` on a connection to ``node`` under one deadline; translate failures."""
        if self._down:
            self._check_down(node)
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
            if isinstance(exc, _FAILURES):
                raise self._failure(node, op, exc, size, key) from exc
            raise
        finally:
            if timer is not None:
                timer.cancel()
        self._give_back(idle, conn)
        if self._down:
            self._down.pop(node, None)
        return result

    def _failure(
        self, node: str, op: str, exc: BaseException, size: int = 0, key: str | None = None
    ) -> CacheError:
        """The cachekit error for ``exc``; a node that did not answer is marked down."""
        if isinstance(exc, _Refused):
            if "too large" in str(exc):
                return ServerValueTooLargeError(size, self._limit, key)
            return BackendRejectedError(f"memcached {node} refused {op}: {exc}")
        self._mark_down(node)
        return BackendUnavailableError(
            f"memcached {node} failed during {op}: {type(exc).__name__}: {exc}"
        )

    def _check_down(self, node: str) -> None:
        until = self._down.get(node)
        if until is not None and time.monotonic() < until:
            raise BackendUnavailableError(
                f"memcached {node} failed recently; skipped for up to {self.node_cooldown} s"
            )

    def _mark_down(self, node: str) -> None:
        # one node: the cache's circuit breaker does this job; a pool needs it per node
        if self._single is not None or not self.node_cooldown:
            return
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
        value = await self._on(node, "get", lambda conn: conn.request(command, _one))
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
            found = await self._on(single, "get_many", lambda conn: conn.request(command, _many))
            return {by_mkey[m.decode()]: data for m, (data, _) in found.items()}

        async def fetch(node: str, mkeys: list[str]) -> dict[bytes, tuple[bytes, int]]:
            command = b"get " + " ".join(mkeys).encode() + b"\r\n"
            found: dict[bytes, tuple[bytes, int]] = await self._on(
                node, "get_many", lambda conn: conn.request(command, _many)
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
        command = _store(b"set", mkey.encode(), data, expire)
        answer = await self._on(
            self._node_of(mkey),
            "set",
            lambda conn: conn.request(command, _ONE_LINE),
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
            commands = [_store(b"set", m.encode(), values[m], expire) for m in mkeys]
            answers = await self._on(
                node, "set_many", lambda conn: conn.request(b"".join(commands), _lines(len(mkeys)))
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
        command = _store(b"add", mkey.encode(), data, expire)
        answer = await self._on(
            self._node_of(mkey),
            "add",
            lambda conn: conn.request(command, _ONE_LINE),
            len(data),
            key,
        )
        return bool(answer == [b"STORED"])

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""
        mkey = memcached_key(key)
        command = b"delete " + mkey.encode() + b"\r\n"
        answer = await self._on(
            self._node_of(mkey), "delete", lambda conn: conn.request(command, _ONE_LINE)
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
                lambda conn: conn.request(b"".join(commands), _lines(len(group))),
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

        async def run(conn: _Conn) -> bool:
            found = (await conn.request(b"gets " + raw + b"\r\n", _with_cas)).get(raw)
            if found is None or found[0] != expected:
                return False
            # an immediately expiring value: a cas that stores it already expired
            exptime = -1 if expire is None else expire
            command = _store(b"cas", raw, data, exptime, b" %d" % found[1])
            return bool(await conn.request(command, _ONE_LINE) == [b"STORED"])

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
            answer = await self._on(node, "stats", lambda conn: conn.request(b"stats\r\n", _stats))
            for name, stat in fields.items():
                with suppress(ValueError):  # a stat this server does not keep
                    totals[name] += float(answer.get(stat, b"0"))
        return totals
