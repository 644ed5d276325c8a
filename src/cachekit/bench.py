"""The engine of ``cachekit bench``: configuration, traces, threaded replay per strategy and TTL.

Builds on ``cachekit.workload`` (Zipf sampler, op generator, stale-read
detector, ``make_cache``). Two clocks:

- **real** (default): worker threads replay operations for ``duration``
  seconds (or ``ops`` operations); TTLs are real seconds; throughput and
  latency are what this machine did.
- **simulated** (``simulated=True``, ``memory://`` only, one thread): the
  cache's clock is a ``SimClock`` that moves ``1 / ops_per_second`` per
  operation (or to each trace line's timestamp), so a TTL of 300 s shows its
  effect in a second of wall time.

The terminal table, JSON, plot and recommendation live in ``cachekit.bench_report``.
"""

from __future__ import annotations

import csv
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .cache import Cache
from .workload import (
    BYPASS,
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
    "BenchConfig",
    "BenchResult",
    "Trace",
    "TraceError",
    "parse_trace",
    "read_trace",
    "run_bench",
    "run_combination",
]

#: The operations a trace line may name.
TRACE_OPS = (READ, WRITE, BYPASS)

_BATCH = 2048  # operations generated at a time per thread


class TraceError(ValueError):
    """A workload trace file that cannot be replayed; the message names the line."""


@dataclass(frozen=True)
class Trace:
    """A parsed trace: operations over integer ids, the original key names, optional times."""

    ops: list[Op]
    names: list[str]  # names[id - 1] is the key written in the file
    times: list[float] | None  # seconds, non-decreasing, one per op; None without a ts column
    source: str = "<trace>"


def parse_trace(lines: Sequence[str], source: str = "<trace>") -> Trace:
    """Parse ``op,key[,ts]`` lines; skip blank lines, ``#`` comments and an ``op,key`` header.

    Keys are any non-empty strings, numbered 1.. in order of first appearance.
    Raises ``TraceError`` naming ``source`` and the line for the first bad line.
    """
    ids: dict[str, int] = {}
    ops: list[Op] = []
    times: list[float] = []
    has_ts: bool | None = None
    for lineno, fields in enumerate(csv.reader(lines), start=1):
        cells = [c.strip() for c in fields]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        where = f"{source}:{lineno}"
        if not ops and [c.lower() for c in cells[:2]] == ["op", "key"]:
            continue  # header
        if len(cells) not in (2, 3):
            raise TraceError(f"{where}: expected op,key[,ts], got {len(cells)} fields")
        op, key = cells[0].lower(), cells[1]
        if op not in TRACE_OPS:
            raise TraceError(f"{where}: unknown op {cells[0]!r} (use {', '.join(TRACE_OPS)})")
        if not key:
            raise TraceError(f"{where}: empty key")
        line_has_ts = len(cells) == 3
        if has_ts is None:
            has_ts = line_has_ts
        elif line_has_ts != has_ts:
            raise TraceError(f"{where}: either every line has a ts column or none does")
        if line_has_ts:
            try:
                ts = float(cells[2])
            except ValueError:
                raise TraceError(f"{where}: ts must be seconds, not {cells[2]!r}") from None
            if not math.isfinite(ts) or ts < 0:
                raise TraceError(f"{where}: ts must be a finite number >= 0, not {cells[2]!r}")
            if times and ts < times[-1]:
                raise TraceError(f"{where}: ts {ts:g} goes back in time (previous {times[-1]:g})")
            times.append(ts)
        key_id = ids.setdefault(key, len(ids) + 1)
        ops.append(Op(op, key_id, (lineno * 7919) % 1_000_000 if op != READ else 0))
    if not ops:
        raise TraceError(f"{source}: no operations")
    return Trace(ops, list(ids), times if has_ts else None, source)


