"""Redis behind Sentinel (redis-py ``redis.sentinel.Sentinel``): the master of one service.

``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]``
(``rediss+sentinel://`` for TLS to the master and to the Sentinels). Sentinel
ports default to 26379. The user and password in the URL are the master's;
the Sentinels' own credentials are the ``sentinel_username`` and
``sentinel_password`` options (query or keyword).

The backend talks to the current master only. Before each new connection
redis-py asks the Sentinels where the master is, so after a failover the next
connection goes to the promoted replica; a connection to a demoted master is
dropped on its first ``READONLY`` answer. Asking the Sentinels is part of the
command and runs under its deadline. Everything else - deadlines, no
retries, error translation, the command set - is ``RedisBackend``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlencode

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from ..errors import ConfigurationError
from .redis import (
    _COMMON_OPTIONS,
    _TCP_OPTIONS,
    _TLS_OPTIONS,
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_TIMEOUT,
    _acquire,
    _connection_kwargs,
    _credentials,
    _db_number,
    _host_port,
    _pool_key,
    _positive,
    _RedisCommon,
    _release,
    _retry,
    _Shared,
    _split,
    _split_options,
    _whole,
    deadline_connection_class,
)

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "RedisSentinelBackend",
    "SentinelSettings",
    "replicas_acknowledged",
    "sentinel_settings",
    "split_sentinel_url",
]

#: Port of a Sentinel given without one.
DEFAULT_SENTINEL_PORT = 26379
#: The URL schemes of the Sentinel drivers (sync and asyncio).
SENTINEL_SCHEMES: tuple[str, ...] = ("redis+sentinel", "rediss+sentinel")

# Query options only this backend understands, with their types.
_SENTINEL_QUERY = {
    "service_name": str,
    "sentinel_username": str,
    "sentinel_password": str,
    "min_other_sentinels": int,
    "sentinel_timeout": float,
    "wait_replicas": int,
}


def _sentinel_nodes(hosts: str) -> list[tuple[str, int]]:
    """Parse ``host[:port][,host[:port]...]``; a Sentinel without a port is on 26379."""
    nodes = []
    for node in hosts.split(","):
        node = node.strip()
        if node.startswith("["):
            has_port = "]:" in node
        elif node.count(":") > 1:
            raise ConfigurationError(f"Sentinel node {node!r}: write an IPv6 address as [addr]")
        else:
            has_port = ":" in node
        if not has_port:
            node = f"{node}:{DEFAULT_SENTINEL_PORT}"
        nodes.append(_host_port(node, "Sentinel node"))
    return nodes


def _service_and_db(path: str) -> tuple[str | None, int | None]:
    """Split ``/service_name[/db]``."""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if len(parts) > 2:
        raise ConfigurationError(f"Sentinel URL path {path!r} is not /service_name[/db]")
    service = parts[0] if parts else None
    db = _db_number(parts[1], "URL path") if len(parts) == 2 else None
    return service, db


@dataclass(frozen=True)
class SentinelSettings:
    """A Sentinel URL and its options, checked: what both Sentinel drivers build their clients from.

    ``master_kwargs`` and ``sentinel_kwargs`` are redis-py connection keywords
    without a connection class or retry object (each driver adds its own);
    ``master_kwargs`` holds ``socket_timeout``, the deadline of each command.
    """

    scheme: str
    tls: bool
    nodes: list[tuple[str, int]]
    service: str
    db: int
    master_kwargs: dict[str, Any]
    sentinel_kwargs: dict[str, Any]
    min_other_sentinels: int
    wait_replicas: int
    retries: int
    timeout: float
    secrets: tuple[str, ...]
    where: str

    @property
    def server_address(self) -> str:
        """``scheme://sentinels/service/db``, with no user name or password."""
        return f"{self.scheme}://{self.where}"

    @property
    def wait_ms(self) -> int:
        """How long ``WAIT`` may wait: half the deadline, so its answer beats the deadline."""
        return max(1, int(self.timeout * 500))


