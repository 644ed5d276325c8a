"""The stale-read detector: whether each value read had already been superseded by a write."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["StaleReadDetector"]


class StaleReadDetector:
    """Compares each value read with the source's committed version at that moment.

    The replayer reports every finished write (``committed``) and every read
    (``observe``). Versions only go up, so a write reported late (after a newer
    one of the same key) changes nothing. Each report takes a sequence number
    under a lock; a reader takes the current one (``mark``) before it starts.
    A read is **stale** when the version it returned had already been
    superseded by a write reported *before the read started* (``since``); a
    write that overlaps the read may be ordered either way, so it never makes
    the read stale. Staleness is the time from that supersession to the start
    of the read. With ``since=None`` (one thread) the read starts "now".
    """

    def __init__(self, clock: Callable[[], float], initial_version: int = 0) -> None:
        self._clock = clock
        self._initial = initial_version
        self._lock = threading.Lock()
        self._seq = 0
        self._version: dict[int, int] = {}
        # (key, version) -> (sequence number, time) of the report that superseded it
        self._superseded: dict[tuple[int, int], tuple[int, float]] = {}
        self._counts_lock = threading.Lock()
        self.reads = 0
        self.stale = 0
        self.max_staleness = 0.0

    def committed(self, key: int, version: int) -> None:
        """Record that a write of ``version`` of ``key`` has finished (after its commit)."""
        with self._lock:
            self._seq += 1
            old = self._version.get(key, self._initial)
            if version <= old:
                return  # an older write reported after a newer one
            stamp = (self._seq, self._clock())
            for v in range(old, version):
                self._superseded.setdefault((key, v), stamp)
            self._version[key] = version

    def mark(self) -> int:
        """Return the sequence number a read starting now compares against."""
        return self._seq

    def truth(self, key: int) -> int:
        """Return the committed version of ``key``."""
        return self._version.get(key, self._initial)

    def observe(
        self, key: int, version: int, *, since: int | None = None, at: float | None = None
    ) -> bool:
        """Record a read that returned ``version``; return whether it was stale.

        ``since`` is ``mark()`` and ``at`` the clock, both taken when the read started.
        """
        hit = self._superseded.get((key, version))
        stale = hit is not None and hit[0] <= (self._seq if since is None else since)
        with self._counts_lock:
            self.reads += 1
            if stale:
                assert hit is not None
                self.stale += 1
                age = (self._clock() if at is None else at) - hit[1]
                self.max_staleness = max(self.max_staleness, age)
        return stale
