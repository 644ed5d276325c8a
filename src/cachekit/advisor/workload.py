"""Scenario runner: replays an operation list behind one cache strategy and reports what it did.

Used by ``cachekit demo`` (and meant for ``cachekit bench``): a seeded list of
read / write operations over integer keys is replayed against a data source,
with or without a cache in front, and each run yields a ``ScenarioResult``
(hit ratio, source queries, read latency, stale reads, evictions).

Time is simulated: the cache's clock is a ``SimClock`` that moves forward by
``1 / ops_per_second`` per operation, so a TTL of 60 s shows its effect in a
run that takes a second of wall time. Read latency is real (``perf_counter``).

The data source is anything with the small ``Store`` interface; the SQL one is
``cachekit.workload_db.SqlUserStore`` (it needs SQLAlchemy, this module does not).
The operations come from ``cachekit.workload_gen`` (Zipf sampler, op generator) and
stale reads are counted by ``cachekit.workload_stale`` (both re-exported here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..backends import Backend, backend_from_url
from ..cache import Cache
from ..policies import NO_EXPIRY, TTL, CacheAside, Policy, WriteThrough

# moved out; re-exported because cli, bench, bench_trace, tests/test_workload.py and
# tests/test_bench.py import them from here
from .workload_gen import BYPASS as BYPASS
from .workload_gen import READ as READ
from .workload_gen import WRITE as WRITE
from .workload_gen import Op as Op
from .workload_gen import OpGenerator as OpGenerator
from .workload_gen import ZipfSampler as ZipfSampler
from .workload_gen import generate_ops as generate_ops
from .workload_stale import StaleReadDetector as StaleReadDetector

__all__ = [
    "DEMO_STRATEGIES",
    "STRATEGIES",
    "Op",
    "OpGenerator",
    "ScenarioResult",
    "SimClock",
    "StaleReadDetector",
    "Store",
    "ZipfSampler",
    "format_table",
    "generate_ops",
    "make_cache",
    "percentile",
    "result_fields",
    "run_scenario",
    "summarize",
]

#: Strategy names, in the order they are reported.
STRATEGIES: tuple[str, ...] = ("none", "cache-aside", "write-through")
#: The demo also runs write-through through ``cachekit.sqlalchemy.CachedRepository``, and
#: cache-aside through an ``AsyncCache`` (``asyncio``: the same reads and writes, awaited).
DEMO_STRATEGIES: tuple[str, ...] = (*STRATEGIES, "repository", "asyncio")


class SimClock:
    """A clock that only moves when told to; inject it as ``timer=``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds


