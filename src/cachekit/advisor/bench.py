"""The engine of ``cachekit bench``: configuration and threaded replay per strategy, TTL, freshness.

Builds on ``cachekit.workload`` (Zipf sampler, op generator, stale-read
detector, ``make_cache``). Two clocks:

- **simulated** (``simulated=True``, one thread; what the command runs by
  default): the cache's clock is a ``SimClock`` that moves
  ``1 / ops_per_second`` per operation (or to each trace line's timestamp), so
  a TTL of an hour shows its effect in seconds of wall time. ``memory://``
  expires on that clock itself; a remote server (Redis, memcached) sits behind
  ``SimExpiryBackend``, which stamps each entry with its simulated expiry.
- **real**: worker threads replay operations for ``duration`` seconds (or
  ``ops`` operations); TTLs are real seconds.

Every cached strategy and TTL runs with each freshness setting of
``freshness`` (plain TTL, early refresh, stale-while-revalidate); the hottest
keys' reads around expiry and their loads are watched by a
``cachekit.bench_fresh.FreshProbe``. On the simulated clock the replay waits
for the cache's background reloads before each next operation.

Either way latency and throughput are what this machine did. Every
combination runs ``repeats`` times (repeat ``r`` draws its workload with seed
``seed + r``), interleaved so that a slow moment of the machine touches every
combination alike.

The terminal table, JSON, plot and recommendation live in ``cachekit.bench_report``;
trace files in ``cachekit.bench_trace`` and ``SimExpiryBackend`` in
``cachekit.bench_sim`` (both re-exported here).
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..backends import backend_from_url
from ..backends.base import Backend
from ..cache import Cache
from .bench_fresh import PLAIN, Freshness, FreshProbe, reloads_pending
from .bench_sim import BackendWrapper, SimExpiryBackend
from .bench_trace import Trace, TraceError, parse_trace, read_trace
from .workload import (
    READ,
    STRATEGIES,
    WRITE,
    Op,
    OpGenerator,
    ScenarioResult,
    SimClock,
    StaleReadDetector,
    Store,
    ZipfSampler,
    make_cache,
    percentile,
    result_fields,
)

__all__ = [
    "BackendWrapper",
    "BenchConfig",
    "BenchResult",
    "SimExpiryBackend",
    "Trace",
    "TraceError",
    "parse_trace",
    "read_trace",
    "run_bench",
    "run_combination",
]

_BATCH = 2048  # operations generated at a time per thread


@dataclass(frozen=True)
class BenchConfig:
    """The workload and the grid of ``cachekit bench``; ``duration`` / ``ops``: one is set."""

    keys: int = 10_000
    zipf: float = 1.0
    write_ratio: float = 0.05
    bypass_writes: float = 0.01
    threads: int = 1
    duration: float | None = 7200.0
    ops: int | None = None
    value_size: int = 100
    strategies: tuple[str, ...] = STRATEGIES
    ttls: tuple[float | None, ...] = (10.0, 60.0, 300.0, 3600.0)
    cache_url: str = "memory://"
    simulated: bool = True
    ops_per_second: float = 4.0
    seed: int = 42
    max_stale: float = 0.01
    repeats: int = 3
    #: the freshness settings compared for every cached strategy and TTL (not "no expiry")
    freshness: tuple[Freshness, ...] = (PLAIN,)
    #: simulated clock: milliseconds a load takes on top of its real time; real: slept
    load_ms: float = 0.0
    #: how many of the hottest keys the freshness figures watch
    hot_keys: int = 10

    def combinations(self) -> list[tuple[str, float | None, Freshness]]:
        """Return the (strategy, TTL, freshness) triples to run, in report order."""
        out: list[tuple[str, float | None, Freshness]] = []
        for s in self.strategies:
            if s == "none":
                out.append((s, None, PLAIN))
                continue
            for t in self.ttls:
                out += [(s, t, f) for f in (self.freshness if t is not None else (PLAIN,))]
        return out

    @property
    def compares_freshness(self) -> bool:
        """Whether any freshness setting other than a plain TTL is run."""
        return any(f.on for f in self.freshness)

    def check(self) -> None:
        """Raise ``ValueError`` for a configuration that cannot run."""
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(
                f"unknown strategy {unknown[0]!r} (choose from {', '.join(STRATEGIES)})"
            )
        if (self.duration is None) == (self.ops is None):
            raise ValueError("give exactly one of duration and ops")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be > 0 seconds")
        if self.simulated and self.threads != 1:
            raise ValueError(
                "the simulated clock replays on one thread: use --threads 1, or --real-clock"
            )
        if self.ops_per_second <= 0:
            raise ValueError("ops_per_second must be > 0")
        if not 0.0 <= self.max_stale <= 1.0:
            raise ValueError("max_stale must be between 0 and 1")
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")
        if not self.freshness:
            raise ValueError("give at least one freshness setting")
        if not (0 <= self.load_ms < math.inf):
            raise ValueError("load_ms must be >= 0")
        if self.hot_keys < 1:
            raise ValueError("hot_keys must be >= 1")

    @property
    def fixed_ops(self) -> int | None:
        """Operations per run when the run is counted in operations (None: timed)."""
        if self.ops is not None:
            return self.ops
        if self.simulated and self.duration is not None:
            return max(1, round(self.duration * self.ops_per_second))
        return None

    @property
    def clock(self) -> str:
        """``real`` or ``simulated``."""
        return "simulated" if self.simulated else "real"


@dataclass
class BenchResult(ScenarioResult):
    """A ``ScenarioResult`` with what a threaded, timed run adds: p95, threads, clock."""

    p95_us: float = 0.0
    threads: int = 1
    clock: str = "real"
    timed_s: float | None = None  # a real-clock run's --duration (its wall time runs over)
    # freshness (see cachekit.bench_fresh): the setting, and what the hottest keys saw
    early_refresh: float = 0.0
    stale_while_revalidate: float = 0.0
    hot_keys: int = 0
    hot_reads: int = 0
    hot_loads: int = 0
    background_loads: int = 0
    hot_waits: int = 0  # hot-key reads around expiry that waited for a load (not the first)
    loads_per_key_per_ttl: float | None = None
    hot_near_expiry_reads: int = 0
    hot_p99_near_expiry_us: float | None = None
    expiries: int = 0  # expiries of hot-key entries within the run
    refreshes_started: int = 0
    stale_revalidated: int = 0

    @property
    def freshness(self) -> Freshness:
        """The run's freshness setting."""
        return Freshness(self.early_refresh, self.stale_while_revalidate)

    @property
    def label(self) -> str:
        """``none``, ``strategy ttl=60s`` or ``strategy ttl=60s early=1``."""
        base = super().label
        fresh = self.freshness
        return f"{base} {fresh.label}" if fresh.on else base

    @property
    def hot_waits_per_expiry(self) -> float | None:
        """Hot-key reads that waited for a load, per hot-key expiry (None: nothing expired)."""
        return self.hot_waits / self.expiries if self.expiries else None

    @property
    def ops(self) -> int:
        """Operations replayed."""
        return self.reads + self.writes + self.bypass_writes

    @property
    def throughput(self) -> float:
        """Operations per wall-clock second, over every thread."""
        return self.ops / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def db_reads_per_read(self) -> float:
        """Database SELECTs per read (1.0 without a cache)."""
        return self.db_reads / self.reads if self.reads else 0.0

    @property
    def db_reads_per_1k(self) -> float:
        """Database SELECTs per 1,000 reads (1,000 without a cache)."""
        return 1000.0 * self.db_reads_per_read

    @property
    def stale_per_1k(self) -> float:
        """Stale reads per 1,000 reads."""
        return 1000.0 * self.stale_ratio

    @property
    def window_s(self) -> float:
        """Seconds the run covered on its clock (simulated or wall): what a TTL is held against."""
        if self.clock == "simulated":
            return self.simulated_seconds
        return min(self.wall_seconds, self.timed_s or math.inf)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (without the raw latencies)."""
        out = asdict(self)
        del out["latencies_us"]
        for name in (
            "hit_ratio",
            "db_queries",
            "stale_ratio",
            "evictions",
            "label",
            "ops",
            "throughput",
            "db_reads_per_read",
            "db_reads_per_1k",
            "stale_per_1k",
            "window_s",
            "freshness",
            "hot_waits_per_expiry",
        ):
            out[name] = getattr(self, name)
        out["freshness"] = self.freshness.label
        return out


@dataclass
class _Worker:
    """What one replay thread measured."""

    latencies: list[float] = field(default_factory=list)
    done: int = 0
    writes: int = 0
    bypassed: int = 0
    settled: float = 0.0  # seconds spent waiting for background reloads (simulated clock)
    error: BaseException | None = None


def _streams(config: BenchConfig, trace: Trace | None) -> list[Iterator[Op]]:
    """One operation stream per thread: the trace dealt round-robin, or seeded generators."""
    if trace is not None:
        return [iter(trace.ops[t :: config.threads]) for t in range(config.threads)]
    sampler = ZipfSampler(config.keys, config.zipf, random.Random(config.seed))
    total = config.fixed_ops
    per_thread = None if total is None else -(-total // config.threads)

    def stream(t: int) -> Iterator[Op]:
        rng = random.Random(config.seed * 1_000 + t + 1)
        gen = OpGenerator(
            sampler.with_rng(rng),
            rng,
            write_ratio=config.write_ratio,
            bypass_writes=config.bypass_writes,
        )
        left = per_thread if per_thread is not None and t < config.threads - 1 else None
        if total is not None and per_thread is not None and left is None:
            left = total - per_thread * (config.threads - 1)
        while left is None or left > 0:
            batch = gen.take(_BATCH if left is None else min(_BATCH, left))
            if left is not None:
                left -= len(batch)
            yield from batch

    return [stream(t) for t in range(config.threads)]


def run_combination(
    store: Store,
    config: BenchConfig,
    strategy: str,
    ttl: float | None,
    freshness: Freshness = PLAIN,
    *,
    trace: Trace | None = None,
    progress: Callable[[int], None] | None = None,
    on_cache: Callable[[Cache], None] | None = None,
    wrap_backend: BackendWrapper | None = None,
) -> BenchResult:
    """Replay the workload against ``store`` behind one strategy, TTL and freshness setting.

    Reads go through ``@cache.cached(key="user:{user_id}")``, writes through
    ``@cache.writes(key="user:{user_id}")``, bypass writes straight to the store.
    A write is reported to the stale-read detector when its call returns (for
    write-through, after the cache was updated; for a bypass write, right
    after the commit). ``wrap_backend`` wraps the cache's backend (e.g. to add latency).
    On the simulated clock, background reloads (early refresh, stale-while-revalidate)
    finish before the next operation starts (see ``cachekit.bench_fresh``).
    """
    store.reset()
    sim = SimClock() if config.simulated else None
    clock: Callable[[], float] = sim if sim is not None else time.perf_counter
    detector = StaleReadDetector(clock)
    probe = FreshProbe(_hot_keys(config, trace), sim, config.load_ms)
    # on the simulated clock the cache sees loads take time (the probe's view of it)
    view: Callable[[], float] | None = probe.timer if sim is not None else None

    @probe.wrap
    def load_user(user_id: int) -> dict[str, Any] | None:
        return store.load(user_id)

    def save_user(user_id: int, value: int) -> dict[str, Any]:
        return store.save(user_id, value, clock())

    read, write = load_user, save_user
    cache: Cache | None = None
    if strategy != "none":
        ttl_text = "none" if ttl is None else f"{ttl:g}"
        ns = f"bench-{strategy}-ttl-{ttl_text}-{uuid.uuid4().hex[:8]}"
        # a remote cache expires on the simulated clock through SimExpiryBackend, and the
        # Cache keeps real time: its namespace checks cost what they cost in production.
        # Freshness needs the Cache on the simulated clock (expiries, XFetch's delta): when
        # the bench compares freshness settings, every cached row runs on it, comparably
        remote = urlsplit(config.cache_url).scheme.lower() != "memory"
        timer = None if remote and not config.compares_freshness else view
        backend = _backend(config, view, wrap_backend)
        cache = make_cache(
            config.cache_url,
            strategy,
            ttl,
            timer,
            ns,
            backend=backend,
            early_refresh=freshness.early_refresh,
            stale_while_revalidate=freshness.stale_while_revalidate,
        )
        if on_cache is not None:
            on_cache(cache)
        read = cache.cached(key="user:{user_id}")(load_user)
        write = cache.writes(key="user:{user_id}")(save_user)

    streams = _streams(config, trace)
    workers = [_Worker() for _ in streams]
    step = 1.0 / config.ops_per_second
    times = trace.times if trace is not None and sim is not None else None
    t_origin = times[0] if times else 0.0
    deadline_box: list[float] = [math.inf]
    perf = time.perf_counter
    hot = probe.hot
    # simulated clock: background reloads finish before the clock moves on
    settle = cache if sim is not None and freshness.on else None
    stores = strategy == "write-through"

    def replay(ops: Iterator[Op], w: _Worker) -> None:
        lat = w.latencies
        observe, committed, mark = detector.observe, detector.committed, detector.mark
        deadline = deadline_box[0]
        probe.replaying()
        try:
            for i, (kind, key, value) in enumerate(ops):
                if sim is not None:
                    sim.now = times[i] - t_origin if times else sim.now + step
                    probe.op = i
                elif perf() >= deadline:
                    break
                if kind == READ:
                    since = mark()
                    if key in hot:
                        start = probe.start_read(key)
                        t0 = perf()
                        row = read(key)
                        took = perf() - t0
                        probe.end_read(key, start, took)
                    else:
                        t0 = perf()
                        row = read(key)
                        took = perf() - t0
                    lat.append(took)
                    if settle is not None and reloads_pending(settle):
                        w.settled += _settle(settle)
                    at = sim.now if sim is not None else t0
                    observe(key, -1 if row is None else row["version"], since=since, at=at)
                else:
                    if kind == WRITE:
                        row = write(key, value)
                        w.writes += 1
                        probe.written(key, stores)
                    else:
                        row = save_user(key, value)
                        w.bypassed += 1
                    committed(key, row["version"])
                w.done = i + 1
        except BaseException as exc:  # re-raised by the caller, in the main thread
            w.error = exc
        finally:
            store_release = getattr(store, "release_thread", None)
            if store_release is not None:
                store_release()

    threads = [
        threading.Thread(target=replay, args=(s, w), name=f"cachekit-bench-{n}", daemon=True)
        for n, (s, w) in enumerate(zip(streams, workers, strict=True))
    ]
    started = perf()
    if config.duration is not None and sim is None and trace is None:
        deadline_box[0] = started + config.duration
    for th in threads:
        th.start()
    reported = 0
    timed_ms = int((config.duration or 0) * 1000) if deadline_box[0] != math.inf else None
    while alive := [th for th in threads if th.is_alive()]:
        alive[0].join(0.1)
        if progress is not None:
            if timed_ms is not None:
                now = min(int((perf() - started) * 1000), timed_ms)
            else:
                now = sum(w.done for w in workers)
            progress(now - reported)
            reported = now
    # in production a reload runs beside the readers: the simulated clock's waits for one
    # are not the replay's time
    wall = perf() - started - sum(w.settled for w in workers)
    for w in workers:
        if w.error is not None:
            raise w.error

    stats = cache.stats() if cache is not None else None
    lat_us = sorted(x * 1e6 for w in workers for x in w.latencies)
    timed = config.duration if timed_ms is not None else None
    window = sim.now if sim is not None else min(wall, timed or math.inf)
    fresh = probe.figures(ttl, window, cache is not None)
    return BenchResult(
        **result_fields(
            strategy,
            ttl,
            stats,
            store,
            detector,
            lat_us,
            sum(w.writes for w in workers),
            sum(w.bypassed for w in workers),
            sim.now if sim is not None else 0.0,
            wall,
        ),
        p95_us=percentile(lat_us, 95),
        threads=config.threads,
        clock=config.clock,
        timed_s=config.duration if timed_ms is not None else None,
        early_refresh=freshness.early_refresh,
        stale_while_revalidate=freshness.stale_while_revalidate,
        refreshes_started=stats.refreshes_started if stats else 0,
        stale_revalidated=stats.stale_revalidated if stats else 0,
        **fresh,
    )


def _settle(cache: Cache, timeout: float = 10.0) -> float:
    """Wait (real time, bounded) until the cache's background reloads are over; return how long."""
    started = time.perf_counter()
    deadline = started + timeout
    while reloads_pending(cache):
        if time.perf_counter() > deadline:
            raise RuntimeError("a background reload did not finish within 10 s")
        time.sleep(0.00005)
    return time.perf_counter() - started


