"""Async Redis backends (``redis.asyncio``): one server or a cluster, byte-compatible with sync.

The same URLs, options and validation as ``RedisBackend`` and
``RedisClusterBackend`` (their parsers are reused), the same key encoding,
expiry rules, compare-and-set Lua script and error translation, so a sync and
an async backend on one server read each other's entries and leases.

- every command runs under one **deadline** (``socket_timeout``, 250 ms by
  default) for the whole command, taking a connection and connecting included
  (on a cluster also discovery and redirects); redis-py's retries are off;
- the deadline cancels the command's task; redis-py then drops the connection
  (its answer may still be on the way), so no later command reads it;
- connection pools belong to one event loop: each backend keeps one client per
  running loop (built on first use there), so a backend used from several
  loops (e.g. one ``asyncio.run`` per test) never hands a connection across;
  ``aclose()`` disconnects the running loop's pool, the others are
  disconnected when their loops shut down (``asyncio.run`` does that).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote

import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from ...errors import ConfigurationError
from ..base import MISSING, AsyncBackend
from ..redis import (
    _CAS_LUA,
    _COMMON_OPTIONS,
    _ERRORS,
    _TCP_OPTIONS,
    _TLS_OPTIONS,
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_TIMEOUT,
    _cluster_nodes,
    _connection_kwargs,
    _credentials,
    _db_number,
    _expiry,
    _failure,
    _host_port,
    _k,
    _RedisCommon,
    _split,
    _split_options,
    _whole,
)
from ._loops import Deadline, PerLoop

__all__ = ["AsyncRedisBackend", "AsyncRedisClusterBackend"]

_T = TypeVar("_T")

_CAS_SHA = hashlib.sha1(_CAS_LUA.encode(), usedforsecurity=False).hexdigest()  # its name in Redis


def _accepted(*functions: Callable[..., Any]) -> frozenset[str]:
    """Keyword names the given redis.asyncio constructors accept."""
    names: set[str] = set()
    for function in functions:
        names |= set(inspect.signature(function).parameters)
    return frozenset(names)


# what redis.asyncio takes of the sync backends' options (it has no OCSP checks)
_ASYNC_CONNECTION = _accepted(aredis.SSLConnection.__init__, aredis.Connection.__init__) | {
    "socket_keepalive",
    "socket_keepalive_options",
}
_ASYNC_CLUSTER = _accepted(RedisCluster.__init__)


def _check_async(options: Mapping[str, Any], accepted: frozenset[str]) -> None:
    missing = sorted(set(options) - accepted)
    if missing:
        raise ConfigurationError(
            f"Redis options not supported by the asyncio driver: {', '.join(missing)}"
        )


class _AsyncRedisCommon(AsyncBackend):
    """Commands that read the same on one server and on a cluster, each under one deadline."""

    max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE
    _timeout: float = DEFAULT_TIMEOUT
    _secrets: tuple[str, ...] = ()

    def _data(self, key: str, value: Any) -> bytes | bytearray | memoryview:
        """Check a value before it is sent: the sync backends' bytes-only and size checks."""
        return _RedisCommon._data(self, key, value)  # type: ignore[arg-type]

    def _build(self) -> Any:
        raise NotImplementedError

    async def _dispose(self, client: Any) -> None:
        raise NotImplementedError

    def _init_clients(self) -> None:
        self._clients: PerLoop[Any] = PerLoop(type(self).__name__, self._build, self._dispose)
        self._client = self._clients.get

    async def _ready(self) -> Any:
        """This loop's client, ready for a command (a cluster client discovers first)."""
        return self._client()

    async def _run(self, command: str, call: Callable[[Any], Awaitable[_T]]) -> _T:
        """Await ``call(client)`` under this command's deadline; translate redis-py's errors."""
        try:
            client = await self._ready()
            with Deadline(self._timeout):
                return await call(client)
        except _ERRORS as exc:
            raise _failure(command, exc, self._secrets) from exc

    async def get(self, key: str) -> Any:
        """Return the bytes under ``key`` (``GET``), or ``MISSING``."""
        try:
            client = await self._ready()
            with Deadline(self._timeout):
                value = await client.get(key.encode("utf-8", "surrogatepass"))
        except _ERRORS as exc:
            raise _failure("GET", exc, self._secrets) from exc
        return MISSING if value is None else value

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` (``SET PX``); ``None``/``inf`` never expire, ``<= 0`` deletes."""
        data = self._data(key, value)
        px = _expiry(ttl)
        if px == 0:
            await self._run("DEL", lambda c: c.delete(_k(key)))
        else:
            await self._run("SET", lambda c: c.set(_k(key), data, px=px))

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent (``SET NX PX``); return whether stored."""
        data = self._data(key, value)
        px = _expiry(ttl)
        if px == 0:
            # an already expired entry is "stored" only in the sense that the key was free
            return not await self._run("EXISTS", lambda c: c.exists(_k(key)))
        return bool(await self._run("SET NX", lambda c: c.set(_k(key), data, nx=True, px=px)))

    async def delete(self, key: str) -> bool:
        """Remove ``key`` (``DEL``); return whether it was present."""
        return bool(await self._run("DEL", lambda c: c.delete(_k(key))))

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` with one ``DEL`` (one per slot on a cluster); return how many existed."""
        encoded = [k.encode("utf-8", "surrogatepass") for k in keys]
        if not encoded:
            return 0
        return int(await self._run("DEL", lambda c: c.delete(*encoded)))

    async def _mget(self, client: Any, keys: list[bytes]) -> list[Any]:
        raise NotImplementedError

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: bytes}`` present: one ``MGET`` (one per slot on a cluster)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        encoded = [k.encode("utf-8", "surrogatepass") for k in keys]
        values = await self._run("MGET", lambda c: self._mget(c, encoded))
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item with one pipeline of ``SET PX`` (one batch per node on a cluster)."""
        items = [(_k(k), self._data(k, v)) for k, v in mapping.items()]
        if not items:
            return
        px = _expiry(ttl)
        if px == 0:
            await self.delete_many(mapping)
            return

        async def send(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for k, data in items:
                pipe.set(k, data, px=px)
            await pipe.execute()

        await self._run("SET (pipeline)", send)

    # -- optional capabilities

    async def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds exactly ``expected`` (the sync backends' Lua)."""
        old = self._data(key, expected)
        data = self._data(key, value)
        px = _expiry(ttl)
        arg = "" if px is None else str(px)
        args = (_k(key), old, data, arg)

        async def run(client: Any) -> Any:
            try:
                return await client.evalsha(_CAS_SHA, 1, *args)
            except NoScriptError:  # first use on this server: send the script itself once
                return await client.eval(_CAS_LUA, 1, *args)

        return bool(await self._run("compare-and-set script", run))

    async def _infos(self, client: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def server_stats(self) -> dict[str, float]:
        """Return server-wide ``evictions``, ``expired``, ``hits``, ``misses`` (sum of masters)."""
        infos = await self._run("INFO stats", self._infos)
        fields = {
            "evictions": "evicted_keys",
            "expired": "expired_keys",
            "hits": "keyspace_hits",
            "misses": "keyspace_misses",
        }
        return {
            name: float(sum(float(info.get(field, 0)) for info in infos))
            for name, field in fields.items()
        }

    async def aclose(self) -> None:
        """Disconnect the running loop's connections; the backend must not be used afterwards.

        Pools opened on other event loops are disconnected when those loops shut down.
        """
        await self._clients.aclose()


def _retry() -> Retry:
    # no backoff and no retry: a dead server costs one deadline, not a storm
    return Retry(NoBackoff(), 0)


class AsyncRedisBackend(_AsyncRedisCommon):
    """One Redis server over ``redis.asyncio``: ``redis://``, ``rediss://``, ``unix://`` URLs.

    ``socket_timeout`` is the deadline of each whole command (connecting
    included); ``connect_timeout`` bounds the TCP connect within it.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix")

    def __init__(
        self,
        url: str,
        *,
        db: int | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        max_connections: int | None = None,
        health_check_interval: int = 0,
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        **connection_options: Any,
    ) -> None:
        self.max_value_size = max_value_size
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise ConfigurationError(
                f"AsyncRedisBackend cannot serve {scheme or 'scheme-less'} URLs"
            )
        if parts.query:
            raise ConfigurationError("URL query options need AsyncRedisBackend.from_url(url)")
        username, password, hostpart = _credentials(parts.netloc)
        self._secrets = tuple(s for s in (password, connection_options.get("password")) if s)
        allowed = _COMMON_OPTIONS | (_TLS_OPTIONS if scheme == "rediss" else frozenset())
        if scheme != "unix":
            allowed |= _TCP_OPTIONS
        kwargs = _connection_kwargs(
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            max_connections=max_connections,
            max_value_size=max_value_size,
            options=connection_options,
            allowed=allowed,
        )
        if retries:
            raise ConfigurationError("the asyncio Redis backends do not retry (retries=0)")
        _check_async(connection_options, _ASYNC_CONNECTION)
        kwargs["health_check_interval"] = _whole("health_check_interval", health_check_interval, 0)
        if scheme == "unix":
            if hostpart:
                raise ConfigurationError("a unix:// URL names no host: unix:///path/to/redis.sock")
            if not parts.path.strip("/"):
                raise ConfigurationError("a unix:// URL needs the socket path")
            path = unquote(parts.path)
            number = 0 if db is None else _db_number(db, "db option")
            kwargs["path"] = path
            kwargs["connection_class"] = aredis.UnixDomainSocketConnection
            kwargs.pop("socket_keepalive", None)
            self.server_address = f"unix://{path}?db={number}"
        else:
            host, port = _host_port(hostpart)
            path_db = parts.path.strip("/")
            number = _db_number(path_db, "URL path") if path_db else 0
            if db is not None:
                if path_db and _db_number(db, "db option") != number:
                    raise ConfigurationError("the Redis URL names two databases (path and db=)")
                number = _db_number(db, "db option")
            kwargs.update(host=host, port=port)
            kwargs["connection_class"] = (
                aredis.SSLConnection if scheme == "rediss" else aredis.Connection
            )
            shown = f"[{host}]" if ":" in host else host
            self.server_address = f"{scheme}://{shown}:{port}/{number}"
        kwargs["db"] = number
        if username:
            kwargs.setdefault("username", username)
        if password is not None:
            kwargs.setdefault("password", password)
        self._kwargs = kwargs
        self._timeout = kwargs.pop("socket_timeout")
        self._init_clients()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncRedisBackend:
        """Build from ``redis://``, ``rediss://`` or ``unix://``; keywords override the query."""
        parts, merged = _split_options(url, options)
        return cls(f"{parts.scheme}://{parts.netloc}{parts.path}", **merged)

    def _build(self) -> aredis.Redis:
        # socket_timeout=None: the command's deadline (a Deadline around the whole
        # command) is the only read and write timeout; with one set, redis.asyncio would
        # also wrap every send in asyncio.wait_for (a task) and every read in a timer
        pool = aredis.ConnectionPool(retry=_retry(), socket_timeout=None, **self._kwargs)
        return aredis.Redis(connection_pool=pool)

    async def _mget(self, client: Any, keys: list[bytes]) -> list[Any]:
        return list(await client.mget(keys))

    async def _infos(self, client: Any) -> list[dict[str, Any]]:
        return [await client.info("stats")]

    async def _dispose(self, client: Any) -> None:
        await client.connection_pool.disconnect()

    def __repr__(self) -> str:
        return f"AsyncRedisBackend({self.server_address})"


class AsyncRedisClusterBackend(_AsyncRedisCommon):
    """A Redis Cluster over ``redis.asyncio``: ``redis+cluster://host:port[,host:port...]``.

    ``rediss+cluster://`` connects with TLS. The ``RedisCluster`` client of a
    loop discovers the cluster under the deadline of its first command.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+cluster", "rediss+cluster")

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        max_connections: int | None = None,
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        **connection_options: Any,
    ) -> None:
        self.max_value_size = max_value_size
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise ConfigurationError(
                f"AsyncRedisClusterBackend cannot serve {scheme or 'scheme-less'} URLs"
            )
        if parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError("Redis Cluster has only database 0")
        if parts.query:
            raise ConfigurationError(
                "URL query options need AsyncRedisClusterBackend.from_url(url)"
            )
        username, password, hosts = _credentials(parts.netloc)
        self._secrets = tuple(s for s in (password, connection_options.get("password")) if s)
        tls = scheme == "rediss+cluster"
        allowed = _COMMON_OPTIONS | _TCP_OPTIONS | (_TLS_OPTIONS if tls else frozenset())
        kwargs = _connection_kwargs(
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            max_connections=max_connections,
            max_value_size=max_value_size,
            options=connection_options,
            allowed=allowed,
        )
        if retries:
            raise ConfigurationError("the asyncio Redis backends do not retry (retries=0)")
        _check_async(connection_options, _ASYNC_CLUSTER)
        self._nodes = _cluster_nodes(hosts)
        if username:
            kwargs.setdefault("username", username)
        if password is not None:
            kwargs.setdefault("password", password)
        if tls:
            kwargs["ssl"] = True
        self._kwargs = kwargs
        self._timeout = kwargs.pop("socket_timeout")
        where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self._nodes)
        self.server_address = f"{scheme}://{where}"
        self._init_clients()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncRedisClusterBackend:
        """Build from ``redis+cluster://host:port[,host:port...]``; keywords override the query."""
        parts, merged = _split_options(url, options)
        db = merged.pop("db", 0)
        if _db_number(db, "db option") != 0:
            raise ConfigurationError("Redis Cluster has only database 0")
        return cls(f"{parts.scheme}://{parts.netloc}{parts.path}", **merged)

    async def _ready(self) -> Any:
        """This loop's client; the first command of a loop discovers the cluster first.

        Discovery (connecting to a node, ``CLUSTER SLOTS``, then to each master)
        runs under a deadline of its own, as in the sync driver: the first command
        of a loop (a forked child's too) may take up to twice the deadline, never more.
        """
        client = self._client()
        if client._initialize:
            with Deadline(self._timeout):
                await client.initialize()
        return client

    def _build(self) -> RedisCluster:
        # socket_timeout=None: the command's deadline is the only one (see AsyncRedisBackend)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self._nodes],
            retry=_retry(),
            socket_timeout=None,
            **self._kwargs,
        )

    async def _mget(self, client: Any, keys: list[bytes]) -> list[Any]:
        # one MGET per slot, sent as one pipeline batch per node
        return list(await client.mget_nonatomic(keys))

    async def _infos(self, client: Any) -> list[dict[str, Any]]:
        answer = await client.info("stats", target_nodes=RedisCluster.PRIMARIES)
        if "keyspace_hits" in answer:  # a single master answers with a plain dict
            return [answer]
        return list(answer.values())

    async def _dispose(self, client: Any) -> None:
        await client.aclose()

    def __repr__(self) -> str:
        return f"AsyncRedisClusterBackend({self.server_address})"