class Store(Protocol):
    """The data source a workload runs against (rows are dicts with a ``version``)."""

    def reset(self) -> None:
        """Restore the seeded state and zero the query counters."""

    def load(self, key: int) -> dict[str, Any] | None:
        """Return the committed row for ``key``, or None."""

    def save(self, key: int, value: int, now: float) -> dict[str, Any]:
        """Commit a new value for ``key`` (its version goes up by one); return the new row."""

    def query_counts(self) -> tuple[int, int]:
        """Return ``(reads, writes)`` issued to the source since the last reset."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q``-th percentile (0-100) of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _async_functions(
    cache: Cache, load_user: Callable[[int], Any], save_user: Callable[[int, int], Any]
) -> tuple[Callable[[int], Any], Callable[[int, int], Any], Any, Callable[[], None]]:
    """The demo's reads and writes through an ``AsyncCache`` twin of ``cache`` (same store,
    clock and policy, its own namespace), each run to completion on one event loop."""
    import asyncio

    from ..aio import AsyncCache
    from ..backends.aio import async_backend_from_url
    from ..backends.aio.memory import AsyncMemoryBackend
    from ..backends.memory import MemoryBackend

    backend: Any = cache.backend
    if isinstance(backend, MemoryBackend):
        abackend: Any = AsyncMemoryBackend(backend)
    else:
        address = backend.server_address or ""
        abackend = async_backend_from_url(address)
    acache = AsyncCache(
        abackend, namespace=cache.namespace + "-async", policy=cache.policy, timer=cache._timer
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(acache.clear())

    @acache.cached(key="user:{user_id}")
    async def aload(user_id: int) -> Any:
        return load_user(user_id)

    @acache.writes(key="user:{user_id}")
    async def asave(user_id: int, value: int) -> Any:
        return save_user(user_id, value)

    def close() -> None:
        if not isinstance(backend, MemoryBackend):  # its own connections (the store is shared)
            loop.run_until_complete(acache.aclose())
        loop.close()

    return (
        lambda user_id: loop.run_until_complete(aload(user_id)),
        lambda user_id, value: loop.run_until_complete(asave(user_id, value)),
        acache,
        close,
    )


def make_cache(
    url: str,
    strategy: str,
    ttl: float | None,
    clock: Callable[[], float] | None,
    namespace: str,
    *,
    backend: Backend | None = None,
    early_refresh: float = 0.0,
    stale_while_revalidate: float = 0.0,
) -> Cache:
    """Build the cache of one scenario: ``memory://`` runs on ``clock`` (None: real time).

    ``backend``, when given, is used instead of one built from ``url`` (the
    cache then runs on ``clock`` too, for its TTLs and namespace checks).
    ``early_refresh`` and ``stale_while_revalidate`` go to the ``TTL`` (not to no expiry).
    """
    if ttl is None:
        ttl_obj = NO_EXPIRY
    else:
        ttl_obj = TTL(
            ttl, early_refresh=early_refresh, stale_while_revalidate=stale_while_revalidate
        )
    stores = strategy in ("write-through", "repository")
    policy: Policy = WriteThrough(ttl_obj) if stores else CacheAside(ttl_obj)
    if backend is not None:
        cache = Cache(backend, namespace=namespace, policy=policy, timer=clock or time.monotonic)
    elif clock is not None and urlsplit(url).scheme.lower() == "memory":
        # Cache.from_url gives timer= to the Cache only; expiry lives in the backend.
        backend = backend_from_url(url, timer=clock)
        cache = Cache(backend, namespace=namespace, policy=policy, timer=clock)
    else:
        cache = Cache.from_url(url, namespace=namespace, policy=policy)
    cache.clear()  # a shared server may hold entries of an earlier run
    return cache


@dataclass
class ScenarioResult:
    """What one strategy / TTL combination did with the workload."""

    strategy: str
    ttl: float | None
    reads: int
    writes: int
    bypass_writes: int
    hits: int
    misses: int
    db_reads: int
    db_writes: int
    p50_us: float
    p99_us: float
    stale_reads: int
    max_staleness_s: float
    evictions_capacity: int
    evictions_expired: int
    cache_errors: int
    simulated_seconds: float
    wall_seconds: float
    latencies_us: list[float] = field(default_factory=list, repr=False)

    @property
    def hit_ratio(self) -> float:
        """Hits / cache lookups (0.0 without a cache)."""
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0

    @property
    def db_queries(self) -> int:
        """All statements sent to the database."""
        return self.db_reads + self.db_writes

    @property
    def stale_ratio(self) -> float:
        """Stale reads / reads."""
        return self.stale_reads / self.reads if self.reads else 0.0

    @property
    def evictions(self) -> int:
        """Entries the backend dropped, for capacity or expiry."""
        return self.evictions_capacity + self.evictions_expired

    @property
    def label(self) -> str:
        """``strategy`` or ``strategy ttl=60s``."""
        if self.strategy == "none":
            return "none"
        return f"{self.strategy} ttl={'none' if self.ttl is None else f'{self.ttl:g}s'}"

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (without the raw latencies)."""
        out = asdict(self)
        del out["latencies_us"]
        for name in ("hit_ratio", "db_queries", "stale_ratio", "evictions", "label"):
            out[name] = getattr(self, name)
        return out


def run_scenario(
    ops: Sequence[Op],
    store: Store,
    *,
    strategy: str,
    ttl: float | None,
    cache_url: str = "memory://",
    ops_per_second: float = 500.0,
    progress: Callable[[int], None] | None = None,
    on_cache: Callable[[Cache], None] | None = None,
    on_repository: Callable[[Any], None] | None = None,
) -> ScenarioResult:
    """Replay ``ops`` against ``store`` behind ``strategy`` and return what happened.

    Reads go through ``@cache.cached(key="user:{user_id}")``, writes through
    ``@cache.writes(key="user:{user_id}")`` (invalidate under cache-aside,
    store under write-through); bypass writes go straight to the store.
    """
    if strategy not in DEMO_STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r} (choose from {', '.join(DEMO_STRATEGIES)})"
        )
    store.reset()
    clock = SimClock()
    detector = StaleReadDetector(clock)
    step = 1.0 / ops_per_second
    cache: Cache | None = None

    def load_user(user_id: int) -> dict[str, Any] | None:
        return store.load(user_id)

    def save_user(user_id: int, value: int) -> dict[str, Any]:
        return store.save(user_id, value, clock.now)

    read: Callable[[int], Any] = load_user
    write: Callable[[int, int], Any] = save_user
    closers: list[Callable[[], None]] = []
    stats_of: Callable[[], Any]
    if strategy != "none":
        ns = f"demo-{strategy}-ttl-{'none' if ttl is None else f'{ttl:g}'}"
        cache = make_cache(cache_url, strategy, ttl, clock, ns)
        if on_cache is not None:
            on_cache(cache)
        if strategy == "asyncio":
            read, write, acache, close = _async_functions(cache, load_user, save_user)
            closers.append(close)
            if on_repository is not None:
                on_repository(acache)  # exported beside the others (its own namespace)
            stats_of = acache.stats
        elif strategy == "repository":
            # the same table through an ORM model and CachedRepository (write-through,
            # version-guarded by the table's version column)
            read, write, repo = store.repository(cache, lambda: clock.now)  # type: ignore[attr-defined]
            if on_repository is not None:
                on_repository(repo)  # its counters are its own (the parent cache reads 0)
            stats_of = repo.stats  # its rows live in a child namespace
        else:
            read = cache.cached(key="user:{user_id}")(load_user)
            write = cache.writes(key="user:{user_id}")(save_user)

    latencies: list[float] = []
    observe, committed, perf = detector.observe, detector.committed, time.perf_counter
    writes = bypassed = 0
    started = perf()
    for i, (kind, key, value) in enumerate(ops):
        clock.now += step
        if kind == READ:
            t0 = perf()
            row = read(key)
            latencies.append(perf() - t0)
            observe(key, -1 if row is None else row["version"])
        else:
            if kind == WRITE:
                row = write(key, value)
                writes += 1
            else:
                row = save_user(key, value)
                bypassed += 1
            committed(key, row["version"])
        if progress is not None and i % 1024 == 1023:
            progress(1024)
    wall = perf() - started
    if progress is not None:
        progress(len(ops) % 1024)

    for close in closers:
        close()
    stats = (
        (stats_of() if strategy in ("repository", "asyncio") else cache.stats()) if cache else None
    )
    latencies.sort()
    lat_us = [x * 1e6 for x in latencies]
    return ScenarioResult(
        **result_fields(
            strategy, ttl, stats, store, detector, lat_us, writes, bypassed, clock.now, wall
        )
    )