def sentinel_settings(
    url: str,
    *,
    owner: str = "RedisSentinelBackend",
    service_name: str | None = None,
    db: int | None = None,
    sentinel_username: str | None = None,
    sentinel_password: str | None = None,
    min_other_sentinels: int = 0,
    sentinel_timeout: float | None = None,
    wait_replicas: int = 0,
    socket_timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_TIMEOUT,
    retries: int = 0,
    max_connections: int | None = None,
    health_check_interval: int = 0,
    max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
    connection_options: Mapping[str, Any] | None = None,
) -> SentinelSettings:
    """Check a query-less ``redis+sentinel://`` URL and its options (no I/O)."""
    options = dict(connection_options or {})
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ConfigurationError(f"{owner} cannot serve {scheme or 'scheme-less'} URLs")
    if parts.query:
        raise ConfigurationError(f"URL query options need {owner}.from_url(url)")
    username, password, hosts = _credentials(parts.netloc)
    secrets = tuple(s for s in (password, sentinel_password, options.get("password")) if s)
    tls = scheme == "rediss+sentinel"
    allowed = _COMMON_OPTIONS | _TCP_OPTIONS | (_TLS_OPTIONS if tls else frozenset())
    kwargs = _connection_kwargs(
        socket_timeout=socket_timeout,
        connect_timeout=connect_timeout,
        retries=retries,
        max_connections=max_connections,
        max_value_size=max_value_size,
        options=options,
        allowed=allowed,
    )
    _whole("min_other_sentinels", min_other_sentinels, 0)
    _whole("wait_replicas", wait_replicas, 0)
    nodes = _sentinel_nodes(hosts)
    path_service, path_db = _service_and_db(parts.path)
    if service_name is not None and path_service not in (None, service_name):
        raise ConfigurationError("the Sentinel URL names two services (path and service_name=)")
    service = service_name or path_service
    if not service:
        raise ConfigurationError(
            "a Sentinel URL needs the service name: redis+sentinel://host:26379/mymaster"
        )
    number = path_db if path_db is not None else 0
    if db is not None:
        if path_db is not None and _db_number(db, "db option") != path_db:
            raise ConfigurationError("the Sentinel URL names two databases (path and db=)")
        number = _db_number(db, "db option")

    # The Sentinels: the TLS settings of the master, their own credentials (never
    # the master's), and each a share of the deadline, so that one hung Sentinel
    # leaves time to ask the next.
    if sentinel_timeout is None:
        share = kwargs["socket_timeout"] / (len(nodes) + 1)
    else:
        share = _positive("sentinel_timeout", sentinel_timeout)
    sentinel_kwargs: dict[str, Any] = {k: v for k, v in kwargs.items() if k in _TLS_OPTIONS}
    sentinel_kwargs.update(socket_timeout=share, socket_connect_timeout=share)
    if sentinel_username:
        sentinel_kwargs["username"] = sentinel_username
    if sentinel_password is not None:
        sentinel_kwargs["password"] = sentinel_password
    master_kwargs: dict[str, Any] = {
        **kwargs,
        "db": number,
        "health_check_interval": _whole("health_check_interval", health_check_interval, 0),
    }
    if username:
        master_kwargs.setdefault("username", username)
    if password is not None:
        master_kwargs.setdefault("password", password)
    where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
    return SentinelSettings(
        scheme=scheme,
        tls=tls,
        nodes=nodes,
        service=service,
        db=number,
        master_kwargs=master_kwargs,
        sentinel_kwargs=sentinel_kwargs,
        min_other_sentinels=min_other_sentinels,
        wait_replicas=wait_replicas,
        retries=retries,
        timeout=kwargs["socket_timeout"],
        secrets=secrets,
        where=f"{where}/{service}/{number}",
    )


