"""Exact counters for the hot path (no lock per event) and the ``Stats`` snapshot.

A counter is an ``itertools.count``: ``next()`` on it is a single C call, so
increments from many threads are never lost and never take a Python lock.
Its value is read back (at scrape or ``stats()`` time) from its ``repr``.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from dataclasses import dataclass, field

__all__ = ["DURATION_BUCKETS", "Counter", "Histogram", "Stats"]


class Counter:
    """A monotonically increasing integer; ``incr()`` is lock-free and exact."""

    __slots__ = ("_count", "incr")

    def __init__(self) -> None:
        self._count = itertools.count()
        #: Add one (a bound C method: call it, do not wrap it).
        self.incr = self._count.__next__

    @property
    def value(self) -> int:
        """The number of increments so far."""
        return int(repr(self._count)[6:-1])  # "count(N)"


#: Upper bounds (seconds) of the load-duration histogram buckets.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Cumulative-bucket histogram of durations (loads are not the hot path, so a lock is fine)."""

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        i = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], float]:
        """Return ``(per-bucket counts with +Inf last, sum)``; counts are not cumulative."""
        with self._lock:
            return list(self._counts), self._sum


@dataclass(frozen=True)
class Stats:
    """A snapshot of one cache's counters."""

    namespace: str
    hits: int = 0
    misses: int = 0
    loads: int = 0
    load_failures: int = 0
    coalesced: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    evictions_capacity: int = 0
    evictions_expired: int = 0
    evictions_invalidated: int = 0
    stale_served: int = 0
    #: Hits past expiry answered with the old value while it reloads (stale-while-revalidate).
    stale_revalidated: int = 0
    #: Background reloads (early refresh and stale-while-revalidate) by outcome; ``skipped``
    #: counts the ones not started because the background queue was full.
    refreshes_started: int = 0
    refreshes_completed: int = 0
    refreshes_failed: int = 0
    refreshes_skipped: int = 0
    circuit_open: bool = False
    errors_by_operation: dict[str, int] = field(default_factory=dict)

    @property
    def evictions(self) -> int:
        """Entries removed by the backend, for capacity or expiry."""
        return self.evictions_capacity + self.evictions_expired

    @property
    def lookups(self) -> int:
        """Hits plus misses."""
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        """Hits / lookups, or 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