def result_fields(
    strategy: str,
    ttl: float | None,
    stats: Any,
    store: Store,
    detector: StaleReadDetector,
    lat_us: list[float],
    writes: int,
    bypassed: int,
    simulated_seconds: float,
    wall_seconds: float,
) -> dict[str, Any]:
    """Return the ``ScenarioResult`` fields of one finished run (``lat_us`` sorted)."""
    db_reads, db_writes = store.query_counts()
    return {
        "strategy": strategy,
        "ttl": ttl,
        "reads": len(lat_us),
        "writes": writes,
        "bypass_writes": bypassed,
        "hits": stats.hits if stats else 0,
        "misses": stats.misses if stats else 0,
        "db_reads": db_reads,
        "db_writes": db_writes,
        "p50_us": percentile(lat_us, 50),
        "p99_us": percentile(lat_us, 99),
        "stale_reads": detector.stale,
        "max_staleness_s": detector.max_staleness,
        "evictions_capacity": stats.evictions_capacity if stats else 0,
        "evictions_expired": stats.evictions_expired if stats else 0,
        "cache_errors": stats.errors if stats else 0,
        "simulated_seconds": simulated_seconds,
        "wall_seconds": wall_seconds,
        "latencies_us": lat_us,
    }


def format_table(rows: Sequence[Sequence[str]], left: int = 2) -> str:
    """Align ``rows`` (the first is the header) as text columns; the first ``left`` left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summarize(results: Sequence[ScenarioResult]) -> str:
    """Return a one-line reading of the results: what caching saved and what the TTL cost."""
    base = next((r for r in results if r.strategy == "none"), None)
    cached = [r for r in results if r.strategy != "none"]
    if not cached:
        return "No cache strategy was run, so there is nothing to compare."
    best = max(cached, key=lambda r: (r.hit_ratio, -r.stale_reads))
    text = f"{best.label} had the most hits ({best.hit_ratio:.1%}) and sent {best.db_queries:,} "
    text += "queries to the database"
    if base is not None and base.db_queries:
        share = best.db_queries / base.db_queries
        text += f" ({share:.0%} of the {base.db_queries:,} without a cache)"
    parts = [text]
    pairs = [
        (a, b)
        for a in cached
        for b in cached
        if a.strategy == "write-through" and b.strategy == "cache-aside" and a.ttl == b.ttl
    ]
    if pairs:
        gain = sum(a.hit_ratio - b.hit_ratio for a, b in pairs) / len(pairs)
        parts.append(f"write-through vs cache-aside at equal TTL: {gain * 100:+.1f} points of hits")
    same = sorted(
        (r for r in cached if r.strategy == best.strategy),
        key=lambda r: math.inf if r.ttl is None else r.ttl,
    )
    if len(same) > 1 and same[0].stale_reads < same[-1].stale_reads:
        lo, hi = same[0], same[-1]
        parts.append(
            f"a shorter TTL cut stale reads from {hi.stale_ratio:.1%} ({hi.label}) to "
            f"{lo.stale_ratio:.1%} ({lo.label}) for {(hi.hit_ratio - lo.hit_ratio) * 100:.1f} "
            "points of hits"
        )
    if all(r.stale_reads == 0 for r in cached):
        parts.append("no stale reads: every write went through the cache")
    elif any(r.bypass_writes for r in cached):
        parts.append("stale reads come from writes that bypass the cache, and the TTL bounds them")
    return "; ".join(parts) + "."