def split_sentinel_url(url: str, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a Sentinel URL into the query-less URL and its options merged with ``options``.

    Keywords win over the query; the Sentinel options are typed like the Redis ones.
    """
    parts = _split(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    own: dict[str, Any] = {}
    for name, convert in _SENTINEL_QUERY.items():
        values = query.pop(name, None)
        if values is None:
            continue
        try:
            own[name] = convert(values[-1])
        except ValueError:
            raise ConfigurationError(
                f"Sentinel URL option {name!r} needs a {convert.__name__}"
            ) from None
    rest = parts._replace(query=urlencode(query, doseq=True)).geturl()
    rest_parts, merged = _split_options(rest, options)
    return f"{rest_parts.scheme}://{rest_parts.netloc}{rest_parts.path}", {**own, **merged}


class RedisSentinelBackend(_RedisCommon):
    """The master of a Sentinel-monitored Redis service.

    ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]``;
    ``rediss+sentinel://`` connects with TLS. ``socket_timeout`` is the
    deadline of each whole command, asking the Sentinels included. Pass
    ``client=`` a ready ``redis.Redis`` (e.g. from ``Sentinel.master_for``) to
    use it as it is (its timeouts and retries are then yours).
    """

    schemes: ClassVar[tuple[str, ...]] = SENTINEL_SCHEMES

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        service_name: str | None = None,
        db: int | None = None,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        min_other_sentinels: int = 0,
        sentinel_timeout: float | None = None,
        wait_replicas: int = 0,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        retries: int = 0,
        max_connections: int | None = None,
        health_check_interval: int = 0,
        max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE,
        **connection_options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisSentinelBackend needs exactly one of url= or client=")
        self.max_value_size = max_value_size
        self._closed = False
        self._shared: _Shared | None = None
        self._shared_key: tuple[str, ...] = ()
        self._where = "client"
        if client is not None:
            if connection_options or db is not None or service_name is not None:
                raise ConfigurationError("connection options cannot be combined with client=")
            self._client: Any = client
            return
        assert url is not None
        settings = sentinel_settings(
            url,
            service_name=service_name,
            db=db,
            sentinel_username=sentinel_username,
            sentinel_password=sentinel_password,
            min_other_sentinels=min_other_sentinels,
            sentinel_timeout=sentinel_timeout,
            wait_replicas=wait_replicas,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            retries=retries,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
            max_value_size=max_value_size,
            connection_options=connection_options,
        )
        self._secrets = settings.secrets
        self.wait_replicas = settings.wait_replicas
        self._timeout = settings.timeout
        self.service_name = settings.service
        self._where = settings.where
        self.server_address = settings.server_address
        tls = settings.tls
        base = SentinelManagedSSLConnection if tls else SentinelManagedConnection
        master_kwargs = {
            **settings.master_kwargs,
            "connection_class": deadline_connection_class(base),
        }
        sentinel_kwargs = settings.sentinel_kwargs
        key = _pool_key(
            "sentinel",
            self.server_address,
            {
                **master_kwargs,
                "retries": retries,
                "min_other_sentinels": min_other_sentinels,
                "wait_replicas": wait_replicas,
                **{f"sentinel.{k}": v for k, v in sentinel_kwargs.items()},
            },
        )
        sentinel_class = deadline_connection_class(redis.SSLConnection if tls else redis.Connection)

        def build() -> tuple[Sentinel, Any]:
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                settings.nodes,
                min_other_sentinels=min_other_sentinels,
                sentinel_kwargs=sentinel_kwargs,
            )
            # redis.Redis() takes no connection class: give each Sentinel client a pool
            # whose connections obey the deadline, and no retries (redis-py's default
            # is 3 with backoff)
            sentinel.sentinels = [
                redis.Redis(
                    connection_pool=redis.ConnectionPool(
                        host=host,
                        port=port,
                        connection_class=sentinel_class,
                        retry=_retry(0),
                        **sentinel_kwargs,
                    )
                )
                for host, port in settings.nodes
            ]
            master: Any = sentinel.master_for(  # type: ignore[no-untyped-call]
                settings.service, retry=_retry(retries), **master_kwargs
            )
            if settings.wait_replicas:
                master = _Replicated(master, settings.wait_replicas, settings.wait_ms)
            return sentinel, master

        self._shared = _acquire(key, build)
        self._shared_key = key

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisSentinelBackend:
        """Build from ``redis+sentinel://...``; keywords override the query."""
        base, merged = split_sentinel_url(url, options)
        return cls(base, **merged)

    @property
    def client(self) -> Any:
        """The client of the current master (this process's own after a fork)."""
        if self._shared is None:
            return self._client
        return self._shared.get()[1]

    def _mget(self, keys: list[bytes]) -> list[Any]:
        return list(self.client.mget(keys))

    def _infos(self) -> list[dict[str, Any]]:
        return [self.client.info("stats")]

    def close(self) -> None:
        """Release the shared Sentinel client; the last backend using it disconnects it."""
        if self._closed:
            return
        self._closed = True
        if self._shared is not None:
            _release(self._shared_key, self._shared, _dispose)

    def __repr__(self) -> str:
        return f"RedisSentinelBackend({self._where})"


def replicas_acknowledged(results: list[Any], replicas: int, wait_ms: int) -> list[Any]:
    """Check a pipeline's answers that end with ``WAIT``'s; return the others.

    Fewer acknowledgements than ``replicas`` raise ``ConnectionError`` (the
    write may still be on the master), which the drivers report as unavailable.
    """
    acked = results.pop()
    if int(acked) < replicas:
        raise redis.ConnectionError(
            f"the write reached {acked} of {replicas} replica(s) within "
            f"{wait_ms} ms (wait_replicas)"
        )
    return results


class _Replicated:
    """A ``redis.Redis`` whose writes return only once ``replicas`` replicas have them.

    ``set`` (except ``SET NX``, a lease: losing one costs a load, never a stale
    value), ``delete`` and pipelines end with ``WAIT``; fewer acknowledgements
    than asked raise ``ConnectionError`` (the write may still be on the master).
    """

    __slots__ = ("_client", "_replicas", "_wait_ms")

    def __init__(self, client: redis.Redis, replicas: int, wait_ms: int) -> None:
        self._client = client
        self._replicas = replicas
        self._wait_ms = wait_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def set(self, name: bytes, value: Any, **options: Any) -> Any:
        if options.get("nx"):
            return self._client.set(name, value, **options)
        pipe = self.pipeline()
        pipe.set(name, value, **options)
        return pipe.execute()[0]

    def delete(self, *names: bytes) -> Any:
        pipe = self.pipeline()
        pipe.delete(*names)
        return pipe.execute()[0]

    def pipeline(self, transaction: bool = False) -> _ReplicatedPipeline:
        return _ReplicatedPipeline(
            self._client.pipeline(transaction=transaction), self._replicas, self._wait_ms
        )


class _ReplicatedPipeline:
    """A redis-py pipeline whose ``execute`` ends with ``WAIT`` (see ``_Replicated``)."""

    __slots__ = ("_pipe", "_replicas", "_wait_ms")

    def __init__(self, pipe: Any, replicas: int, wait_ms: int) -> None:
        self._pipe = pipe
        self._replicas = replicas
        self._wait_ms = wait_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def execute(self) -> list[Any]:
        self._pipe.execute_command("WAIT", self._replicas, self._wait_ms)
        return replicas_acknowledged(self._pipe.execute(), self._replicas, self._wait_ms)


def _dispose(resource: tuple[Sentinel, Any]) -> None:
    sentinel, master = resource
    master.connection_pool.disconnect()
    sentinel.close()