def _hot_keys(config: BenchConfig, trace: Trace | None) -> list[int]:
    """The ``config.hot_keys`` keys read most: Zipf's top ranks, or a trace's most read."""
    if trace is not None:
        counts = Counter(op.key for op in trace.ops if op.kind == READ)
        return [k for k, _ in counts.most_common(config.hot_keys)]
    sampler = ZipfSampler(config.keys, config.zipf, random.Random(config.seed))
    return sampler.hottest(min(config.hot_keys, config.keys))


def _backend(
    config: BenchConfig, sim: Callable[[], float] | None, wrap: BackendWrapper | None
) -> Backend | None:
    """The backend of one cached run; None lets ``make_cache`` build the plain one."""
    memory = urlsplit(config.cache_url).scheme.lower() == "memory"
    if sim is None or memory:
        if wrap is None:
            return None
        backend = backend_from_url(config.cache_url, **({"timer": sim} if sim else {}))
    else:
        backend = SimExpiryBackend(backend_from_url(config.cache_url), sim)
    return backend if wrap is None else wrap(backend)


def progress_total(config: BenchConfig, trace: Trace | None) -> int:
    """Return the progress-bar total of a whole bench (ms of duration, or operations)."""
    runs = len(config.combinations()) * config.repeats
    if trace is not None:
        return runs * len(trace.ops)
    fixed = config.fixed_ops
    return runs * (fixed if fixed is not None else int((config.duration or 0) * 1000))


