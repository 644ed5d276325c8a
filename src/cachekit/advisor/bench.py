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
``BenchConfig`` and ``BenchResult`` in ``cachekit.bench_model``, trace files in
``cachekit.bench_trace`` and ``SimExpiryBackend`` in ``cachekit.bench_sim`` (all three
re-exported here).
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
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..backends import backend_from_url
from ..backends.base import Backend
from ..cache import Cache
from .bench_fresh import PLAIN, Freshness, FreshProbe, reloads_pending

# moved out; re-exported because bench_cli and tests/test_bench.py import them from here
from .bench_model import BenchConfig as BenchConfig
from .bench_model import BenchResult as BenchResult
from .bench_sim import BackendWrapper, SimExpiryBackend
from .bench_trace import Trace, TraceError, parse_trace, read_trace
from .workload import (
    READ,
    WRITE,
    Op,
    OpGenerator,
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
