"""The backend contract: a bytes-and-expiry store that knows nothing of policies or metrics.

A backend implements eight methods (``get``, ``set``, ``add``, ``delete`` and
the ``*_many`` forms, ``close``). Expiry is in seconds (``float``) or ``None``
for no expiry. Absent keys are reported with the ``MISSING`` sentinel, so
``None`` can be stored as a value.

Backends raise ``BackendUnavailableError`` (cause chained) when the server
cannot be reached or does not answer in time, ``BackendRejectedError`` when it
answered but refused the command (out of memory, a value or TTL out of its
range, an ACL denial), ``ValueTooLargeError`` before sending a value over their
size limit, and nothing else for ordinary misses.

Optional capabilities are separate protocols a policy may ask for with
``isinstance``: ``SupportsCompareAndSet`` (versioned writes),
``SupportsServerStats`` (server-wide counters), ``SupportsEvictionCounts`` and
``SupportsDropPrefix`` (free a cleared namespace's memory at once).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

__all__ = [
    "MISSING",
    "AsyncBackend",
    "Backend",
    "Missing",
    "SupportsCompareAndSet",
    "SupportsDropPrefix",
    "SupportsEvictionCounts",
    "SupportsServerStats",
]


class Missing(enum.Enum):
    """Type of the ``MISSING`` sentinel."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: Returned by ``Backend.get`` when the key is absent or expired.
MISSING: Final = Missing.MISSING


class Backend(abc.ABC):
    """A key-value store with per-entry expiry, addressed by ``str`` keys."""

    #: URL schemes this class serves (used by the registry).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: True when values stay in this process (no serialization needed).
    local: ClassVar[bool] = False
    #: Largest encoded value the backend holds, in bytes; ``None`` for no limit.
    max_value_size: int | None = None
    #: Where the server is (a URL, credentials removed by readers); ``None`` if unknown.
    server_address: str | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        """Build a backend from a URL; keyword options override query parameters."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL")

    @abc.abstractmethod
    def get(self, key: str) -> Any:
        """Return the stored value, or ``MISSING``."""

    @abc.abstractmethod
    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``None``: no expiry)."""

    @abc.abstractmethod
    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was stored."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys that are present."""
        out: dict[str, Any] = {}
        for k in keys:
            v = self.get(k)
            if v is not MISSING:
                out[k] = v
        return out

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item of ``mapping`` with the same ``ttl``."""
        for k, v in mapping.items():
            self.set(k, v, ttl)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many were present (where the backend can tell)."""
        return sum(1 for k in keys if self.delete(k))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the backend must not be used afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class SupportsCompareAndSet(Protocol):
    """Conditional writes, used for leases that stop a stale load overwriting a newer write.

    Redis implements it with a Lua compare-and-set, memcached with ``gets``/``cas``,
    the memory backend under its lock.
    """

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` currently holds exactly ``expected``; return whether."""
        ...


@runtime_checkable
class SupportsServerStats(Protocol):
    """Server-wide counters (the whole server, not one namespace)."""

    def server_stats(self) -> dict[str, float]:
        """Return counters such as ``evictions``, ``expired``, ``hits``, ``misses``."""
        ...


@runtime_checkable
class SupportsEvictionCounts(Protocol):
    """Exact per-backend counts of entries removed for capacity and for expiry."""

    def eviction_counts(self) -> tuple[int, int]:
        """Return ``(capacity_evictions, expirations)`` so far."""
        ...


@runtime_checkable
class SupportsDropPrefix(Protocol):
    """Removing every entry under a key prefix at once (in-process stores, where it is cheap).

    Used after a namespace ``clear()`` so the old entries free their memory
    instead of waiting to be pushed out; what it removes is not counted as an
    eviction.
    """

    def drop_prefix(self, prefix: str) -> int:
        """Remove every entry whose key starts with ``prefix``; return how many."""
        ...


class AsyncBackend(abc.ABC):
    """The asyncio twin of ``Backend``: the same contract, awaited.

    Same keys, expiry rules, ``MISSING`` sentinel, byte format and errors
    (``BackendUnavailableError``, ``BackendRejectedError``, ``ValueTooLargeError``),
    so a ``Cache`` and an ``AsyncCache`` over one server read each other's
    entries. Optional capabilities are methods of the same names as the sync
    protocols (``compare_and_set``, ``server_stats``, ``eviction_counts``,
    ``drop_prefix``), awaited where they do I/O.
    """

    #: URL schemes this class serves (used by the async registry).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: True when values stay in this process (no serialization needed).
    local: ClassVar[bool] = False
    #: Largest encoded value the backend holds, in bytes; ``None`` for no limit.
    max_value_size: int | None = None
    #: Where the server is (a URL without credentials); ``None`` if unknown.
    server_address: str | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncBackend:
        """Build a backend from a URL; keyword options override query parameters."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL")

    @abc.abstractmethod
    async def get(self, key: str) -> Any:
        """Return the stored value, or ``MISSING``."""

    @abc.abstractmethod
    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``None``: no expiry)."""

    @abc.abstractmethod
    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was stored."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys that are present."""
        out: dict[str, Any] = {}
        for k in keys:
            v = await self.get(k)
            if v is not MISSING:
                out[k] = v
        return out

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item of ``mapping`` with the same ``ttl``."""
        for k, v in mapping.items():
            await self.set(k, v, ttl)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many were present (where the backend can tell)."""
        removed = 0
        for k in keys:
            removed += bool(await self.delete(k))
        return removed

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the backend must not be used afterwards."""

    async def __aenter__(self) -> AsyncBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
