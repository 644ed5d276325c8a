"""Eviction policies of the in-process store: which key leaves when it is full (LRU, W-TinyLFU).

A policy orders keys only; the store keeps the values and the expiry. The
store calls it under its lock: ``insert`` for a key it did not hold (and gets
back the key to evict, if the policy now holds more than ``maxsize``),
``access`` for a read hit or an overwrite, ``remove`` for a key that left for
any other reason (delete, expiry, a dropped prefix), ``clear``.

``TinyLfuPolicy`` is Caffeine's W-TinyLFU: new keys enter a small LRU
*window*; a key pushed out of the window is admitted to the *main* segmented
LRU (probation + protected) only if a count-min sketch says it is used more
often than the main's next victim. The window's share of the capacity is
tuned by hill climbing on the hit ratio, so recency-heavy workloads grow the
window (toward LRU) and frequency-heavy ones shrink it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Protocol

__all__ = ["POLICIES", "EvictionPolicy", "FrequencySketch", "LruPolicy", "TinyLfuPolicy"]


class EvictionPolicy(Protocol):
    """Orders the store's keys and names the one to evict; called under the store's lock."""

    def insert(self, key: str) -> str | None:
        """Track a new ``key``; return the key to evict if over capacity, else ``None``."""
        ...

    def access(self, key: str, hit: bool) -> None:
        """Record a use of a held ``key`` (``hit``: a read, not an overwrite)."""
        ...

    def remove(self, key: str) -> None:
        """Forget ``key`` (absent keys are ignored)."""
        ...

    def clear(self) -> None:
        """Forget every key."""
        ...


class LruPolicy:
    """Least recently used first."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.order: collections.OrderedDict[str, None] = collections.OrderedDict()

    def insert(self, key: str) -> str | None:
        """Track a new ``key`` as the most recent; return the least recent if over capacity."""
        order = self.order
        order[key] = None
        if len(order) > self.maxsize:
            return order.popitem(last=False)[0]
        return None

    def access(self, key: str, hit: bool) -> None:
        """Make ``key`` the most recent."""
        if key in self.order:
            self.order.move_to_end(key)

    def remove(self, key: str) -> None:
        """Forget ``key``."""
        self.order.pop(key, None)

    def clear(self) -> None:
        """Forget every key."""
        self.order.clear()


_HALVE = bytes(i >> 1 for i in range(256))
_MAX_COUNT = 15


class FrequencySketch:
    """A count-min sketch of recent use: four rows of saturating 4-bit counts, halved periodically.

    Halving every ``10 * maxsize`` increments ages old popularity away, so a
    key that was hot an hour ago does not keep its place for ever.
    """

    def __init__(self, maxsize: int) -> None:
        width = 16
        while width < maxsize and width < 1 << 24:
            width <<= 1
        self.mask = width - 1
        self.width = width
        self.table = bytearray(4 * width)
        self.sample_size = 10 * maxsize
        self.additions = 0

    def _slots(self, key: str) -> tuple[int, int, int, int]:
        h = hash(key)  # str hashes are SipHash: well mixed; rows take different bit slices
        mask, width = self.mask, self.width
        return (
            h & mask,
            width + ((h >> 13) & mask),
            2 * width + ((h >> 26) & mask),
            3 * width + ((h >> 39) & mask),
        )

    def frequency(self, key: str) -> int:
        """Return the estimated recent use count of ``key`` (0 to 15)."""
        t = self.table
        a, b, c, d = self._slots(key)
        return min(t[a], t[b], t[c], t[d])

    def increment(self, key: str) -> None:
        """Count one use of ``key``."""
        t = self.table
        added = False
        for i in self._slots(key):
            if t[i] < _MAX_COUNT:
                t[i] += 1
                added = True
        if added:
            self.additions += 1
            if self.additions >= self.sample_size:
                self.table = bytearray(t.translate(_HALVE))
                self.additions //= 2

    def clear(self) -> None:
        """Forget every count."""
        self.table = bytearray(len(self.table))
        self.additions = 0


_STEP = 0.0625  # Caffeine's hill climber: first step, 6.25 % of the capacity
_DECAY = 0.98  # each step 2 % smaller than the last ...
_RESTART = 0.05  # ... until the hit ratio moves by 5 points: the workload changed, step big again