def read_trace(path: str) -> Trace:
    """Read and parse a trace file (see ``parse_trace``)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return parse_trace(f.read().splitlines(), path)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the workload file: {exc.strerror}") from exc


@dataclass(frozen=True)
class BenchConfig:
    """The workload and the grid of ``cachekit bench``; ``duration`` / ``ops``: one is set."""

    keys: int = 10_000
    zipf: float = 1.0
    write_ratio: float = 0.05
    bypass_writes: float = 0.2
    threads: int = 2
    duration: float | None = 4.0
    ops: int | None = None
    value_size: int = 100
    strategies: tuple[str, ...] = STRATEGIES
    ttls: tuple[float | None, ...] = (0.5, 2.0)
    cache_url: str = "memory://"
    simulated: bool = False
    ops_per_second: float = 500.0
    seed: int = 42
    max_stale: float = 0.01

    def combinations(self) -> list[tuple[str, float | None]]:
        """Return the (strategy, TTL) pairs to run, in report order."""
        out: list[tuple[str, float | None]] = []
        for s in self.strategies:
            out += [(s, None)] if s == "none" else [(s, t) for t in self.ttls]
        return out

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
            raise ValueError("the simulated clock replays on one thread: use --threads 1")
        if self.simulated and urlsplit(self.cache_url).scheme.lower() != "memory":
            raise ValueError(
                "the simulated clock drives memory:// only; a remote cache expires in real time"
            )
        if self.ops_per_second <= 0:
            raise ValueError("ops_per_second must be > 0")
        if not 0.0 <= self.max_stale <= 1.0:
            raise ValueError("max_stale must be between 0 and 1")

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
        ):
            out[name] = getattr(self, name)
        return out


@dataclass
class _Worker:
    """What one replay thread measured."""

    latencies: list[float] = field(default_factory=list)
    done: int = 0
    writes: int = 0
    bypassed: int = 0
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
    *,
    trace: Trace | None = None,
    progress: Callable[[int], None] | None = None,
    on_cache: Callable[[Cache], None] | None = None,
) -> BenchResult:
    """Replay the workload against ``store`` behind one strategy and TTL; return what happened.

    Reads go through ``@cache.cached(key="user:{user_id}")``, writes through
    ``@cache.writes(key="user:{user_id}")``, bypass writes straight to the store.
    A write is reported to the stale-read detector when its call returns (for
    write-through, after the cache was updated; for a bypass write, right
    after the commit).
    """
    store.reset()
    sim = SimClock() if config.simulated else None
    clock: Callable[[], float] = sim if sim is not None else time.perf_counter
    detector = StaleReadDetector(clock)

    def load_user(user_id: int) -> dict[str, Any] | None:
        return store.load(user_id)

    def save_user(user_id: int, value: int) -> dict[str, Any]:
        return store.save(user_id, value, clock())

    read, write = load_user, save_user
    cache: Cache | None = None
    if strategy != "none":
        ttl_text = "none" if ttl is None else f"{ttl:g}"
        ns = f"bench-{strategy}-ttl-{ttl_text}-{uuid.uuid4().hex[:8]}"
        cache = make_cache(config.cache_url, strategy, ttl, sim, ns)
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

    def replay(ops: Iterator[Op], w: _Worker) -> None:
        lat = w.latencies
        observe, committed, mark = detector.observe, detector.committed, detector.mark
        deadline = deadline_box[0]
        try:
            for i, (kind, key, value) in enumerate(ops):
                if sim is not None:
                    sim.now = times[i] - t_origin if times else sim.now + step
                elif perf() >= deadline:
                    break
                if kind == READ:
                    since = mark()
                    t0 = perf()
                    row = read(key)
                    lat.append(perf() - t0)
                    at = sim.now if sim is not None else t0
                    observe(key, -1 if row is None else row["version"], since=since, at=at)
                else:
                    if kind == WRITE:
                        row = write(key, value)
                        w.writes += 1
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
    wall = perf() - started
    for w in workers:
        if w.error is not None:
            raise w.error

    stats = cache.stats() if cache is not None else None
    lat_us = sorted(x * 1e6 for w in workers for x in w.latencies)
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
    )


def progress_total(config: BenchConfig, trace: Trace | None) -> int:
    """Return the progress-bar total of a whole bench (ms of duration, or operations)."""
    runs = len(config.combinations())
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
) -> list[BenchResult]:
    """Run every strategy x TTL combination of ``config`` in turn; return their results."""
    config.check()
    results = []
    for strategy, ttl in config.combinations():
        if on_run is not None:
            on_run(strategy if strategy == "none" else f"{strategy} ttl={_fmt_ttl(ttl)}")
        results.append(
            run_combination(
                store, config, strategy, ttl, trace=trace, progress=progress, on_cache=on_cache
            )
        )
    return results


def _fmt_ttl(ttl: float | None) -> str:
    return "none" if ttl is None else f"{ttl:g}s"
