"""The Redis commands of the backend contract: each under one deadline, redis-py errors translated.

``_RedisCommon`` holds what reads the same on one server and on a cluster (the
asyncio twins reuse its checks, expiry and error translation); the backends in
``redis.py`` only build and hold the redis-py client it talks to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from time import monotonic
from typing import Any, Final, TypeVar

from redis.exceptions import (
    ClusterError,
    DataError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from ..errors import (
    BackendRejectedError,
    BackendUnavailableError,
    CacheError,
    SerializationError,
    ValueTooLargeError,
)
from .base import MISSING, Backend
from .redis_deadline import _DEADLINE

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "DEFAULT_TIMEOUT", "MAX_TTL"]

_T = TypeVar("_T")

#: Deadline of each command (and TCP connect timeout), seconds, unless configured otherwise.
DEFAULT_TIMEOUT: Final = 0.25
#: Redis's own limit for a string value (``proto-max-bulk-len``).
DEFAULT_MAX_VALUE_SIZE: Final = 512 * 1024 * 1024
# Redis refuses an expiry whose absolute time overflows a signed 64-bit count of
# milliseconds; 2**62 ms (about 146 million years) leaves room for any clock.
_MAX_PX: Final = 2**62
#: Longest TTL sent to Redis, in seconds; longer ones (not ``inf``) are clamped to it.
MAX_TTL: Final = _MAX_PX / 1000

# Everything redis-py raises for a server that is down, slow, full or confused.
_ERRORS = (RedisError, RedisClusterException, OSError)
# Error replies that mean "this server cannot serve now", not "this command is refused".
_OUTAGE_REPLIES = (ClusterError, TryAgainError, ReadOnlyError)
_OUTAGE_PREFIXES = ("BUSY ", "MASTERDOWN", "LOADING", "CLUSTERDOWN", "NOREPLICAS")

# Compare-and-set: ARGV = expected, new value, expiry ('' none, '0' delete, else PX ms).
_CAS_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur ~= ARGV[1] then return 0 end
local px = ARGV[3]
if px == '' then
  redis.call('SET', KEYS[1], ARGV[2])
elseif px == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
end
return 1
"""


def _k(key: str) -> bytes:
    # The Cache hands us str keys that may hold lone surrogates; keep them byte-exact.
    return key.encode("utf-8", "surrogatepass")


def _expiry(ttl: float | None) -> int | None:
    """PX milliseconds for ``ttl`` seconds: ``None`` never expires, ``0`` expires at once."""
    if ttl is None or ttl == math.inf:
        return None
    if not ttl > 0:  # zero, negative and NaN: already expired
        return 0
    if ttl >= MAX_TTL:
        return _MAX_PX
    return max(1, math.ceil(ttl * 1000))  # never 0 for a positive ttl


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secrets_of(
    username: str | None, password: str | None, options: Mapping[str, Any]
) -> tuple[str, ...]:
    """The credentials to scrub from error texts (too short ones would garble them)."""
    found = [
        username,
        password,
        *(options.get(k) for k in ("username", "password", "ssl_password")),
    ]
    return tuple(s for s in found if isinstance(s, str) and len(s) >= 4)


def _failure(command: str, exc: BaseException, secrets: Iterable[str] = ()) -> CacheError:
    """Translate a redis-py error: refused by a healthy server, or the server unavailable."""
    detail = _scrub(f"{type(exc).__name__}: {exc}", secrets)
    refused = isinstance(exc, (ResponseError, DataError)) and not (
        isinstance(exc, _OUTAGE_REPLIES) or str(exc).startswith(_OUTAGE_PREFIXES)
    )
    if refused:
        return BackendRejectedError(f"Redis refused {command}: {detail}")
    return BackendUnavailableError(f"Redis {command} failed: {detail}")


class _RedisCommon(Backend):
    """Commands that read the same on one server and on a cluster, each under one deadline."""

    max_value_size: int | None = DEFAULT_MAX_VALUE_SIZE
    _cas_script: Any = None
    _timeout: float = DEFAULT_TIMEOUT
    _secrets: tuple[str, ...] = ()

    @property
    def client(self) -> Any:
        """The redis-py client in use (``redis.Redis`` or ``redis.cluster.RedisCluster``)."""
        raise NotImplementedError

    def _run(self, command: str, call: Callable[[], _T]) -> _T:
        """Run ``call`` under this command's deadline; translate redis-py's errors."""
        state = _DEADLINE
        outer = state.at
        if outer is None:
            state.at = monotonic() + self._timeout
        try:
            return call()
        except _ERRORS as exc:
            raise _failure(command, exc, self._secrets) from exc
        finally:
            state.at = outer

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
        value = self._run("GET", lambda: self.client.get(_k(key)))
        return MISSING if value is None else value

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` (``SET PX``); ``None``/``inf`` never expire, ``<= 0`` deletes."""
        data = self._data(key, value)
        px = _expiry(ttl)
        if px == 0:
            self._run("DEL", lambda: self.client.delete(_k(key)))
        else:
            self._run("SET", lambda: self.client.set(_k(key), data, px=px))

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent (``SET NX PX``); return whether stored."""
        data = self._data(key, value)
        px = _expiry(ttl)
        if px == 0:
            # an already expired entry is "stored" only in the sense that the key was free
            return not self._run("EXISTS", lambda: self.client.exists(_k(key)))
        return bool(self._run("SET NX", lambda: self.client.set(_k(key), data, nx=True, px=px)))

    def delete(self, key: str) -> bool:
        """Remove ``key`` (``DEL``); return whether it was present."""
        return bool(self._run("DEL", lambda: self.client.delete(_k(key))))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` with one ``DEL`` (one per slot on a cluster); return how many existed."""
        encoded = [_k(k) for k in keys]
        if not encoded:
            return 0
        return int(self._run("DEL", lambda: self.client.delete(*encoded)))

    def _mget(self, keys: list[bytes]) -> list[Any]:
        raise NotImplementedError

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: bytes}`` present: one ``MGET`` (one per slot on a cluster)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        values = self._run("MGET", lambda: self._mget([_k(k) for k in keys]))
        return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item with one pipeline of ``SET PX`` (one batch per node on a cluster)."""
        items = [(_k(k), self._data(k, v)) for k, v in mapping.items()]
        if not items:
            return
        px = _expiry(ttl)
        if px == 0:
            self.delete_many(mapping)
            return

        def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            for k, data in items:
                pipe.set(k, data, px=px)
            pipe.execute()

        self._run("SET (pipeline)", send)

    # -- optional capabilities

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds exactly ``expected`` (Lua); return whether."""
        old = self._data(key, expected)
        data = self._data(key, value)
        px = _expiry(ttl)
        arg = "" if px is None else str(px)

        def run() -> Any:
            script = self._cas_script
            if script is None:
                # register_script runs EVALSHA and falls back to loading the script once
                script = self._cas_script = self.client.register_script(_CAS_LUA)
            return script(keys=[_k(key)], args=[old, data, arg])

        return bool(self._run("compare-and-set script", run))

    def _infos(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def server_stats(self) -> dict[str, float]:
        """Return server-wide ``evictions``, ``expired``, ``hits``, ``misses`` (sum of masters)."""
        infos = self._run("INFO stats", self._infos)
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
