"""In-process async backend: the awaited face of a ``MemoryBackend`` (same store, no thread hop).

Every method calls the sync ``MemoryBackend`` directly: its work is a few
dictionary operations under a lock that is never held across an ``await``, so
running it on the event loop blocks nothing. A ``Cache`` and an ``AsyncCache``
built over the same ``MemoryBackend`` object share its entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from ..base import AsyncBackend
from ..memory import MemoryBackend

__all__ = ["AsyncMemoryBackend"]


class AsyncMemoryBackend(AsyncBackend):
    """``AsyncMemoryBackend(MemoryBackend(maxsize=...))``, or ``memory://?maxsize=...``."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    local: ClassVar[bool] = True

    def __init__(self, backend: MemoryBackend | None = None) -> None:
        self.backend = MemoryBackend() if backend is None else backend
        self.max_value_size = self.backend.max_value_size
        self.server_address = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncMemoryBackend:
        """Build from ``memory://?maxsize=10000&policy=tinylfu`` (the ``MemoryBackend`` options)."""
        return cls(MemoryBackend.from_url(url, **options))

    async def get(self, key: str) -> Any:
        """Return the live value for ``key``, or ``MISSING``."""
        return self.backend.get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return the live values among ``keys``."""
        return self.backend.get_many(keys)

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds."""
        self.backend.set(key, value, ttl)

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item of ``mapping``."""
        self.backend.set_many(mapping, ttl)

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds no live entry."""
        return self.backend.add(key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether a live entry was removed."""
        return self.backend.delete(key)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many live entries were removed."""
        return self.backend.delete_many(keys)

    async def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds a live entry equal to ``expected``."""
        return self.backend.compare_and_set(key, expected, value, ttl)

    def eviction_counts(self) -> tuple[int, int]:
        """Return ``(capacity_evictions, expirations)`` of the shared store."""
        return self.backend.eviction_counts()

    def drop_prefix(self, prefix: str) -> int:
        """Remove every live entry whose key starts with ``prefix``; return how many."""
        return self.backend.drop_prefix(prefix)

    async def aclose(self) -> None:
        """Close the wrapped ``MemoryBackend`` (a no-op: it holds no connections)."""
        self.backend.close()

    def __repr__(self) -> str:
        return f"AsyncMemoryBackend(maxsize={self.backend.maxsize})"
