"""In-process backend: a dict of entries, an eviction policy (LRU or W-TinyLFU), an expiry heap.

The policy (``eviction.py``) decides what to evict for capacity; a heap of
``(expiry, key)`` tuples removes expired entries before that, and counts them
apart, exactly. A key that leaves before its heap item comes up (overwritten,
deleted, evicted, dropped) leaves a stale item behind; stale items at the top
are popped at once, and the heap is rebuilt from the live entries whenever it
holds more than twice as many items as there are entries, so churn never
grows it past that bound.

Writes take a lock; reads do not: they look up the plain dict of entries and
record the key in a bounded buffer that is replayed into the policy on the
next write (the read-buffer design of Caffeine). Under heavy contention a few
recency updates may be dropped; correctness of expiry and capacity is never
affected.

Values are kept as the objects they are unless the ``Cache`` is given a
serializer, so a read returns the stored object itself: do not mutate it.
"""

from __future__ import annotations

import collections
import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError, ValueTooLargeError
from .base import MISSING, Backend
from .eviction import POLICIES, EvictionPolicy

__all__ = ["MemoryBackend"]

Entry = tuple[Any, float]  # (value, absolute expiry on the backend's timer)

_SLACK = 16  # stale heap items allowed beyond twice the entries (tiny stores rebuild less)


class _Store:
    """Entries, their eviction policy and their expiry heap, with exact eviction counts.

    Every method runs under the backend's lock; ``data`` alone is read without it.
    """

    def __init__(self, policy: EvictionPolicy, timer: Callable[[], float]) -> None:
        self.data: dict[str, Entry] = {}
        self.policy = policy
        self.timer = timer
        self.heap: list[tuple[float, str]] = []
        self.capacity_evictions = 0
        self.expirations = 0

    def put(self, key: str, entry: Entry) -> None:
        """Store ``entry`` (not yet expired) under ``key``, evicting for room if needed."""
        self.expire()  # expired entries leave before any live one is evicted for room
        data = self.data
        old = data.get(key)
        data[key] = entry
        if old is None:
            victim = self.policy.insert(key)
            if victim is not None:
                del data[victim]
                self.capacity_evictions += 1
        else:
            self.policy.access(key, False)
        expires = entry[1]
        if expires != math.inf and (old is None or old[1] != expires):
            heapq.heappush(self.heap, (expires, key))
        self.tidy()

    def remove(self, key: str) -> Entry | None:
        """Remove ``key`` (counted by the caller if at all); return its entry."""
        entry = self.data.pop(key, None)
        if entry is not None:
            self.policy.remove(key)
        return entry

    def expire(self) -> None:
        """Remove every entry whose expiry has passed, counting each once."""
        heap = self.heap
        if not heap:
            return
        now = self.timer()
        if now < heap[0][0]:
            return
        data, policy = self.data, self.policy
        while heap and not now < heap[0][0]:
            expires, key = heapq.heappop(heap)
            entry = data.get(key)
            if entry is not None and entry[1] == expires:  # still the entry that item was for
                del data[key]
                policy.remove(key)
                self.expirations += 1

    def tidy(self) -> None:
        """Drop stale items from the heap's top; rebuild it if stale items outnumber live ones."""
        heap, data = self.heap, self.data
        while heap:
            expires, key = heap[0]
            entry = data.get(key)
            if entry is not None and entry[1] == expires:
                break
            heapq.heappop(heap)
        if len(heap) > 2 * len(data) + _SLACK:
            self.heap = [(e[1], k) for k, e in data.items() if e[1] != math.inf]
            heapq.heapify(self.heap)

    def clear(self) -> None:
        """Forget every entry (not counted as evictions)."""
        self.data.clear()
        self.policy.clear()
        self.heap = []


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"MemoryBackend {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"MemoryBackend {name} must be >= {minimum}, got {value}")
    return value


_URL_INTS = ("maxsize", "max_value_size", "read_buffer")
_OPTIONS = frozenset((*_URL_INTS, "timer", "policy"))


