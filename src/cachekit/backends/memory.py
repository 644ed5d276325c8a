"""In-process backend: cachetools' ``TLRUCache`` with per-entry TTL, lock-free reads.

cachetools decides what to evict (least recently used first, expired entries
before that). Its caches are not thread-safe, so writes take a lock; reads do
not: they look up a plain dict that mirrors the cache, and record the key in
a bounded buffer that is replayed into the LRU order on the next write (the
read-buffer design of Caffeine). Under heavy contention a few recency updates
may be dropped; correctness of expiry and capacity is never affected.

Values are kept as the objects they are unless the ``Cache`` is given a
serializer, so a read returns the stored object itself: do not mutate it.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cachetools import TLRUCache

from ..errors import ConfigurationError, ValueTooLargeError
from .base import MISSING, Backend

__all__ = ["MemoryBackend"]

Entry = tuple[Any, float]  # (value, absolute expiry on the backend's timer)


def _expiry(_key: str, entry: Entry, _now: float) -> float:
    return entry[1]


class _Store(TLRUCache):  # type: ignore[type-arg]
    """A TLRUCache that keeps the reader's mirror dict in step and counts removals."""

    def __init__(self, maxsize: int, timer: Callable[[], float], mirror: dict[str, Entry]):
        super().__init__(maxsize, _expiry, timer)
        self.mirror = mirror
        self.capacity_evictions = 0
        self.expirations = 0

    def popitem(self) -> tuple[str, Entry]:
        key, entry = super().popitem()
        self.mirror.pop(key, None)
        self.capacity_evictions += 1
        return key, entry

    def expire(self, time: float | None = None) -> list[tuple[str, Entry]]:
        expired: list[tuple[str, Entry]] = list(super().expire(time))
        for key, _ in expired:
            self.mirror.pop(key, None)
        self.expirations += len(expired)
        return expired


class MemoryBackend(Backend):
    """A bounded in-process store with per-entry TTL; ``timer`` is injectable for tests."""

    schemes = ("memory",)
    local = True

    def __init__(
        self,
        maxsize: int = 10_000,
        *,
        timer: Callable[[], float] = time.monotonic,
        max_value_size: int | None = None,
        read_buffer: int = 4096,
    ) -> None:
        if maxsize < 1:
            raise ConfigurationError(f"MemoryBackend maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.max_value_size = max_value_size
        self._timer = timer
        self._mirror: dict[str, Entry] = {}
        self._store = _Store(maxsize, timer, self._mirror)
        self._lock = threading.Lock()
        self._reads: collections.deque[str] = collections.deque(maxlen=read_buffer)
        self._touch = self._reads.append

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        """Build from ``memory://?maxsize=10000``."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        kwargs: dict[str, Any] = {}
        for name in ("maxsize", "max_value_size", "read_buffer"):
            if name in query:
                try:
                    kwargs[name] = int(query.pop(name))
                except ValueError as exc:
                    raise ConfigurationError(f"memory:// {name} must be an integer") from exc
        query.pop("serializer", None)  # consumed by Cache.from_url
        if query:
            raise ConfigurationError(f"unknown memory:// options: {', '.join(sorted(query))}")
        kwargs.update(options)
        return cls(**kwargs)

    # -- reads: no lock

    def get(self, key: str) -> Any:
        """Return the live value for ``key``, or ``MISSING``."""
        entry = self._mirror.get(key)
        if entry is None or not self._timer() < entry[1]:
            return MISSING
        self._touch(key)
        return entry[0]

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return the live values among ``keys``."""
        mirror, now, out = self._mirror, self._timer(), {}
        for key in keys:
            entry = mirror.get(key)
            if entry is not None and now < entry[1]:
                out[key] = entry[0]
                self._touch(key)
        return out

    # -- writes: under the lock

    def _drain_reads(self) -> None:
        store, reads = self._store, self._reads
        while reads:
            key = reads.popleft()
            with contextlib.suppress(KeyError):
                store[key]  # moves the key to the most-recently-used end

    def _entry(self, value: Any, ttl: float | None) -> Entry:
        limit = self.max_value_size
        if limit is not None and isinstance(value, (bytes, bytearray)) and len(value) > limit:
            raise ValueTooLargeError(len(value), limit)
        return (value, math.inf if ttl is None else self._timer() + ttl)

    def _put(self, key: str, entry: Entry) -> None:
        if not self._timer() < entry[1]:  # already expired (ttl <= 0): drop any old entry
            self._remove(key)
            return
        self._store[key] = entry
        self._mirror[key] = entry

    def _remove(self, key: str) -> bool:
        entry = self._mirror.pop(key, None)
        try:
            del self._store[key]
        except KeyError:  # absent, or present but expired: TLRUCache drops it and raises
            if entry is not None:
                self._store.expirations += 1
            return False
        return True

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds."""
        entry = self._entry(value, ttl)
        with self._lock:
            self._drain_reads()
            self._put(key, entry)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item of ``mapping``."""
        entries = {k: self._entry(v, ttl) for k, v in mapping.items()}
        with self._lock:
            self._drain_reads()
            for key, entry in entries.items():
                self._put(key, entry)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds no live entry."""
        entry = self._entry(value, ttl)
        with self._lock:
            current = self._mirror.get(key)
            if current is not None and self._timer() < current[1]:
                return False
            self._drain_reads()
            self._put(key, entry)
            return True

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether a live entry was removed."""
        with self._lock:
            return self._remove(key)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many live entries were removed."""
        with self._lock:
            return sum(1 for key in keys if self._remove(key))

    # -- optional capabilities

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds a live entry equal to ``expected``."""
        entry = self._entry(value, ttl)
        with self._lock:
            current = self._mirror.get(key)
            if current is None or not self._timer() < current[1]:
                return False
            if current[0] is not expected and current[0] != expected:
                return False
            self._drain_reads()
            self._put(key, entry)
            return True

    def eviction_counts(self) -> tuple[int, int]:
        """Return ``(capacity_evictions, expirations)``, sweeping expired entries first."""
        with self._lock:
            self._store.expire()
            return self._store.capacity_evictions, self._store.expirations

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    def clear(self) -> None:
        """Drop every entry (all namespaces)."""
        with self._lock:
            self._store.clear()
            self._mirror.clear()
            self._reads.clear()
