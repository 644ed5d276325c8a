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
tuned as the workload runs (two miniature caches on sampled keys show which
way raises the hit ratio), so recency-heavy workloads grow the window (toward
LRU) and frequency-heavy or looping ones shrink it.
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


_COUNT_MAX = 63  # counts saturate here (bytes, not Caffeine's 4-bit nibbles: finer at the margin)
_INCREMENT = bytes(min(i + 1, _COUNT_MAX) for i in range(256))
_HALVE = bytes(i >> 1 for i in range(256))
_WIDTH = 4  # counters per row per entry of capacity: few collisions on small caches
_AGE = 40  # halve every count after this many increments per entry of capacity


class FrequencySketch:
    """A count-min sketch of recent use: four rows of saturating counts, halved periodically.

    Halving every count each ``40 * maxsize`` increments ages old popularity
    away, so a key that was hot an hour ago does not keep its place for ever.
    """

    def __init__(self, maxsize: int) -> None:
        width = 16
        while width < _WIDTH * maxsize and width < 1 << 24:
            width <<= 1
        self.mask = width - 1
        self.rows = [bytearray(width) for _ in range(4)]
        self.sample_size = _AGE * maxsize
        self.additions = 0

    # str hashes are SipHash, well mixed: each row indexes by its own slice of the bits

    def frequency(self, key: str) -> int:
        """Return the estimated recent use count of ``key``."""
        h, m = hash(key), self.mask
        r0, r1, r2, r3 = self.rows
        return min(r0[h & m], r1[(h >> 13) & m], r2[(h >> 26) & m], r3[(h >> 39) & m])

    def increment(self, key: str) -> None:
        """Count one use of ``key``."""
        h, m, inc = hash(key), self.mask, _INCREMENT
        r0, r1, r2, r3 = self.rows
        i = h & m
        r0[i] = inc[r0[i]]
        i = (h >> 13) & m
        r1[i] = inc[r1[i]]
        i = (h >> 26) & m
        r2[i] = inc[r2[i]]
        i = (h >> 39) & m
        r3[i] = inc[r3[i]]
        self.additions += 1
        if self.additions >= self.sample_size:
            self.rows = [bytearray(row.translate(_HALVE)) for row in self.rows]
            self.additions //= 2

    def clear(self) -> None:
        """Forget every count."""
        self.rows = [bytearray(len(row)) for row in self.rows]
        self.additions = 0


# The window's share is tuned by two miniature caches (keys only) that replay the
# same hash-sampled requests with a window a little smaller and a little larger
# than the real one: they see identical requests, so the requests only one of
# them answers measure which way is better without the noise of comparing one
# period of the workload with the next (Caffeine's hill climber does that, and
# converged too slowly on recency-heavy traces; see docs/memory.md).
_MINI = 128  # each miniature holds 128 to 255 keys (the whole capacity below that)
_PERIOD = 5  # sampled requests per decision, in miniature capacities
_DELTA = 0.05  # the miniatures' windows: the real share -/+ 5 % of the capacity
_STEP = (0.01, 0.1, 0.5)  # smallest, first, largest move of the share
_Z = 2.0  # move only if the difference is over two standard deviations of a fair coin


