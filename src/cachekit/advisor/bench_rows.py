"""Judging ``cachekit bench``'s runs: each combination's medians and spreads, and its verdict.

Every figure is the median of a combination's repeats with its range
(min-max). A combination is **ranked** only when its TTL is shorter than the
run's window (a longer TTL never expired: its row says nothing about that
TTL), it is not slower than no cache, and its stale reads are within the
budget. Among the ranked, the most hits win; hit ratios within half a point
are a tie, broken by fewer database reads, then by throughput.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .bench_fresh import PLAIN, Freshness
from .bench_model import BenchResult

__all__ = [
    "FIGURES",
    "MARGIN",
    "NOISY",
    "TIE",
    "BenchRow",
    "Spread",
    "Verdict",
    "assess",
    "pick",
    "rows_of",
]

#: Hit ratios closer than this are a tie, broken on database reads.
TIE = 0.005
#: A cached row is "slower" when its median ops/s is more than this share below no
#: cache's, and its p95 is "up" when its median p95 is more than this share above.
MARGIN = 0.10
#: Repeats whose ops/s differ by more than this factor make the speed verdicts uncertain.
NOISY = 1.5


def _ttl(ttl: float | None) -> str:
    return "none" if ttl is None else f"{ttl:g}s"


def _pct(x: float) -> str:
    return f"{x:.1%}" if x >= 0.001 or x == 0 else f"{x:.2%}"


@dataclass(frozen=True)
class Spread:
    """The median of a figure over the repeats, and its range."""

    median: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Return the median and min-max of ``values`` (at least one); NaN ones are left out.

        All NaN (a figure that does not apply, e.g. loads per TTL without expiry): NaN.
        """
        s = sorted(v for v in values if not math.isnan(v))
        if not s:
            return cls(math.nan, math.nan, math.nan)
        return cls(float(statistics.median(s)), s[0], s[-1])

    @property
    def known(self) -> bool:
        """Whether the figure applies (was measured in some repeat)."""
        return not math.isnan(self.median)

    def fmt(self, f: Callable[[float], str]) -> str:
        """``median (lo-hi)``, each formatted with ``f``; just the median when all are equal."""
        if not self.known:
            return "-"
        m, lo, hi = f(self.median), f(self.lo), f(self.hi)
        return m if lo == hi else f"{m} ({lo}-{hi})"

    def as_dict(self) -> dict[str, float | None]:
        """Return ``{"median", "min", "max"}`` (None for a figure that does not apply)."""
        if not self.known:
            return {"median": None, "min": None, "max": None}
        return {"median": self.median, "min": self.lo, "max": self.hi}


