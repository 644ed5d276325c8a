"""Redis backends (redis-py): one server (``redis://``, ``rediss://``, ``unix://``) or a cluster.

Both backends move bytes only; the ``Cache`` above them serializes, counts and
falls open. What they add is the Redis side of the contract:

- every command has a **deadline** (``socket_timeout``, 250 ms by default) for
  the whole command: taking a connection, connecting, the handshake, every
  write and every read of the answer (on a cluster also discovery and
  redirects). A server that trickles its answer a byte at a time cannot hold
  a caller longer than that. redis-py's retries are off (``Retry(NoBackoff(),
  0)``); any retry asked for runs inside the same deadline;
- a server that cannot be reached or does not answer in time raises
  ``BackendUnavailableError``; a server that answered but refused the command
  (out of memory, ``ERR ...``, an ACL denial, a bad argument) raises
  ``BackendRejectedError``; both with the cause chained. A value over
  ``max_value_size`` raises ``ValueTooLargeError`` before anything is sent;
- a TTL of ``inf`` means no expiry, one over ``MAX_TTL`` is clamped to it, one
  ``<= 0`` (or NaN) expires the entry at once (it is deleted, never stored);
- ``get_many`` is one ``MGET`` and ``set_many`` one pipeline of ``SET PX``
  (on a cluster: one command per slot, sent as one pipeline per node);
- connection pools (a ``RedisCluster`` client for a cluster) are shared by
  every backend built from the same URL and options, disconnected when the
  last of them is closed, and never reused across ``fork()``: a child process
  opens its own connections. A client passed in is never closed;
- no message, ``repr`` or ``server_address`` carries a user name or password.

This module builds and shares the clients; the commands live in
``redis_commands``, the deadline-bound connections in ``redis_deadline`` and
the URL and option parsing in ``redis_url``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any, ClassVar
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.cluster import REDIS_ALLOWED_KEYS, ClusterNode, RedisCluster
from redis.retry import Retry

from ..errors import BackendUnavailableError, ConfigurationError
from .base import MISSING

# The `name as name` imports are re-exports: sentinel.py, aio/redis.py and tests import them here.
from .redis_commands import _CAS_LUA as _CAS_LUA
from .redis_commands import _ERRORS as _ERRORS
from .redis_commands import DEFAULT_MAX_VALUE_SIZE, DEFAULT_TIMEOUT, MAX_TTL, _secrets_of
from .redis_commands import _expiry as _expiry
from .redis_commands import _failure as _failure
from .redis_commands import _k as _k
from .redis_commands import _RedisCommon as _RedisCommon
from .redis_deadline import _DEADLINE, deadline_connection_class
from .redis_url import _COMMON_OPTIONS as _COMMON_OPTIONS
from .redis_url import _TCP_OPTIONS as _TCP_OPTIONS
from .redis_url import _TLS_OPTIONS as _TLS_OPTIONS
from .redis_url import DEFAULT_PORT as DEFAULT_PORT
from .redis_url import _cluster_nodes as _cluster_nodes
from .redis_url import _connection_kwargs as _connection_kwargs
from .redis_url import _credentials as _credentials
from .redis_url import _db_number as _db_number
from .redis_url import _host_port as _host_port
from .redis_url import _positive as _positive
from .redis_url import _split as _split
from .redis_url import _split_options as _split_options
from .redis_url import _whole as _whole

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_TTL",
    "RedisBackend",
    "RedisClusterBackend",
    "deadline_connection_class",
]


# ---------------------------------------------------------------- shared clients


class _Shared:
    """A pool or cluster client used by every backend built from one URL + options.

    ``get()`` builds a fresh one in a child process after ``fork()``: the
    parent's sockets (and locks another thread may have held) stay the parent's.
    """

    __slots__ = ("build", "lock", "pid", "refs", "resource")

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self.resource: Any = None
        self.pid = 0
        self.refs = 0
        self.lock = threading.Lock()

    def get(self) -> Any:
        """The shared resource of this process, built on first use."""
        resource = self.resource
        if resource is None or self.pid != os.getpid():
            with self.lock:
                if self.resource is None or self.pid != os.getpid():
                    self.resource = self.build()
                    self.pid = os.getpid()
                resource = self.resource
        return resource


_SHARED: dict[tuple[str, ...], _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    # a lock held by another thread at fork() would stay held forever in the child
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()
    for shared in _SHARED.values():
        shared.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _acquire(key: tuple[str, ...], build: Callable[[], Any]) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            shared = _SHARED[key] = _Shared(build)
        shared.refs += 1
        return shared


def _release(key: tuple[str, ...], shared: _Shared, dispose: Callable[[Any], None]) -> None:
    with _SHARED_LOCK:
        shared.refs -= 1
        if shared.refs > 0:
            return
        if _SHARED.get(key) is shared:
            del _SHARED[key]
    with shared.lock:
        resource, shared.resource = shared.resource, None
    if resource is not None and shared.pid == os.getpid():
        dispose(resource)


def _pool_key(kind: str, where: str, kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    return (kind, where, *(f"{k}={kwargs[k]!r}" for k in sorted(kwargs)))


def _retry(retries: int) -> Retry:
    # no backoff, and by default no retry: a dead server costs one deadline, not a storm
    return Retry(NoBackoff(), retries)


# ---------------------------------------------------------------- one server


class RedisBackend(_RedisCommon):
    """One Redis server: ``redis://[user:password@]host:port/db``, ``rediss://...``, ``unix://path?db=N``.

    ``socket_timeout`` is the deadline of each whole command (connecting
    included); ``connect_timeout`` bounds the TCP connect within it. Pass
    ``client=`` a ready ``redis.Redis`` to use it as it is (its timeouts and
    retries are then yours to set, and ``close()`` leaves it open).
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix")

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        db: int | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        max_connections: int | None = None,
        health_check_interval: int = 0,
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        **connection_options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisBackend needs exactly one of url= or client=")
        self.max_value_size = max_value_size
        self._closed = False
        self._shared: _Shared | None = None
        self._shared_key: tuple[str, ...] = ()
        if client is not None:
            if connection_options or db is not None:
                raise ConfigurationError("connection options cannot be combined with client=")
            self._client: Any = client
            return
        assert url is not None
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise ConfigurationError(f"RedisBackend cannot serve {scheme or 'scheme-less'} URLs")
        if parts.query:
            raise ConfigurationError("URL query options need RedisBackend.from_url(url)")
        username, password, hostpart = _credentials(parts.netloc)
        self._secrets = _secrets_of(username, password, connection_options)
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
        kwargs["health_check_interval"] = _whole("health_check_interval", health_check_interval, 0)
        if scheme == "unix":
            if hostpart:
                raise ConfigurationError("a unix:// URL names no host: unix:///path/to/redis.sock")
            if not parts.path.strip("/"):
                raise ConfigurationError("a unix:// URL needs the socket path")
            where: dict[str, Any] = {"path": unquote(parts.path)}
            number = 0 if db is None else _db_number(db, "db option")
            base: type[Any] = redis.UnixDomainSocketConnection
            self.server_address = f"unix://{where['path']}?db={number}"
        else:
            host, port = _host_port(hostpart)
            path = parts.path.strip("/")
            number = _db_number(path, "URL path") if path else 0
            if db is not None:
                if path and _db_number(db, "db option") != number:
                    raise ConfigurationError("the Redis URL names two databases (path and db=)")
                number = _db_number(db, "db option")
            where = {"host": host, "port": port}
            base = redis.SSLConnection if scheme == "rediss" else redis.Connection
            shown = f"[{host}]" if ":" in host else host
            self.server_address = f"{scheme}://{shown}:{port}/{number}"
        kwargs.update(where, db=number)
        if username:
            kwargs.setdefault("username", username)
        if password is not None:
            kwargs.setdefault("password", password)
        self._timeout = kwargs["socket_timeout"]
        key = _pool_key(scheme, "", {**kwargs, "retries": retries})
        connection_class = deadline_connection_class(base)

        def build() -> redis.ConnectionPool:
            return redis.ConnectionPool(
                connection_class=connection_class, retry=_retry(retries), **kwargs
            )

        self._shared = _acquire(key, build)
        self._shared_key = key
        self._client = redis.Redis(connection_pool=self._shared.get())

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Build from ``redis://``, ``rediss://`` or ``unix://``; keywords override the query."""
        parts, merged = _split_options(url, options)
        return cls(f"{parts.scheme}://{parts.netloc}{parts.path}", **merged)

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client in use."""
        return self._client

    @property
    def connection_pool(self) -> redis.ConnectionPool:
        """The (possibly shared) connection pool."""
        pool: redis.ConnectionPool = self._client.connection_pool
        return pool

    def get(self, key: str) -> Any:
        """Return the bytes under ``key`` (``GET``), or ``MISSING``."""
        # the hot path: _run's work inlined, no closure
        state = _DEADLINE
        outer = state.at
        if outer is None:
            state.at = monotonic() + self._timeout
        try:
            value = self._client.get(key.encode("utf-8", "surrogatepass"))
        except _ERRORS as exc:
            raise _failure("GET", exc, self._secrets) from exc
        finally:
            state.at = outer
        return MISSING if value is None else value

    def _mget(self, keys: list[bytes]) -> list[Any]:
        return list(self._client.mget(keys))

    def _infos(self) -> list[dict[str, Any]]:
        return [self._client.info("stats")]

    def close(self) -> None:
        """Release the shared pool; the last backend using it disconnects it."""
        if self._closed:
            return
        self._closed = True
        if self._shared is not None:
            _release(self._shared_key, self._shared, _disconnect_pool)

    def __repr__(self) -> str:
        kw = self.connection_pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host')}:{kw.get('port')}/{kw.get('db', 0)}"
        return f"RedisBackend({where})"


def _disconnect_pool(pool: redis.ConnectionPool) -> None:
    pool.disconnect()


# ---------------------------------------------------------------- cluster


class RedisClusterBackend(_RedisCommon):
    """A Redis Cluster: ``redis+cluster://[user:password@]host:port[,host:port...]``.

    ``rediss+cluster://`` connects with TLS.

    Multi-key commands are split per hash slot. The ``RedisCluster`` client is
    created on first use, so a backend can be built while the cluster is down;
    its discovery runs under the deadline of the command that needs it.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+cluster", "rediss+cluster")

    def __init__(
        self,
        url: str | None = None,
        *,
        client: RedisCluster | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        max_connections: int | None = None,
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        **connection_options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisClusterBackend needs exactly one of url= or client=")
        self.max_value_size = max_value_size
        self._closed = False
        self._given: RedisCluster | None = client
        self._shared: _Shared | None = None
        self._shared_key: tuple[str, ...] = ()
        if client is not None:
            if connection_options:
                raise ConfigurationError("connection options cannot be combined with client=")
            return
        assert url is not None
        parts = _split(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise ConfigurationError(
                f"RedisClusterBackend cannot serve {scheme or 'scheme-less'} URLs"
            )
        if parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError("Redis Cluster has only database 0")
        if parts.query:
            raise ConfigurationError("URL query options need RedisClusterBackend.from_url(url)")
        username, password, hosts = _credentials(parts.netloc)
        self._secrets = _secrets_of(username, password, connection_options)
        tls = scheme == "rediss+cluster"
        allowed = (_COMMON_OPTIONS | _TCP_OPTIONS | (_TLS_OPTIONS if tls else frozenset())) & set(
            REDIS_ALLOWED_KEYS
        )
        kwargs = _connection_kwargs(
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            max_connections=max_connections,
            max_value_size=max_value_size,
            options=connection_options,
            allowed=allowed,
        )
        nodes = _cluster_nodes(hosts)
        if username:
            kwargs.setdefault("username", username)
        if password is not None:
            kwargs.setdefault("password", password)
        kwargs["connection_class"] = deadline_connection_class(
            redis.SSLConnection if tls else redis.Connection
        )
        self._kwargs = kwargs
        self._timeout = kwargs["socket_timeout"]
        where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
        self._where = where
        self.server_address = f"{scheme}://{where}"
        key = _pool_key("cluster", where, {**kwargs, "retries": retries})
        first, rest = nodes[0], nodes[1:]

        def build() -> RedisCluster:
            # url= is the only way redis-py hands connection_class to the node pools;
            # the URL carries no credentials (they are keywords) and no TLS (the class does)
            host = f"[{first[0]}]" if ":" in first[0] else first[0]
            return RedisCluster(
                url=f"redis://{host}:{first[1]}",
                startup_nodes=[ClusterNode(h, p) for h, p in rest],  # type: ignore[no-untyped-call]
                retry=_retry(retries),
                **kwargs,
            )

        self._shared = _acquire(key, build)
        self._shared_key = key

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisClusterBackend:
        """Build from ``redis+cluster://host:port[,host:port...]``; keywords override the query."""
        parts, merged = _split_options(url, options)
        db = merged.pop("db", 0)
        if _db_number(db, "db option") != 0:
            raise ConfigurationError("Redis Cluster has only database 0")
        return cls(f"{parts.scheme}://{parts.netloc}{parts.path}", **merged)

    @property
    def client(self) -> Any:
        """The ``RedisCluster`` client of this process (connected to the cluster on first use)."""
        if self._given is not None:
            return self._given
        shared = self._shared
        if shared is None or self._closed:
            raise BackendUnavailableError("RedisClusterBackend is closed")
        resource = shared.resource
        if resource is None or shared.pid != os.getpid():
            # Discovery (several round trips to the startup nodes) gets a deadline of its
            # own; the command that needed it then starts a fresh one: at most twice the
            # deadline in all, once per process. redis-py errors are translated by _run.
            state = _DEADLINE
            running = state.at is not None
            state.at = monotonic() + self._timeout
            try:
                resource = shared.get()
            finally:
                state.at = monotonic() + self._timeout if running else None
        return resource

    def _mget(self, keys: list[bytes]) -> list[Any]:
        # one MGET per slot, sent as one pipeline batch per node
        return list(self.client.mget_nonatomic(keys))

    def _infos(self) -> list[dict[str, Any]]:
        answer = self.client.info("stats", target_nodes=RedisCluster.PRIMARIES)
        if "keyspace_hits" in answer:  # a single master answers with a plain dict
            return [answer]
        return list(answer.values())

    def close(self) -> None:
        """Release the shared cluster client; the last backend using it closes it."""
        if self._closed:
            return
        self._closed = True
        if self._shared is not None:
            _release(self._shared_key, self._shared, _close_cluster)

    def __repr__(self) -> str:
        where = getattr(self, "_where", "client")
        return f"RedisClusterBackend({where})"


def _close_cluster(client: RedisCluster) -> None:
    client.close()