class TinyLfuPolicy:
    """W-TinyLFU with an adaptive window: LRU window, segmented LRU main, frequency admission."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.window: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.probation: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.protected: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.sketch = FrequencySketch(maxsize)
        self.window_max = max(1, round(0.01 * maxsize))
        self._set_main()
        self.hits = 0
        self.misses = 0
        self.previous_hit_ratio = 0.0
        self.step = -_STEP * maxsize

    def _set_main(self) -> None:
        self.protected_max = int(0.8 * (self.maxsize - self.window_max))

    def __len__(self) -> int:
        return len(self.window) + len(self.probation) + len(self.protected)

    def insert(self, key: str) -> str | None:
        """Track a new ``key`` in the window; return the key evicted for it, if any."""
        self.sketch.increment(key)
        self.misses += 1
        window = self.window
        window[key] = None
        candidate = None
        if len(window) > self.window_max:
            candidate = window.popitem(last=False)[0]
            self.probation[candidate] = None
        victim = self._evict(candidate) if len(self) > self.maxsize else None
        if self.hits + self.misses >= self.sketch.sample_size:
            self._climb()
        return victim

    def _evict(self, candidate: str | None) -> str:
        probation = self.probation
        victim = next(iter(probation), None)
        if victim is None or victim == candidate:
            victim = next(iter(self.protected), None)
        if victim is None:  # the main segment is empty: the window holds everything
            return self.window.popitem(last=False)[0]
        if candidate is not None and victim != candidate:
            sketch = self.sketch
            if sketch.frequency(candidate) <= sketch.frequency(victim):
                victim = candidate  # not used more often than what it would replace: rejected
        self.remove(victim)
        return victim

    def access(self, key: str, hit: bool) -> None:
        """Count a use of ``key`` and move it up its segment (probation -> protected)."""
        if hit:
            self.hits += 1
        self.sketch.increment(key)
        if key in self.window:
            self.window.move_to_end(key)
        elif key in self.probation:
            del self.probation[key]
            protected = self.protected
            protected[key] = None
            if len(protected) > self.protected_max:
                self.probation[protected.popitem(last=False)[0]] = None
        elif key in self.protected:
            self.protected.move_to_end(key)

    def remove(self, key: str) -> None:
        """Forget ``key``."""
        if self.window.pop(key, 0) is None:
            return
        if self.probation.pop(key, 0) is None:
            return
        self.protected.pop(key, None)

    def clear(self) -> None:
        """Forget every key and count (the window size learned is kept)."""
        self.window.clear()
        self.probation.clear()
        self.protected.clear()
        self.sketch.clear()

    def _climb(self) -> None:
        """Move the window size one step in the direction that last raised the hit ratio."""
        requests = self.hits + self.misses
        ratio = self.hits / requests
        change = ratio - self.previous_hit_ratio
        amount = self.step if change >= 0 else -self.step
        if abs(change) >= _RESTART:
            self.step = _STEP * self.maxsize * (1 if amount >= 0 else -1)
        else:
            self.step = _DECAY * amount
        self.previous_hit_ratio = ratio
        self.hits = self.misses = 0
        delta = int(amount)
        if delta > 0:
            self._grow_window(delta)
        elif delta < 0:
            self._shrink_window(-delta)

    def _grow_window(self, n: int) -> None:
        n = min(n, self.maxsize - 1 - self.window_max)
        if n <= 0:
            return
        self.window_max += n
        self._set_main()
        protected, probation, window = self.protected, self.probation, self.window
        while len(protected) > self.protected_max:
            probation[protected.popitem(last=False)[0]] = None
        for _ in range(n):  # the main's least recent keys fill the window's new room
            source = probation or protected
            if not source:
                break
            window[source.popitem(last=False)[0]] = None

    def _shrink_window(self, n: int) -> None:
        n = min(n, self.window_max - 1)
        if n <= 0:
            return
        self.window_max -= n
        self._set_main()
        window, probation = self.window, self.probation
        while len(window) > self.window_max:
            probation[window.popitem(last=False)[0]] = None


#: Policy names accepted by ``MemoryBackend(policy=...)`` and ``memory://?policy=``.
POLICIES: dict[str, Callable[[int], EvictionPolicy]] = {"lru": LruPolicy, "tinylfu": TinyLfuPolicy}
