"""Freshness in ``cachekit bench``: the settings compared, and what hot keys saw around expiry.

A ``Freshness`` is one setting of the freshness dimension (plain TTL, early
refresh with XFetch ``beta``, stale-while-revalidate ``S`` seconds, or both).
A ``FreshProbe`` watches one run: it wraps the loader (which key, on which
thread, how long), tells the replayer whether a read waited for a load, keeps
the reads of the hottest keys, and at the end computes:

- **hot p99 around expiry**: the p99 latency of the hot keys' reads around
  each expiry of an entry: if a reader had to load the key because of it (its
  load began at most one load duration before the expiry and less than half a
  TTL after, with no write of the key in between), the reads from that load's
  start to its end, and the readers that missed just before it began and
  waited for it; otherwise (a background
  reload replaced the entry, or a stale value was served) the reads from the
  expiry to one load duration after it. Always the first read after the
  expiry too (the one that pays for a plain TTL's expiry, however sparse the
  reads). The window follows the reader's load rather than the nominal expiry
  because the entry leaves a little early on the simulated clock (the cache's
  clock runs up to a load ahead in the thread that loads) and a little late on
  the real one (the store lags the load's end); the hits around it would only
  dilute the figure by the read rate;
- **loads per hot key per TTL**: loader calls (foreground and background) per
  hot key per TTL of the run's window (about 1 for a key read more than once
  per TTL);
- **hot waits per expiry**: how many of those reads waited for a load (ran the
  loader, or arrived while a reader's load of that key ran), per expiry; the
  cold start (the key's first load) is not counted.

An entry's expiry (counted from the end of the load that stored it) counts
when it was reached: an entry that a write replaced or dropped, or that a
reader found gone, more than one load before its expiry does not count; one
that a background reload replaced does (that is the expiry its readers were
spared).

On the simulated clock a load takes its real time plus ``load_ms`` simulated
milliseconds: the cache's clock (``FreshProbe.timer``) runs that much ahead in
the thread that loads, for the rest of the operation, so XFetch's delta and the
entry's expiry include it, while the world's clock does not move. A read that
loads is charged ``load_ms`` on top of its measured time; a read that arrives
while a load of its key started by an earlier read is still running (in
simulated time) waited for it, and is charged the rest. Background reloads run
on the cache's pool; the replayer waits for them before the next operation, so
a run is deterministic apart from XFetch's random draws.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..policies import TTL
from .workload import SimClock, percentile

__all__ = [
    "FRESHNESS_KINDS",
    "PLAIN",
    "FreshProbe",
    "Freshness",
    "freshness_grid",
    "reloads_pending",
]

T = TypeVar("T")

#: The values of ``--freshness``.
FRESHNESS_KINDS: tuple[str, ...] = ("none", "early", "swr", "early+swr")


@dataclass(frozen=True)
class Freshness:
    """One freshness setting: XFetch ``early_refresh`` beta and ``stale_while_revalidate`` s."""

    early_refresh: float = 0.0
    stale_while_revalidate: float = 0.0

    @property
    def on(self) -> bool:
        """Whether entries carry freshness data (anything but a plain TTL)."""
        return bool(self.early_refresh or self.stale_while_revalidate)

    @property
    def label(self) -> str:
        """``-``, ``early=1``, ``swr=60s`` or ``early=1+swr=60s``."""
        parts = []
        if self.early_refresh:
            parts.append(f"early={self.early_refresh:g}")
        if self.stale_while_revalidate:
            parts.append(f"swr={self.stale_while_revalidate:g}s")
        return "+".join(parts) or "-"

    def ttl(self, seconds: float | None) -> TTL:
        """The ``TTL`` of ``seconds`` with this setting (a TTL of None is always plain)."""
        if seconds is None or not self.on:
            return TTL(seconds)
        return TTL(
            seconds,
            early_refresh=self.early_refresh,
            stale_while_revalidate=self.stale_while_revalidate,
        )


PLAIN = Freshness()


def freshness_grid(
    kinds: Sequence[str], betas: Sequence[float], windows: Sequence[float]
) -> tuple[Freshness, ...]:
    """The settings to compare: each kind, with every beta and every stale window given."""
    out: list[Freshness] = []
    for kind in kinds:
        if kind not in FRESHNESS_KINDS:
            raise ValueError(
                f"unknown freshness {kind!r} (choose from {', '.join(FRESHNESS_KINDS)})"
            )
        b = betas if "early" in kind else [0.0]
        w = windows if "swr" in kind else [0.0]
        out += [Freshness(x, y) for x in b for y in w]
    for f in out:
        if f.early_refresh < 0 or f.stale_while_revalidate < 0:
            raise ValueError("early refresh beta and stale-while-revalidate must be >= 0")
    return tuple(dict.fromkeys(out))


def reloads_pending(cache: Any) -> bool:
    """Whether ``cache`` has background reloads started and not yet over."""
    return bool(cache.reloads_pending())


class FreshProbe:
    """Watches one run's loads and hot-key reads; see the module docstring."""

    def __init__(self, hot: Iterable[int], sim: SimClock | None, load_ms: float = 0.0) -> None:
        self.hot = frozenset(hot)
        self.sim = sim
        self.extra = load_ms / 1000.0
        #: the operation being replayed (simulated clock): a load's offset lasts that long
        self.op = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._offsets: dict[int, tuple[int, float]] = {}  # thread -> (op, seconds ahead)
        self.loads: Counter[int] = Counter()
        self.background_loads = 0
        self._busy_until: dict[int, float] = {}  # simulated: a read's load of key runs until
        self._inflight: Counter[int] = Counter()  # real: reads' loads of key running now
        self._fg_started: Counter[int] = Counter()  # real: reads' loads of key started
        self._first_end: dict[int, float] = {}  # key -> when its first load ended
        # hot key -> [(time an entry was stored, the duration of the load that made it,
        # whether a background reload stored it)]
        self._stores: dict[int, list[tuple[float, float, bool]]] = defaultdict(list)
        # hot key -> times a reader's load began or a write replaced or dropped its entry
        self._replaced: dict[int, list[float]] = defaultdict(list)
        # hot key -> (start, end) of the loads readers ran, and the times of writes
        self._fg_loads: dict[int, list[tuple[float, float]]] = defaultdict(list)
        self._writes: dict[int, list[float]] = defaultdict(list)
        # hot key -> [(time the read started, latency s, waited, cold)]
        self._reads: dict[int, list[tuple[float, float, bool, bool]]] = defaultdict(list)

    # ------------------------------------------------------------ clocks

    def timer(self) -> float:
        """The cache's clock on the simulated clock: ahead by the load this thread just ran."""
        assert self.sim is not None
        now = self.sim.now
        off = self._offsets.get(threading.get_ident())
        return now + off[1] if off is not None and off[0] == self.op else now

    def now(self) -> float:
        """The replayer's clock: simulated seconds, or ``perf_counter``."""
        return self.sim.now if self.sim is not None else time.perf_counter()

    # ------------------------------------------------------------ loads

    def replaying(self) -> None:
        """Mark the calling thread as a replay thread (its loads make a reader wait)."""
        self._local.replay = True

    def wrap(self, load: Callable[[int], T]) -> Callable[[int], T]:
        """``load`` timed and counted per key, foreground (a reader's) or background."""
        sim, extra, local = self.sim, self.extra, self._local
        perf = time.perf_counter

        @functools.wraps(load)  # the cache's key template names load's parameter
        def timed(key: int) -> T:
            fg = getattr(local, "replay", False)
            if fg and sim is None:
                with self._lock:
                    self._inflight[key] += 1
                    self._fg_started[key] += 1
            t0 = perf()
            begin = sim.now if sim is not None else t0
            try:
                if extra and sim is None:
                    time.sleep(extra)  # a slower source, for real
                return load(key)
            finally:
                took = perf() - t0
                if sim is not None:
                    took += extra
                    self._offsets[threading.get_ident()] = (self.op, took)
                    end = sim.now + took
                    if fg:
                        self._busy_until[key] = end
                        local.charge = extra
                else:
                    end = perf()
                with self._lock:
                    if fg and sim is None:
                        self._inflight[key] -= 1
                    self.loads[key] += 1
                    if not fg:
                        self.background_loads += 1
                    self._first_end.setdefault(key, end)
                    if key in self.hot:
                        self._stores[key].append((end, took, not fg))
                        if fg:  # a reader found the entry gone when it began
                            self._replaced[key].append(begin)
                            self._fg_loads[key].append((begin, end))
                if fg:
                    local.loaded = True

        return timed

    def written(self, key: int, stores: bool) -> None:
        """A write through the cache stored (write-through) or dropped (cache-aside) ``key``."""
        if key in self.hot:
            t = self.now()
            with self._lock:
                self._replaced[key].append(t)
                self._writes[key].append(t)
                if stores:
                    self._stores[key].append((t, 0.0, False))

    # ------------------------------------------------------------ reads

    def start_read(self, key: int) -> tuple[float, int, bool, float]:
        """Before a hot read: its start time, what was loading then, when the key first loaded."""
        self._local.loaded = False
        self._local.charge = 0.0
        busy = self._inflight[key] > 0 if self.sim is None else False
        first = self._first_end.get(key, math.inf)
        return self.now(), self._fg_started[key], busy, first

    def end_read(self, key: int, start: tuple[float, int, bool, float], latency: float) -> None:
        """After a hot read: record its latency (plus the simulated wait) and whether it waited.

        A wait for the key's first load (or one that began before it ended) is the cold
        start, not counted as a wait.
        """
        t, started, busy, first = start
        local = self._local
        waited = bool(getattr(local, "loaded", False))
        charge = float(getattr(local, "charge", 0.0)) if waited else 0.0
        if self.sim is not None:
            until = self._busy_until.get(key, -math.inf)
            if not waited and until > t:  # arrived while an earlier reader's load ran
                waited, charge = True, until - t
        elif not waited:
            waited = busy or self._fg_started[key] > started
        cold = waited and t < first
        with self._lock:
            self._reads[key].append((t, latency + charge, waited, cold))

    # ------------------------------------------------------------ figures

    def figures(self, ttl: float | None, window: float, cached: bool) -> dict[str, Any]:
        """The run's freshness figures (None where they do not apply)."""
        n = len(self.hot)
        hot_loads = sum(self.loads[k] for k in self.hot)
        out: dict[str, Any] = {
            "hot_keys": n,
            "hot_reads": sum(len(v) for v in self._reads.values()),
            "hot_loads": hot_loads,
            "background_loads": self.background_loads,
            "hot_waits": 0,
            "loads_per_key_per_ttl": None,
            "hot_near_expiry_reads": 0,
            "hot_p99_near_expiry_us": None,
            "expiries": 0,
        }
        if not cached or ttl is None or n == 0:
            return out
        if window > 0:
            out["loads_per_key_per_ttl"] = hot_loads / (n * window / ttl)
        near: list[float] = []
        expiries = waits = 0
        for key, reads in self._reads.items():
            reads.sort()
            times = [r[0] for r in reads]
            replaced = sorted(self._replaced.get(key, ()))
            fg = sorted(self._fg_loads.get(key, ()))
            starts = [f[0] for f in fg]
            writes = sorted(self._writes.get(key, ()))
            chosen: set[int] = set()
            for end, took, _ in self._stores.get(key, ()):
                e = end + ttl
                # an entry that a write replaced (or dropped), or that a reader found gone,
                # well before its expiry never reached it; one a background reload replaced
                # did, for its readers
                r = bisect.bisect_right(replaced, end)
                if r < len(replaced) and replaced[r] < e - took:
                    continue
                if times and e <= times[-1]:
                    expiries += 1
                first = bisect.bisect_left(times, e)
                if first < len(times):
                    chosen.add(first)
                # the reader's load this expiry caused, if any: it may begin up to a load
                # early (simulated clock, see above) or late (the store lags the load's end)
                j = bisect.bisect_left(starts, e - took)
                w = bisect.bisect_left(writes, e - took)
                if (
                    j < len(fg)
                    and fg[j][0] < e + ttl / 2
                    and not (w < len(writes) and writes[w] < fg[j][0])  # a write's miss
                ):
                    lo, hi = fg[j]
                    # readers that missed just before the loader began waited for it too
                    before = bisect.bisect_left(times, lo - took)
                    start = bisect.bisect_left(times, lo)
                    chosen.update(i for i in range(before, start) if reads[i][2])
                else:
                    lo, hi = e, e + took
                chosen.update(range(bisect.bisect_left(times, lo), bisect.bisect_right(times, hi)))
            near += [reads[i][1] * 1e6 for i in chosen]
            waits += sum(1 for i in chosen if reads[i][2] and not reads[i][3])
        near.sort()
        out["expiries"] = expiries
        out["hot_waits"] = waits
        out["hot_near_expiry_reads"] = len(near)
        out["hot_p99_near_expiry_us"] = percentile(near, 99) if near else None
        return out