class TinyLfuPolicy:
    """W-TinyLFU with an adaptive window: LRU window, segmented LRU main, frequency admission."""

    def __init__(
        self, maxsize: int, adaptive: bool = True, sketch: FrequencySketch | None = None
    ) -> None:
        self.maxsize = maxsize
        self.window: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.probation: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.protected: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.size = 0  # keys in the three segments
        # a miniature reads its parent's sketch (it sees a sample of the same keys) and never
        # counts: one count per request, not three
        self.counts = sketch is None
        self.sketch = FrequencySketch(maxsize) if sketch is None else sketch
        self.window_max = 1
        self.protected_max = 0
        self.fraction = 0.01
        self.minis: tuple[TinyLfuPolicy, TinyLfuPolicy] | None = None
        if adaptive and maxsize >= 4:
            rate = 1
            while maxsize // (rate * 2) >= _MINI:
                rate *= 2
            self.sample_mask = rate - 1
            size = maxsize // rate
            self.minis = (
                TinyLfuPolicy(size, False, self.sketch),
                TinyLfuPolicy(size, False, self.sketch),
            )
            self.mini_wins = [0, 0]  # requests only the smaller / only the larger window hit
            self.mini_requests = 0
            self.period = _PERIOD * size
            self.step = _STEP[1]
        self._apply_fraction()

    def _apply_fraction(self) -> None:
        self._resize_window(self.fraction)
        if self.minis is not None:
            low, high = self.minis
            low._resize_window(max(0.0, self.fraction - _DELTA))
            high._resize_window(min(1.0, self.fraction + _DELTA))

    def _resize_window(self, fraction: float) -> None:
        """Give the window ``fraction`` of the capacity (at least one entry, the main the rest)."""
        target = min(max(1, round(fraction * self.maxsize)), max(1, self.maxsize - 1))
        self.window_max = target
        self.protected_max = int(0.8 * (self.maxsize - target))
        protected, probation, window = self.protected, self.probation, self.window
        while len(protected) > self.protected_max:
            probation[protected.popitem(last=False)[0]] = None
        while len(window) > target:
            probation[window.popitem(last=False)[0]] = None
        while len(window) < target and (probation or protected):
            source = probation or protected  # the main's least recent keys fill the window
            window[source.popitem(last=False)[0]] = None

    def __len__(self) -> int:
        return self.size

    def _sample(self, key: str) -> None:
        """Replay a sampled request into both miniatures; move the window toward the winner."""
        minis = self.minis
        assert minis is not None
        low_hit = minis[0].request(key)
        if minis[1].request(key) != low_hit:
            self.mini_wins[not low_hit] += 1
        self.mini_requests += 1
        if self.mini_requests < self.period:
            return
        low, high = self.mini_wins
        self.mini_wins = [0, 0]
        self.mini_requests = 0
        if abs(high - low) <= _Z * (high + low) ** 0.5:
            return
        direction = 1.0 if high > low else -1.0
        if (self.step > 0) == (direction > 0):  # the same way again: a longer stride
            magnitude = min(abs(self.step) * 2, _STEP[2])
        else:
            magnitude = max(abs(self.step) / 2, _STEP[0])
        self.step = direction * magnitude
        self.fraction = min(max(self.fraction + self.step, 0.0), 1.0)
        self._apply_fraction()

    def request(self, key: str) -> bool:
        """Look ``key`` up as a cache would (access or insert); return whether it was held."""
        if key in self.window or key in self.probation or key in self.protected:
            self.access(key, True)
            return True
        self.insert(key)
        return False

    def insert(self, key: str) -> str | None:
        """Track a new ``key`` in the window; return the key evicted for it, if any."""
        if self.minis is not None and not (hash(key) >> 56) & self.sample_mask:
            self._sample(key)
        if self.counts:
            self.sketch.increment(key)
        window = self.window
        window[key] = None
        candidate = None
        if len(window) > self.window_max:
            candidate = window.popitem(last=False)[0]
            self.probation[candidate] = None
        self.size += 1
        return self._evict(candidate) if self.size > self.maxsize else None

    def _evict(self, candidate: str | None) -> str:
        """Remove and return the main's victim, or the candidate if it is not used more often."""
        victim = next(iter(self.probation), None)
        if victim == candidate:  # the candidate is all probation holds (or both are None)
            victim = next(iter(self.protected), None)
        if victim is None:  # nothing else to weigh it against (a capacity of one or two)
            victim = candidate if candidate is not None else next(iter(self.window))
        elif candidate is not None:
            sketch = self.sketch
            if sketch.frequency(candidate) <= sketch.frequency(victim):
                victim = candidate  # not used more often than what it would replace: rejected
        self.remove(victim)
        return victim

    def access(self, key: str, hit: bool) -> None:
        """Count a use of ``key`` and move it up its segment (probation -> protected)."""
        if hit and self.minis is not None and not (hash(key) >> 56) & self.sample_mask:
            self._sample(key)
        if self.counts:
            self.sketch.increment(key)
        protected = self.protected
        if key in protected:
            protected.move_to_end(key)
        elif key in self.probation:
            del self.probation[key]
            protected[key] = None
            if len(protected) > self.protected_max:
                self.probation[protected.popitem(last=False)[0]] = None
        elif key in self.window:
            self.window.move_to_end(key)

    def remove(self, key: str) -> None:
        """Forget ``key``."""
        if (
            self.window.pop(key, 0) is None
            or self.probation.pop(key, 0) is None
            or self.protected.pop(key, 0) is None
        ):
            self.size -= 1

    def clear(self) -> None:
        """Forget every key and count (the window size learned is kept)."""
        self.size = 0
        self.window.clear()
        self.probation.clear()
        self.protected.clear()
        if self.counts:
            self.sketch.clear()
        for mini in self.minis or ():
            mini.clear()


#: Policy names accepted by ``MemoryBackend(policy=...)`` and ``memory://?policy=``.
POLICIES: dict[str, Callable[[int], EvictionPolicy]] = {"lru": LruPolicy, "tinylfu": TinyLfuPolicy}
