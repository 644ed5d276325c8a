"""Redis backends (redis-py): one server (``redis://``, ``rediss://``, ``unix://``) or a cluster.

Both backends move bytes only; the ``Cache`` above them serializes, counts and
falls open. What they add is the Redis side of the contract:

- timeouts are always set (connect and read 250 ms by default) and redis-py's
  retries are off (``Retry(NoBackoff(), 0)``), so a dead or stalled server
  costs one timeout per call, never a retry storm;
- ``get_many`` is one ``MGET`` and ``set_many`` one pipeline of ``SET PX``
  (on a cluster: one command per slot, sent as one pipeline per node);
- every redis-py error is raised as ``BackendUnavailableError`` with the cause
  chained, and a value over ``max_value_size`` as ``ValueTooLargeError``
  before anything is sent;
- connection pools (a ``RedisCluster`` client for a cluster) are shared by
  every backend built from the same URL and options, and disconnected when
  the last of them is closed. A client passed in is never closed.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from ..errors import (
    BackendUnavailableError,
    ConfigurationError,
    SerializationError,
    ValueTooLargeError,
)
from .base import MISSING, Backend

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "DEFAULT_TIMEOUT", "RedisBackend", "RedisClusterBackend"]

#: Connect and read timeout in seconds unless configured otherwise.
DEFAULT_TIMEOUT = 0.25
#: Redis's own limit for a string value (``proto-max-bulk-len``).
DEFAULT_MAX_VALUE_SIZE = 512 * 1024 * 1024

# Everything redis-py raises for a server that is down, slow, full or confused.
_ERRORS = (RedisError, RedisClusterException, OSError)

# Compare-and-set: ARGV = expected, new value, PX in ms (-1: no expiry, 0: delete).
_CAS_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur ~= ARGV[1] then return 0 end
local px = tonumber(ARGV[3])
if px > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
elseif px < 0 then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# Query parameters we understand, with their types (keyword options need the same types).
_QUERY_TYPES: dict[str, Callable[[str], Any]] = {
    "socket_timeout": float,
    "connect_timeout": float,
    "socket_connect_timeout": float,
    "retries": int,
    "max_connections": int,
    "max_value_size": int,
    "health_check_interval": int,
    "db": int,
    "client_name": str,
    "protocol": int,
    "ssl_cert_reqs": str,
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": lambda v: v.lower() in ("1", "true", "yes", "on"),
}

# Extra keyword options handed to redis-py as they are (TLS files, client name, ...).
_PASSTHROUGH = frozenset(inspect.signature(redis.Redis.__init__).parameters) - {
    "self",
    "host",
    "port",
    "connection_pool",
    "unix_socket_path",
    "retry",
    "retry_on_timeout",
    "retry_on_error",
    "single_connection_client",
    "decode_responses",
    "socket_timeout",
    "socket_connect_timeout",
    "max_connections",
    "health_check_interval",
}


def _unavailable(command: str, exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(f"Redis {command} failed: {type(exc).__name__}: {exc}")


def _k(key: str) -> bytes:
    # The Cache hands us str keys that may hold lone surrogates; keep them byte-exact.
    return key.encode("utf-8", "surrogatepass")


def _px(ttl: float) -> int:
    """Milliseconds for a positive ``ttl`` in seconds (at least 1, never 0 = 'no expiry')."""
    return max(1, math.ceil(ttl * 1000))


def _unsplit(parts: Any) -> str:
    """The URL without query or fragment (``unix:///path`` keeps its slashes)."""
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _public(parts: Any) -> str:
    """The URL without credentials, query or fragment (safe to log and to label metrics)."""
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


def _positive(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < seconds <= 3600:
        raise ConfigurationError(f"{name} must be in (0, 3600] seconds, got {value!r}")
    return seconds


def _split_options(url: str, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Return the split URL and its query merged with ``options`` (keywords win)."""
    parts = urlsplit(url)
    merged: dict[str, Any] = {}
    for name, values in parse_qs(parts.query).items():
        if name == "serializer":  # consumed by Cache.from_url
            continue
        convert = _QUERY_TYPES.get(name)
        if convert is None:
            known = ", ".join(sorted(_QUERY_TYPES))
            raise ConfigurationError(f"unknown Redis URL option {name!r} (known: {known})")
        try:
            merged[name] = convert(values[-1])
        except ValueError as exc:
            raise ConfigurationError(f"bad value for Redis URL option {name!r}: {exc}") from exc
    merged.update(options)
    if "socket_connect_timeout" in merged:
        merged.setdefault("connect_timeout", merged.pop("socket_connect_timeout"))
    return parts, merged


# ---------------------------------------------------------------- shared clients


class _Shared:
    """A pool or cluster client used by every backend built from one URL + options."""

    __slots__ = ("build", "lock", "refs", "resource")

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self.resource: Any = None
        self.refs = 0
        self.lock = threading.Lock()

    def get(self) -> Any:
        resource = self.resource
        if resource is None:
            with self.lock:
                if self.resource is None:
                    self.resource = self.build()
                resource = self.resource
        return resource


_SHARED: dict[tuple[str, ...], _Shared] = {}
_SHARED_LOCK = threading.Lock()


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
    if resource is not None:
        dispose(resource)


def _pool_key(kind: str, where: str, kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    return (kind, where, *(f"{k}={kwargs[k]!r}" for k in sorted(kwargs)))


# ---------------------------------------------------------------- shared logic


class _RedisCommon(Backend):
    """Commands that read the same on one server and on a cluster."""

    max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE
    _cas_script: Any = None

    @property
    def client(self) -> Any:
        """The redis-py client in use (``redis.Redis`` or ``redis.cluster.RedisCluster``)."""
        raise NotImplementedError

    def _data(self, key: str, value: Any) -> bytes | bytearray | memoryview:
        """Check a value before it is sent: bytes only, within ``max_value_size``."""
        if isinstance(value, str):
            value = value.encode("utf-8", "surrogatepass")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SerializationError(
                f"Redis backends store bytes, not {type(value).__name__} (use a serializer)"
            )
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        limit = self.max_value_size
        if limit is not None and size > limit:
            raise ValueTooLargeError(size, limit, key)
        return value

    def get(self, key: str) -> Any:
        """Return the bytes under ``key`` (``GET``), or ``MISSING``."""
        try:
            value = self.client.get(_k(key))
        except _ERRORS as exc:
            raise _unavailable("GET", exc) from exc
        return MISSING if value is None else value

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` (``SET PX``); ``ttl`` ``None`` never expires, ``<= 0`` deletes."""
        data = self._data(key, value)
        try:
            if ttl is None:
                self.client.set(_k(key), data)
            elif ttl > 0:
                self.client.set(_k(key), data, px=_px(ttl))
            else:
                self.client.delete(_k(key))
        except _ERRORS as exc:
            raise _unavailable("SET", exc) from exc

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent (``SET NX PX``); return whether stored."""
        data = self._data(key, value)
        try:
            if ttl is not None and ttl <= 0:
                # an already expired entry is "stored" only in the sense that the key was free
                return not self.client.exists(_k(key))
            px = None if ttl is None else _px(ttl)
            return bool(self.client.set(_k(key), data, nx=True, px=px))
        except _ERRORS as exc:
            raise _unavailable("SET NX", exc) from exc

    def delete(self, key: str) -> bool:
        """Remove ``key`` (``DEL``); return whether it was present."""
        try:
            return bool(self.client.delete(_k(key)))
        except _ERRORS as exc:
            raise _unavailable("DEL", exc) from exc

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` with one ``DEL`` (one per slot on a cluster); return how many existed."""
        encoded = [_k(k) for k in keys]
        if not encoded:
            return 0
        try:
            return int(self.client.delete(*encoded))
        except _ERRORS as exc:
            raise _unavailable("DEL", exc) from exc

    def _mget(self, keys: list[bytes]) -> list[Any]:
        raise NotImplementedError

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: bytes}`` present: one ``MGET`` (one per slot on a cluster)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        try:
            values = self._mget([_k(k) for k in keys])
        except _ERRORS as exc:
            raise _unavailable("MGET", exc) from exc
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item with one pipeline of ``SET PX`` (one batch per node on a cluster)."""
        items = [(_k(k), self._data(k, v)) for k, v in mapping.items()]
        if not items:
            return
        if ttl is not None and ttl <= 0:
            self.delete_many(mapping)
            return
        px = None if ttl is None else _px(ttl)
        try:
            pipe = self.client.pipeline(transaction=False)
            for k, data in items:
                pipe.set(k, data, px=px)
            pipe.execute()
        except _ERRORS as exc:
            raise _unavailable("SET (pipeline)", exc) from exc

    # -- optional capabilities

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds exactly ``expected`` (Lua); return whether."""
        old = self._data(key, expected)
        data = self._data(key, value)
        px = -1 if ttl is None else (_px(ttl) if ttl > 0 else 0)
        try:
            script = self._cas_script
            if script is None:
                # register_script runs EVALSHA and falls back to loading the script once
                script = self._cas_script = self.client.register_script(_CAS_LUA)
            return bool(script(keys=[_k(key)], args=[old, data, px]))
        except _ERRORS as exc:
            raise _unavailable("compare-and-set script", exc) from exc

    def _infos(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def server_stats(self) -> dict[str, float]:
        """Return server-wide ``evictions``, ``expired``, ``hits``, ``misses`` (sum of masters)."""
        try:
            infos = self._infos()
        except _ERRORS as exc:
            raise _unavailable("INFO stats", exc) from exc
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


# ---------------------------------------------------------------- one server


class RedisBackend(_RedisCommon):
    """One Redis server: ``redis://[user:password@]host:port/db``, ``rediss://...``, ``unix://path?db=N``.

    Pass ``client=`` a ready ``redis.Redis`` to use it as it is (its timeouts
    and retries are then yours to set, and ``close()`` leaves it open).
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix")

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
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
            if connection_options:
                raise ConfigurationError("connection options cannot be combined with client=")
            self._client: Any = client
            return
        assert url is not None
        parts = urlsplit(url)
        if parts.scheme.lower() not in self.schemes:
            raise ConfigurationError(f"RedisBackend cannot serve {parts.scheme}:// URLs")
        if parts.query:
            raise ConfigurationError("URL query options need RedisBackend.from_url(url)")
        unknown = set(connection_options) - _PASSTHROUGH
        if unknown:
            raise ConfigurationError(f"unknown Redis options: {', '.join(sorted(unknown))}")
        if retries < 0:
            raise ConfigurationError("retries must be >= 0")
        kwargs: dict[str, Any] = {
            "socket_timeout": _positive("socket_timeout", socket_timeout),
            "socket_connect_timeout": _positive("connect_timeout", connect_timeout),
            "health_check_interval": int(health_check_interval),
            **connection_options,
        }
        if max_connections is not None:
            kwargs["max_connections"] = int(max_connections)
        clean = _unsplit(parts)
        self.server_address = _public(parts)
        key = _pool_key("redis", clean, {**kwargs, "retries": retries})

        def build() -> redis.ConnectionPool:
            # no retries and no backoff: a dead server costs one timeout, not a storm
            return redis.ConnectionPool.from_url(clean, retry=Retry(NoBackoff(), retries), **kwargs)

        try:
            self._shared = _acquire(key, build)
            self._shared_key = key
            pool = self._shared.get()
        except ValueError as exc:
            if self._shared is not None:
                _release(key, self._shared, _disconnect_pool)
            raise ConfigurationError(f"invalid Redis URL {url!r}: {exc}") from exc
        self._client = redis.Redis(connection_pool=pool)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Build from ``redis://``, ``rediss://`` or ``unix://``; keywords override the query."""
        parts, merged = _split_options(url, options)
        db = merged.get("db")
        if db is not None and parts.scheme.lower() != "unix":
            path = parts.path.strip("/")
            if path and path != str(db):
                raise ConfigurationError(f"Redis URL {url!r} names two databases")
            parts = parts._replace(path="")
        return cls(_unsplit(parts), **merged)

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
        # the hot path: skip the property and the base method's indirection
        try:
            value = self._client.get(key.encode("utf-8", "surrogatepass"))
        except _ERRORS as exc:
            raise _unavailable("GET", exc) from exc
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


def _cluster_nodes(netloc: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """Parse ``[user:password@]host:port[,host:port...]``."""
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"cluster node {node!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, username, password


class RedisClusterBackend(_RedisCommon):
    """A Redis Cluster: ``redis+cluster://[user:password@]host:port[,host:port...]``.

    ``rediss+cluster://`` connects with TLS.

    Multi-key commands are split per hash slot. The ``RedisCluster`` client is
    created on first use, so a backend can be built while the cluster is down.
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
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise ConfigurationError(f"RedisClusterBackend cannot serve {scheme}:// URLs")
        if parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError("Redis Cluster has only database 0")
        if parts.query:
            raise ConfigurationError("URL query options need RedisClusterBackend.from_url(url)")
        unknown = set(connection_options) - _PASSTHROUGH
        if "db" in connection_options:
            unknown.add("db")
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ConfigurationError(f"unknown Redis Cluster options: {names}")
        if retries < 0:
            raise ConfigurationError("retries must be >= 0")
        self.server_address = _public(parts)
        nodes, username, password = _cluster_nodes(parts.netloc)
        kwargs: dict[str, Any] = {
            "socket_timeout": _positive("socket_timeout", socket_timeout),
            "socket_connect_timeout": _positive("connect_timeout", connect_timeout),
            **connection_options,
        }
        if username:
            kwargs["username"] = username
        if password is not None:
            kwargs["password"] = password
        if scheme == "rediss+cluster":
            kwargs["ssl"] = True
        if max_connections is not None:
            kwargs["max_connections"] = int(max_connections)
        self._kwargs = kwargs
        where = ",".join(f"{h}:{p}" for h, p in nodes)
        self._where = where
        key = _pool_key("cluster", where, {**kwargs, "retries": retries})

        def build() -> RedisCluster:
            return RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
                retry=Retry(NoBackoff(), retries),
                **kwargs,
            )

        self._shared = _acquire(key, build)
        self._shared_key = key

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisClusterBackend:
        """Build from ``redis+cluster://host:port[,host:port...]``; keywords override the query."""
        parts, merged = _split_options(url, options)
        db = merged.pop("db", 0)
        if int(db) != 0:
            raise ConfigurationError("Redis Cluster has only database 0")
        return cls(_unsplit(parts), **merged)

    @property
    def client(self) -> Any:
        """The ``RedisCluster`` client (connected to the cluster on first use)."""
        if self._given is not None:
            return self._given
        shared = self._shared
        if shared is None or self._closed:
            raise BackendUnavailableError("RedisClusterBackend is closed")
        resource = shared.resource
        if resource is None:
            try:
                resource = shared.get()
            except _ERRORS as exc:
                raise _unavailable("cluster discovery", exc) from exc
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
