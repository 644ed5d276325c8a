"""In-process backend: cachetools' ``LRUCache`` plus per-entry TTL, with lock-free reads.

cachetools decides what to evict for capacity (least recently used first);
a heap of ``(expiry, key)`` tuples removes expired entries before that, and
counts them apart, exactly. (cachetools' own ``TLRUCache`` does the same with
a heap of Python objects compared in Python: four times slower per insert.)

cachetools' caches are not thread-safe, so writes take a lock; reads do not:
they look up a plain dict that mirrors the cache, and record the key in a
bounded buffer that is replayed into the LRU order on the next write (the
read-buffer design of Caffeine). Under heavy contention a few recency updates
may be dropped; correctness of expiry and capacity is never affected.

Values are kept as the objects they are unless the ``Cache`` is given a
serializer, so a read returns the stored object itself: do not mutate it.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from cachetools import LRUCache

from ..errors import ConfigurationError, ValueTooLargeError
from .base import MISSING, Backend

__all__ = ["MemoryBackend"]

Entry = tuple[Any, float]  # (value, absolute expiry on the backend's timer)

if TYPE_CHECKING:
    _LRU = LRUCache[str, Entry]
else:
    _LRU = LRUCache


class _Store(_LRU):
    """An LRUCache that expires entries by a heap, keeps the readers' mirror in step, counts."""

    def __init__(self, maxsize: int, timer: Callable[[], float], mirror: dict[str, Entry]):
        super().__init__(maxsize)
        self.timer = timer
        self.mirror = mirror
        self.heap: list[tuple[float, str]] = []
        self.capacity_evictions = 0
        self.expirations = 0

    def __setitem__(self, key: str, entry: Entry) -> None:
        self.expire()  # expired entries leave before any live one is evicted for room
        super().__setitem__(key, entry)
        if entry[1] != math.inf:
            heapq.heappush(self.heap, (entry[1], key))
            if len(self.heap) > 2 * len(self.mirror) + 64:  # overwritten keys leave stale items
                self.heap = [(e[1], k) for k, e in self.mirror.items() if e[1] != math.inf]
                heapq.heapify(self.heap)

    def popitem(self) -> tuple[str, Entry]:
        key, entry = super().popitem()
        self.mirror.pop(key, None)
        self.capacity_evictions += 1
        return key, entry

    def expire(self) -> None:
        """Remove every entry whose expiry has passed, counting each once."""
        heap = self.heap
        if not heap:
            return
        now = self.timer()
        if now < heap[0][0]:
            return
        mirror = self.mirror
        while heap and not now < heap[0][0]:
            expires, key = heapq.heappop(heap)
            entry = mirror.get(key)
            if entry is not None and entry[1] == expires:  # still the entry that item was for
                LRUCache.__delitem__(self, key)
                del mirror[key]
                self.expirations += 1

    def clear(self) -> None:
        super().clear()
        self.heap.clear()


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
        if entry is None:
            return False
        del self._store[key]
        if not self._timer() < entry[1]:  # expired but not yet swept: it left by expiry
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
            self._store.expire()
            return len(self._store)

    def clear(self) -> None:
        """Drop every entry (all namespaces)."""
        with self._lock:
            self._store.clear()
            self._mirror.clear()
            self._reads.clear()
