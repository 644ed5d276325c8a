"""Redis behind Sentinel (redis-py ``redis.sentinel.Sentinel``): the master of one service.

``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]``
(``rediss+sentinel://`` for TLS to the master, its replicas and the Sentinels).
Sentinel ports default to 26379. The user and password in the URL are the
master's; the Sentinels' own credentials are the ``sentinel_username`` and
``sentinel_password`` options (query or keyword).

The backend talks to the current master only. Before each new connection
redis-py asks the Sentinels where the master is, so after a failover the next
connection goes to the promoted replica; connections to a demoted master are
dropped on its first ``READONLY`` answer. Everything else - timeouts, no
retries, error translation, the command set - is ``RedisBackend``'s.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigurationError
from .redis import (
    _PASSTHROUGH,
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_TIMEOUT,
    _acquire,
    _pool_key,
    _positive,
    _RedisCommon,
    _release,
    _Shared,
    _split_options,
)

__all__ = ["DEFAULT_SENTINEL_PORT", "RedisSentinelBackend"]

#: Port of a Sentinel given without one.
DEFAULT_SENTINEL_PORT = 26379

# Options only this backend understands (query form: strings; keyword form: these types).
_SENTINEL_QUERY = {
    "service_name": str,
    "sentinel_username": str,
    "sentinel_password": str,
    "min_other_sentinels": int,
}


def _sentinel_nodes(netloc: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """Parse ``[user:password@]host[:port][,host[:port]...]`` (ports default to 26379)."""
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    nodes: list[tuple[str, int]] = []
    for node in hosts.split(","):
        node = node.strip()
        if node.startswith("["):  # [ipv6]:port
            host, _, rest = node[1:].partition("]")
            port = rest.removeprefix(":")
        elif node.count(":") == 1:
            host, _, port = node.partition(":")
        else:
            host, port = node, ""
        if not host or not (port == "" or port.isdigit()):
            raise ConfigurationError(f"Sentinel node {node!r} is not host[:port]")
        nodes.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
    return nodes, username, password


def _service_and_db(path: str) -> tuple[str | None, int | None]:
    """Split ``/service_name[/db]``."""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if len(parts) > 2:
        raise ConfigurationError(f"Sentinel URL path {path!r} is not /service_name[/db]")
    service = parts[0] if parts else None
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ConfigurationError(f"Sentinel URL database {parts[1]!r} is not a number")
        return service, int(parts[1])
    return service, None


class RedisSentinelBackend(_RedisCommon):
    """The master of a Sentinel-monitored Redis service.

    ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]``;
    ``rediss+sentinel://`` connects with TLS. Pass ``client=`` a ready
    ``redis.Redis`` (e.g. from ``Sentinel.master_for``) to use it as it is.
    """

    schemes: ClassVar[tuple[str, ...]] = ("redis+sentinel", "rediss+sentinel")

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
            if connection_options:
                raise ConfigurationError("connection options cannot be combined with client=")
            self._client: Any = client
            return
        assert url is not None
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise ConfigurationError(f"RedisSentinelBackend cannot serve {scheme}:// URLs")
        if parts.query:
            raise ConfigurationError("URL query options need RedisSentinelBackend.from_url(url)")
        unknown = set(connection_options) - _PASSTHROUGH
        if unknown:
            raise ConfigurationError(
                f"unknown Redis Sentinel options: {', '.join(sorted(unknown))}"
            )
        if retries < 0:
            raise ConfigurationError("retries must be >= 0")
        nodes, username, password = _sentinel_nodes(parts.netloc)
        path_service, path_db = _service_and_db(parts.path)
        if service_name is not None and path_service is not None and service_name != path_service:
            raise ConfigurationError("Sentinel URL names two services")
        if db is not None and path_db is not None and int(db) != path_db:
            raise ConfigurationError("Sentinel URL names two databases")
        service = service_name or path_service
        if not service:
            raise ConfigurationError(
                "Sentinel URL needs a service name: redis+sentinel://host:26379/mymaster"
            )
        database = int(db if db is not None else path_db or 0)
        timeouts: dict[str, Any] = {
            "socket_timeout": _positive("socket_timeout", socket_timeout),
            "socket_connect_timeout": _positive("connect_timeout", connect_timeout),
        }
        tls = scheme == "rediss+sentinel"
        # the Sentinels get the same timeouts, no retries (redis-py 8's default is 3 with
        # backoff) and, over TLS, the same TLS settings; never the master's credentials
        sentinel_kwargs: dict[str, Any] = dict(timeouts)
        if tls:
            sentinel_kwargs["ssl"] = True
            sentinel_kwargs.update({k: v for k, v in connection_options.items() if "ssl" in k})
        if sentinel_username:
            sentinel_kwargs["username"] = sentinel_username
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        master_kwargs: dict[str, Any] = {
            **timeouts,
            "db": database,
            "health_check_interval": int(health_check_interval),
            **connection_options,
        }
        if username:
            master_kwargs["username"] = username
        if password is not None:
            master_kwargs["password"] = password
        if tls:
            master_kwargs["ssl"] = True
        if max_connections is not None:
            master_kwargs["max_connections"] = int(max_connections)
        # the deadline of each command (asking the Sentinels included); secrets to scrub
        self._timeout = timeouts["socket_timeout"]
        self._secrets = tuple(s for s in (password, sentinel_password) if s)
        where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
        self._where = f"{where}/{service}/{database}"
        self.server_address = f"{scheme}://{self._where}"
        self.service_name = service
        key = _pool_key(
            "sentinel",
            self.server_address,
            {
                **master_kwargs,
                "retries": retries,
                "min_other_sentinels": min_other_sentinels,
                **{f"sentinel.{k}": v for k, v in sentinel_kwargs.items()},
            },
        )

        def build() -> tuple[Sentinel, redis.Redis]:
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                nodes,
                min_other_sentinels=int(min_other_sentinels),
                sentinel_kwargs={**sentinel_kwargs, "retry": Retry(NoBackoff(), 0)},
            )
            # no retries and no backoff: a dead master costs one timeout, not a storm
            master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
                service, retry=Retry(NoBackoff(), retries), **master_kwargs
            )
            return sentinel, master

        self._shared = _acquire(key, build)
        self._shared_key = key
        self._client = self._shared.get()[1]

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisSentinelBackend:
        """Build from ``redis+sentinel://...``; keywords override the query."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        own: dict[str, Any] = {}
        for name, convert in _SENTINEL_QUERY.items():
            values = query.pop(name, None)
            if values is None:
                continue
            try:
                own[name] = convert(values[-1])
            except ValueError as exc:
                raise ConfigurationError(f"bad value for Sentinel URL option {name!r}") from exc
        rest = parts._replace(query=urlencode(query, doseq=True))
        rest_parts, merged = _split_options(rest.geturl(), options)
        return cls(
            f"{rest_parts.scheme}://{rest_parts.netloc}{rest_parts.path}", **{**own, **merged}
        )

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client of the current master."""
        return self._client

    def _mget(self, keys: list[bytes]) -> list[Any]:
        return list(self._client.mget(keys))

    def _infos(self) -> list[dict[str, Any]]:
        return [self._client.info("stats")]

    def close(self) -> None:
        """Release the shared Sentinel client; the last backend using it disconnects it."""
        if self._closed:
            return
        self._closed = True
        if self._shared is not None:
            _release(self._shared_key, self._shared, _dispose)

    def __repr__(self) -> str:
        return f"RedisSentinelBackend({self._where})"


def _dispose(resource: tuple[Sentinel, redis.Redis]) -> None:
    sentinel, master = resource
    master.connection_pool.disconnect()
    sentinel.close()
