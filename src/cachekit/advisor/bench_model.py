"""The data of ``cachekit bench``: the grid it runs (``BenchConfig``) and what one run measured.

``BenchResult`` is a ``cachekit.workload.ScenarioResult`` with what a threaded,
timed run and the freshness probe (``cachekit.bench_fresh``) add.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .bench_fresh import PLAIN, Freshness
from .workload import STRATEGIES, ScenarioResult

__all__ = ["BenchConfig", "BenchResult"]


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