class MemoryBackend(Backend):
    """A bounded in-process store with per-entry TTL; ``timer`` is injectable for tests.

    ``policy`` is ``"lru"`` (the default) or ``"tinylfu"`` (W-TinyLFU: better
    hit ratios on skewed and looping workloads, see docs/memory.md).
    """

    schemes = ("memory",)
    local = True

    def __init__(
        self,
        maxsize: int = 10_000,
        *,
        timer: Callable[[], float] = time.monotonic,
        max_value_size: int | None = None,
        read_buffer: int = 4096,
        policy: str = "lru",
    ) -> None:
        self.maxsize = _check_int("maxsize", maxsize, 1)
        if max_value_size is not None:
            _check_int("max_value_size", max_value_size, 0)
        _check_int("read_buffer", read_buffer, 1)
        if not callable(timer):
            raise ConfigurationError(f"MemoryBackend timer must be callable, got {timer!r}")
        if not isinstance(policy, str) or policy.lower() not in POLICIES:
            raise ConfigurationError(
                f"MemoryBackend policy must be one of {', '.join(POLICIES)}, got {policy!r}"
            )
        self.policy = policy.lower()
        self.max_value_size = max_value_size
        self._timer = timer
        self._store = _Store(POLICIES[self.policy](maxsize), timer)
        self._mirror = self._store.data
        self._lock = threading.Lock()
        self._reads: collections.deque[str] = collections.deque(maxlen=read_buffer)
        self._touch = self._reads.append

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryBackend:
        """Build from ``memory://?maxsize=10000&policy=tinylfu``."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}
        kwargs: dict[str, Any] = {}
        for name in _URL_INTS:
            if name in query:
                raw = query.pop(name)
                try:
                    kwargs[name] = int(raw)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"memory:// {name} must be an integer, got {raw!r}"
                    ) from exc
        if "policy" in query:
            kwargs["policy"] = query.pop("policy")
        query.pop("serializer", None)  # consumed by Cache.from_url
        if query:
            raise ConfigurationError(f"unknown memory:// options: {', '.join(sorted(query))}")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigurationError(f"unknown MemoryBackend options: {', '.join(sorted(unknown))}")
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
        reads, data, access = self._reads, self._mirror, self._store.policy.access
        while reads:
            key = reads.popleft()
            if key in data:
                access(key, True)

    def _entry(self, value: Any, ttl: float | None) -> Entry:
        limit = self.max_value_size
        if limit is not None and isinstance(value, (bytes, bytearray)) and len(value) > limit:
            raise ValueTooLargeError(len(value), limit)
        return (value, math.inf if ttl is None else self._timer() + ttl)

    def _put(self, key: str, entry: Entry) -> None:
        if not self._timer() < entry[1]:  # already expired (ttl <= 0): drop any old entry
            self._remove(key)
            return
        self._store.put(key, entry)

    def _remove(self, key: str) -> bool:
        entry = self._store.remove(key)
        if entry is None:
            return False
        self._store.tidy()
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

    def drop_prefix(self, prefix: str) -> int:
        """Remove every live entry whose key starts with ``prefix``; return how many."""
        with self._lock:
            store = self._store
            store.expire()  # what has already expired is counted as such, not dropped
            keys = [key for key in store.data if key.startswith(prefix)]
            if keys:
                for key in keys:
                    store.remove(key)
                # their heap items go now too (a cleared namespace frees all its memory)
                store.heap = [item for item in store.heap if not item[1].startswith(prefix)]
                heapq.heapify(store.heap)
            return len(keys)

    def eviction_counts(self) -> tuple[int, int]:
        """Return ``(capacity_evictions, expirations)``, sweeping expired entries first."""
        with self._lock:
            self._store.expire()
            return self._store.capacity_evictions, self._store.expirations

    def __len__(self) -> int:
        with self._lock:
            self._store.expire()
            return len(self._store.data)

    def clear(self) -> None:
        """Drop every entry (all namespaces)."""
        with self._lock:
            self._store.clear()
            self._reads.clear()