def run_bench(
    store: Store,
    config: BenchConfig,
    *,
    trace: Trace | None = None,
    progress: Callable[[int], None] | None = None,
    on_run: Callable[[str], None] | None = None,
    on_cache: Callable[[Cache], None] | None = None,
    wrap_backend: BackendWrapper | None = None,
) -> list[list[BenchResult]]:
    """Run every strategy x TTL x freshness combination ``config.repeats`` times.

    The repeats are interleaved (every combination once, then again), each
    with the workload seed ``seed + repeat``; the result has one list of runs
    per combination (``config.combinations()``), in report order.
    """
    config.check()
    combos = config.combinations()
    runs: list[list[BenchResult]] = [[] for _ in combos]
    for rep in range(config.repeats):
        cfg = dataclasses.replace(config, seed=config.seed + rep)
        for n, (strategy, ttl, fresh) in enumerate(combos):
            if on_run is not None:
                label = strategy if strategy == "none" else f"{strategy} ttl={_fmt_ttl(ttl)}"
                if fresh.on:
                    label += f" {fresh.label}"
                on_run(f"{label} ({rep + 1}/{config.repeats})")
            runs[n].append(
                run_combination(
                    store,
                    cfg,
                    strategy,
                    ttl,
                    fresh,
                    trace=trace,
                    progress=progress,
                    on_cache=on_cache,
                    wrap_backend=wrap_backend,
                )
            )
    return runs


def _fmt_ttl(ttl: float | None) -> str:
    return "none" if ttl is None else f"{ttl:g}s"
