"""Serve-stale: the last good value this process saw per key, for a failing backend or loader."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from cachetools import LRUCache

from ..backends.base import MISSING

__all__ = ["StaleValues"]


class StaleValues:
    """Up to ``maxsize`` last-seen values, each served for at most ``ttl`` s after it was seen."""

    def __init__(self, ttl: float, maxsize: int, timer: Callable[[], float]) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._timer = timer
        self._values: LRUCache[str, tuple[Any, float]] = LRUCache(maxsize)
        self._lock = threading.Lock()  # never held across I/O: fine for both kinds of cache

    def reset_lock(self) -> None:
        """In a forked child: a lock another thread of the parent held stays held."""
        self._lock = threading.Lock()

    def keep(self, full: str, value: Any) -> None:
        """Remember ``value`` as the last good value of ``full``."""
        with self._lock:
            self._values[full] = (value, self._timer())

    def forget(self, fulls: Iterable[str]) -> None:
        """Drop what is remembered for ``fulls`` (they were invalidated)."""
        with self._lock:
            for full in fulls:
                self._values.pop(full, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._values.clear()

    def get(self, full: str) -> Any:
        """The remembered value of ``full`` if at most ``ttl`` s old, else ``MISSING``."""
        with self._lock:
            entry = self._values.get(full)
        if entry is None or self._timer() - entry[1] > self.ttl:
            return MISSING
        return entry[0]