def _or_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _us_cell(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


#: Figures reported with their spread: name -> (how to read it from a run, format).
FIGURES: dict[str, tuple[Callable[[BenchResult], float], Callable[[float], str]]] = {
    "hit_ratio": (lambda r: r.hit_ratio, lambda x: f"{x * 100:.1f}"),
    "db_reads_per_1k": (lambda r: r.db_reads_per_1k, lambda x: f"{x:,.0f}"),
    "stale_per_1k": (lambda r: r.stale_per_1k, lambda x: f"{x:.2g}" if x < 10 else f"{x:.0f}"),
    "max_staleness_s": (lambda r: r.max_staleness_s, lambda x: f"{x:.3g}"),
    "p50_us": (lambda r: r.p50_us, lambda x: f"{x:.1f}" if x < 100 else f"{x:,.0f}"),
    "p95_us": (lambda r: r.p95_us, lambda x: f"{x:.1f}" if x < 100 else f"{x:,.0f}"),
    "p99_us": (lambda r: r.p99_us, lambda x: f"{x:.1f}" if x < 100 else f"{x:,.0f}"),
    "throughput": (lambda r: r.throughput, lambda x: f"{x:,.0f}"),
    "db_writes": (lambda r: float(r.db_writes), lambda x: f"{x:,.0f}"),
    "evictions": (lambda r: float(r.evictions), lambda x: f"{x:,.0f}"),
    "window_s": (lambda r: r.window_s, lambda x: f"{x:,.3g}"),
    # freshness: what the hottest keys saw around expiry (cachekit.bench_fresh)
    "hot_p99_near_expiry_us": (lambda r: _or_nan(r.hot_p99_near_expiry_us), _us_cell),
    "hot_waits_per_expiry": (lambda r: _or_nan(r.hot_waits_per_expiry), lambda x: f"{x:.2g}"),
    "loads_per_key_per_ttl": (lambda r: _or_nan(r.loads_per_key_per_ttl), lambda x: f"{x:.2f}"),
}


@dataclass
class BenchRow:
    """One strategy, TTL and freshness: its repeated runs, and each figure's median and spread."""

    strategy: str
    ttl: float | None
    runs: list[BenchResult]
    freshness: Freshness = PLAIN
    _spreads: dict[str, Spread] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> Spread:
        """The ``Spread`` of figure ``name`` (a key of ``FIGURES``)."""
        spread = self._spreads.get(name)
        if spread is None:
            read = FIGURES[name][0]
            spread = self._spreads[name] = Spread.of([read(r) for r in self.runs])
        return spread

    def cell(self, name: str) -> str:
        """Figure ``name`` as a table cell: median (min-max)."""
        return self[name].fmt(FIGURES[name][1])

    @property
    def cached(self) -> bool:
        """Whether a cache was in front of the database."""
        return self.strategy != "none"

    @property
    def label(self) -> str:
        """``none`` or ``strategy ttl=60s``."""
        return self.runs[0].label

    @property
    def cache_errors(self) -> int:
        """Cache errors over every run."""
        return sum(r.cache_errors for r in self.runs)


def rows_of(runs: Sequence[Sequence[BenchResult]]) -> list[BenchRow]:
    """Group ``run_bench``'s runs into rows."""
    return [BenchRow(rs[0].strategy, rs[0].ttl, list(rs), rs[0].freshness) for rs in runs]


@dataclass
class Verdict:
    """What one cached row is worth next to no cache, and whether it may be ranked."""

    row: BenchRow
    beyond_window: bool  # TTL >= the run's window: it never expired, the row says nothing
    slower: bool  # median ops/s more than MARGIN below no cache's
    p95_worse: bool  # median p95 more than MARGIN above no cache's
    over_budget: bool  # median stale reads above the budget
    fewer_ops: bool = False  # median ops/s below no cache's median

    @property
    def not_paying(self) -> bool:
        """Slower than no cache: clearly fewer ops/s, or a higher p95 and fewer ops/s."""
        return self.slower or (self.p95_worse and self.fewer_ops)

    @property
    def ranked(self) -> bool:
        """Whether the row competes for the recommendation."""
        return not (self.beyond_window or self.not_paying or self.over_budget)

    def notes(self) -> list[str]:
        """Short reasons for the table's last column."""
        out = []
        if self.beyond_window:
            out.append("TTL ≥ window")
        if self.slower:
            out.append("slower")
        if self.p95_worse:
            out.append("p95 up")
        if self.over_budget:
            out.append("over stale budget")
        return out


def assess(rows: Sequence[BenchRow], max_stale: float) -> list[Verdict]:
    """Judge every cached row against no cache (when it was run), its window and the budget."""
    base = next((r for r in rows if not r.cached), None)
    out = []
    for row in rows:
        if not row.cached:
            continue
        window = row["window_s"].lo
        beyond = row.ttl is not None and row.ttl >= window
        slower = p95_worse = fewer = False
        if base is not None:
            tp, btp = row["throughput"].median, base["throughput"].median
            slower, fewer = tp < btp * (1 - MARGIN), tp < btp
            p95_worse = row["p95_us"].median > base["p95_us"].median * (1 + MARGIN)
        over = row["stale_per_1k"].median > max_stale * 1000
        out.append(Verdict(row, beyond, slower, p95_worse, over, fewer))
    return out


def pick(verdicts: Sequence[Verdict]) -> Verdict | None:
    """Return the recommended row's verdict, or None when no cached row is ranked."""
    ok = [v for v in verdicts if v.ranked]
    if not ok:
        return None
    top = max(v.row["hit_ratio"].median for v in ok)
    tied = [v for v in ok if v.row["hit_ratio"].median >= top - TIE]
    return min(
        tied,
        key=lambda v: (v.row["db_reads_per_1k"].median, -v.row["throughput"].median),
    )
