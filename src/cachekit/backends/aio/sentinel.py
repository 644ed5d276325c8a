"""Async Redis behind Sentinel (``redis.asyncio.sentinel``): the master of one service.

The same URLs, options and checks as the sync ``RedisSentinelBackend`` (its
parser, ``sentinel_settings``, is reused), and the commands, deadlines and
error translation of ``AsyncRedisBackend``:

- each command runs under one deadline (``socket_timeout``), asking the
  Sentinels where the master is included (redis.asyncio asks before each new
  connection); each Sentinel may take only its share of it
  (``sentinel_timeout``), so a hung one leaves time to ask the next;
- no retries; ``MasterNotFoundError`` (no Sentinel answers, or none knows the
  service) is ``BackendUnavailableError``, like a dead server;
- one Sentinel client and one master pool per running event loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

import redis.asyncio as aredis
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from ...errors import ConfigurationError
from ..redis import DEFAULT_MAX_VALUE_SIZE, DEFAULT_TIMEOUT
from ..sentinel import (
    SENTINEL_SCHEMES,
    replicas_acknowledged,
    sentinel_settings,
    split_sentinel_url,
)
from .redis import _ASYNC_CONNECTION, _AsyncRedisCommon, _check_async, _retry

__all__ = ["AsyncRedisSentinelBackend"]


class AsyncRedisSentinelBackend(_AsyncRedisCommon):
    """The master of a Sentinel-monitored Redis service, over ``redis.asyncio``.

    ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db]``;
    ``rediss+sentinel://`` connects with TLS. ``socket_timeout`` is the
    deadline of each whole command, asking the Sentinels included.
    """

    schemes: ClassVar[tuple[str, ...]] = SENTINEL_SCHEMES

    def __init__(
        self,
        url: str,
        *,
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
        self.max_value_size = max_value_size
        settings = sentinel_settings(
            url,
            owner="AsyncRedisSentinelBackend",
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
        if retries:
            raise ConfigurationError("the asyncio Redis backends do not retry (retries=0)")
        _check_async(connection_options, _ASYNC_CONNECTION)
        self._settings = settings
        self._secrets = settings.secrets
        self._timeout = settings.timeout
        self.service_name = settings.service
        self.wait_replicas = settings.wait_replicas
        self.server_address = settings.server_address
        self._init_clients()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncRedisSentinelBackend:
        """Build from ``redis+sentinel://...``; keywords override the query."""
        base, merged = split_sentinel_url(url, options)
        return cls(base, **merged)

    def _build(self) -> tuple[Sentinel, Any]:
        settings = self._settings
        connection = aredis.SSLConnection if settings.tls else aredis.Connection
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.nodes, min_other_sentinels=settings.min_other_sentinels
        )
        # Sentinel() builds its clients with redis-py's default retries (3, with
        # backoff): give each one a pool with none, and its share of the deadline
        # (from_pool: the client owns its pool, so Sentinel.aclose() disconnects it)
        sentinel.sentinels = [
            aredis.Redis.from_pool(
                aredis.ConnectionPool(
                    host=host,
                    port=port,
                    connection_class=connection,
                    retry=_retry(),
                    **settings.sentinel_kwargs,
                )
            )
            for host, port in settings.nodes
        ]
        master_kwargs = dict(settings.master_kwargs)
        # socket_timeout=None: the command's Deadline is the only one (see AsyncRedisBackend)
        master_kwargs["socket_timeout"] = None
        master_kwargs["connection_class"] = (
            SentinelManagedSSLConnection if settings.tls else SentinelManagedConnection
        )
        master: Any = sentinel.master_for(settings.service, retry=_retry(), **master_kwargs)
        if settings.wait_replicas:
            master = _Replicated(master, settings.wait_replicas, settings.wait_ms)
        return sentinel, master

    async def _ready(self) -> Any:
        """This loop's master client."""
        return self._client()[1]

    async def _mget(self, client: Any, keys: list[bytes]) -> list[Any]:
        return list(await client.mget(keys))

    async def _infos(self, client: Any) -> list[dict[str, Any]]:
        return [await client.info("stats")]

    async def _dispose(self, client: tuple[Sentinel, Any]) -> None:
        sentinel, master = client
        try:
            await master.aclose()
        finally:
            await sentinel.aclose()

    def __repr__(self) -> str:
        return f"AsyncRedisSentinelBackend({self._settings.where})"


class _Replicated:
    """A ``redis.asyncio.Redis`` whose writes return only once ``replicas`` replicas have them.

    The async twin of the sync driver's: ``set`` (except ``SET NX``),
    ``delete`` and pipelines end with ``WAIT``; fewer acknowledgements than
    asked raise ``ConnectionError``.
    """

    __slots__ = ("_client", "_replicas", "_wait_ms")

    def __init__(self, client: aredis.Redis, replicas: int, wait_ms: int) -> None:
        self._client = client
        self._replicas = replicas
        self._wait_ms = wait_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def set(self, name: bytes, value: Any, **options: Any) -> Any:
        if options.get("nx"):
            return await self._client.set(name, value, **options)
        pipe = self.pipeline()
        pipe.set(name, value, **options)
        return (await pipe.execute())[0]

    async def delete(self, *names: bytes) -> Any:
        pipe = self.pipeline()
        pipe.delete(*names)
        return (await pipe.execute())[0]

    def pipeline(self, transaction: bool = False) -> _ReplicatedPipeline:
        return _ReplicatedPipeline(
            self._client.pipeline(transaction=transaction), self._replicas, self._wait_ms
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class _ReplicatedPipeline:
    """A redis.asyncio pipeline whose ``execute`` ends with ``WAIT`` (see ``_Replicated``)."""

    __slots__ = ("_pipe", "_replicas", "_wait_ms")

    def __init__(self, pipe: Any, replicas: int, wait_ms: int) -> None:
        self._pipe = pipe
        self._replicas = replicas
        self._wait_ms = wait_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    async def execute(self) -> list[Any]:
        self._pipe.execute_command("WAIT", self._replicas, self._wait_ms)
        results: list[Any] = await self._pipe.execute()
        return replicas_acknowledged(results, self._replicas, self._wait_ms)
