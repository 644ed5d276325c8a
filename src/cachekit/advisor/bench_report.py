"""What ``cachekit bench`` prints: medians and spreads, verdicts, recommendation, JSON, plot.

Every figure is the median of a combination's repeats with its range
(min-max). A combination is **ranked** only when its TTL is shorter than the
run's window (a longer TTL never expired: its row says nothing about that
TTL), it is not slower than no cache, and its stale reads are within the
budget. Among the ranked, the most hits win; hit ratios within half a point
are a tie, broken by fewer database reads, then by throughput. When every
cached combination is slower than no cache, the recommendation says that a
cache does not pay off here. The plot is drawn by ``cachekit.bench_plot`` (matplotlib).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .bench import BenchConfig, BenchResult, Trace
from .bench_fresh import PLAIN, Freshness

__all__ = [
    "TIE",
    "BenchRow",
    "Spread",
    "Verdict",
    "assess",
    "describe_run",
    "json_document",
    "pick",
    "plot",
    "recommend",
    "render_bench_table",
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


def render_bench_table(rows: Sequence[BenchRow], verdicts: Sequence[Verdict] = ()) -> str:
    """Return the rows as an aligned text table: median (min-max) per figure, and notes.

    A ``fresh`` column (the freshness setting) is there when some row has one.
    """
    fresh = any(r.freshness.on for r in rows)
    head = (
        "strategy", "TTL", *(["fresh"] if fresh else []), "hit %", "DB reads/1k reads",
        "stale/1k reads", "p50 µs", "p95 µs", "ops/s", "hot p99 µs @exp", "hot waits/exp",
        "loads/key/TTL", "notes",
    )  # fmt: skip
    notes = {id(v.row): v.notes() for v in verdicts}
    best = pick(verdicts)
    table = [head]
    for r in rows:
        note = notes.get(id(r), [])
        if best is not None and best.row is r:
            note = ["recommended", *note]
        table.append(
            (
                r.strategy,
                _ttl(r.ttl) if r.cached else "-",
                *([r.freshness.label] if fresh else []),
                r.cell("hit_ratio") if r.cached else "-",
                r.cell("db_reads_per_1k"),
                r.cell("stale_per_1k"),
                r.cell("p50_us"),
                r.cell("p95_us"),
                r.cell("throughput"),
                r.cell("hot_p99_near_expiry_us"),
                r.cell("hot_waits_per_expiry"),
                r.cell("loads_per_key_per_ttl"),
                "; ".join(note) if r.cached else "baseline",
            )
        )
    from .workload import format_table

    return format_table(table, left=3 if fresh else 2)


def _us(x: float) -> str:
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def _fresh_words(f: Freshness) -> str:
    parts = []
    if f.early_refresh:
        parts.append(f"early refresh (beta {f.early_refresh:g})")
    if f.stale_while_revalidate:
        parts.append(f"stale-while-revalidate {f.stale_while_revalidate:g}s")
    return " and ".join(parts) or "a plain TTL"


def _hot(r: BenchRow) -> str:
    """The hot keys' figures of ``r`` as words, or "" when none applies."""
    if not r["hot_p99_near_expiry_us"].known:
        return ""
    return (
        f"; hot keys around expiry: p99 {_us(r['hot_p99_near_expiry_us'].median)}, "
        f"{r.cell('hot_waits_per_expiry')} reads waiting for a load per expiry, "
        f"{r.cell('loads_per_key_per_ttl')} loads per key per TTL"
    )


def _us_spread(s: Spread) -> str:
    return "-" if not s.known else _us(s.median)


def _describe(v: Verdict, base: BenchRow | None) -> str:
    r = v.row
    fresh = f" and {_fresh_words(r.freshness)}" if r.freshness.on else ""
    text = (
        f"{r.strategy} with TTL {_ttl(r.ttl)}{fresh}: {r.cell('hit_ratio')} % hits, "
        f"{r.cell('db_reads_per_1k')} DB reads and {r.cell('stale_per_1k')} stale reads per "
        f"1,000 reads, {r.cell('throughput')} ops/s"
    )
    if base is not None:
        text += (
            f" (no cache: {base.cell('throughput')}), p95 {_us(base['p95_us'].median)} -> "
            f"{_us(r['p95_us'].median)}"
        )
    return text + _hot(r)


def freshness_note(best: Verdict, verdicts: Sequence[Verdict]) -> str:
    """What each freshness setting did at the recommended strategy and TTL ("" if one ran).

    Names the ranked setting whose hot-key readers waited least for a load when it is
    not the recommended one.
    """
    r = best.row
    fam = [v for v in verdicts if v.row.strategy == r.strategy and v.row.ttl == r.ttl]
    if len(fam) < 2:
        return ""
    parts = []
    for v in fam:
        x = v.row
        name = x.freshness.label if x.freshness.on else "plain TTL"
        parts.append(
            f"{name}: hot p99 around expiry {_us_spread(x['hot_p99_near_expiry_us'])}, "
            f"{x.cell('hot_waits_per_expiry')} waits per expiry, "
            f"{x.cell('loads_per_key_per_ttl')} loads per key per TTL, "
            f"{x.cell('stale_per_1k')} stale reads per 1,000"
        )
    text = f" Freshness at {r.strategy} TTL {_ttl(r.ttl)}: " + "; ".join(parts)
    calm = [v for v in fam if v.ranked and v.row["hot_waits_per_expiry"].known]
    if not calm:
        return text + "."
    quiet = min(
        calm,
        key=lambda v: (
            v.row["hot_waits_per_expiry"].median,
            v.row["hot_p99_near_expiry_us"].median,
        ),
    )
    plain = next((v.row for v in fam if not v.row.freshness.on), None)
    early = [v.row for v in fam if v.row.freshness.early_refresh]
    if plain is not None and early and plain["hot_waits_per_expiry"].known:
        base_waits = plain["hot_waits_per_expiry"].median
        if base_waits > 0 and all(x["hot_waits_per_expiry"].median > base_waits / 2 for x in early):
            text += (
                ". Early refresh spared few waits here: XFetch reloads only when a key is read "
                "within about beta x its load time of expiry, and these hot keys are read more "
                "sparsely than that (a larger beta, or stale-while-revalidate, covers them)"
            )
    q = quiet.row
    if quiet is best or q["hot_waits_per_expiry"].median >= r["hot_waits_per_expiry"].median:
        return text + ". No setting makes fewer hot readers wait than the recommended one."
    return (
        text + f". Fewest hot readers waiting for a load: {_fresh_words(q.freshness)} "
        f"({q.cell('hot_waits_per_expiry')} per expiry instead of "
        f"{r.cell('hot_waits_per_expiry')}): choose it if a read waiting for a load is what "
        "hurts (a slow query on a hot key)."
    )


def assumptions(config: BenchConfig, trace: Trace | None, window: float | None) -> str:
    """The sentence that says what the recommendation assumed."""
    if trace is not None:
        writes = sum(op.kind != "read" for op in trace.ops)
        bypass = sum(op.kind == "bypass" for op in trace.ops)
        mix = (
            f"the trace's mix: {writes / len(trace.ops):.1%} of operations are writes, "
            f"{bypass / writes if writes else 0:.0%} of them around the cache"
        )
    else:
        mix = (
            f"{config.write_ratio:.0%} of operations are writes and {config.bypass_writes:.0%} "
            "of those go around the cache (the only source of stale reads: change it with "
            "--bypass-writes)"
        )
    span = "" if window is None else f" over a {window:,.0f} s window"
    if config.simulated:
        rate = (
            "trace timestamps"
            if trace is not None and trace.times
            else (f"{config.ops_per_second:g} requests/s")
        )
        clock = f"simulated clock at {rate}{span}"
    else:
        clock = f"real clock, {config.threads} threads{span}"
    return (
        f"Assumed: {mix}; a stale-read budget of {config.max_stale * 1000:g} per 1,000 reads "
        f"(--max-stale); {clock}; medians of {config.repeats} repeats, ranges min-max."
    )


def recommend(rows: Sequence[BenchRow], config: BenchConfig, trace: Trace | None = None) -> str:
    """Return the recommendation paragraph, ending with its assumptions."""
    verdicts = assess(rows, config.max_stale)
    cached = [r for r in rows if r.cached]
    base = next((r for r in rows if not r.cached), None)
    window = min((r["window_s"].lo for r in rows), default=None)
    tail = " " + assumptions(config, trace, window)
    noisy = [r for r in rows if r["throughput"].hi > NOISY * r["throughput"].lo > 0]
    if noisy:
        worst = max(noisy, key=lambda r: r["throughput"].hi / r["throughput"].lo)
        tail = (
            f" Caution: the repeats disagree (ops/s of {worst.label} from "
            f"{worst['throughput'].lo:,.0f} to {worst['throughput'].hi:,.0f}): the machine or "
            "the network was busy, so the speed verdicts are less certain than they look; "
            "rerun on a quiet machine or with more --repeats." + tail
        )
    if not cached:
        return "No cache strategy was run, so there is nothing to recommend." + tail
    judged = [v for v in verdicts if not v.beyond_window]
    beyond = [v.row.label for v in verdicts if v.beyond_window]
    skipped = (
        f" Not ranked, because their TTL is at least the {window:,.0f} s the run covered "
        f"(nothing expired, so they only look like no expiry): {', '.join(beyond)}."
        if beyond and window is not None
        else ""
    )
    if not judged:
        return (
            f"No TTL could be judged: every one is at least the run's window of "
            f"{window or 0:,.0f} s, so no entry ever expired. Use the simulated clock (the "
            "default) or a --duration longer than the TTLs." + tail
        )
    paying = [v for v in judged if not v.not_paying]
    if base is not None and not paying:
        fastest = max(judged, key=lambda v: v.row["throughput"].median)
        least_db = min(judged, key=lambda v: v.row["db_reads_per_1k"].median)
        return (
            "On this database a cache does not pay off: every cached combination was slower "
            f"than no cache. The fastest was {_describe(fastest, base)}. A cache would still "
            f"cut database reads to {least_db.row.cell('db_reads_per_1k')} per 1,000 reads "
            f"({least_db.row.label}): worth it only if the database's load, not its latency, "
            "is the problem." + skipped + tail
        )
    best = pick(verdicts)
    if best is None:
        least = min(
            paying, key=lambda v: (v.row["stale_per_1k"].median, -v.row["hit_ratio"].median)
        )
        return (
            f"No combination kept stale reads within the budget of "
            f"{config.max_stale * 1000:g} per 1,000 reads; the least stale was "
            f"{_describe(least, base)}. Stale reads come from writes that bypass the cache "
            "and live until the TTL expires: shorten the TTL, send those writes through the "
            "cache (write-through) or invalidate on them, or do without a cache for this data."
            + skipped
            + tail
        )
    text = f"Recommended: {_describe(best, base)}; the most hits among the ranked combinations"
    if best.p95_worse:
        text += (
            "; its p95 is above no cache's (a miss pays for the cache lookup as well as the "
            "database), bought back by its throughput"
        )
    rivals = [v for v in judged if v is not best and v.ranked]
    if rivals:
        rival = max(rivals, key=lambda v: v.row["hit_ratio"].median)
        text += f". Next best: {_describe(rival, base)}"
    text += "." + freshness_note(best, verdicts)
    over = [v.row.label for v in judged if v.over_budget]
    if over:
        text += f" Over the stale budget: {', '.join(over)}"
        text += "."
    slow = [v.row.label for v in judged if v.not_paying]
    if slow:
        text += (
            f" Not worth it here (fewer ops/s than no cache, or a higher p95 and a lower "
            f"median ops/s): {', '.join(slow)}."
        )
    return text + skipped + tail


def describe_run(config: BenchConfig, trace: Trace | None, database: str) -> list[str]:
    """Return the header lines saying what was measured and how."""
    runs = len(config.combinations())
    if trace is not None:
        work = (
            f"trace {trace.source}: {len(trace.ops):,} ops on {len(trace.names):,} keys, "
            "replayed once per run"
        )
    else:
        work = (
            f"{config.keys:,} keys, Zipf skew {config.zipf:g}, {config.write_ratio:.0%} writes "
            f"({config.bypass_writes:.0%} of them bypassing the cache), "
            f"{config.value_size} B payload, seed {config.seed}"
        )
    lines = [f"cachekit bench: {work}; database {database}, cache {config.cache_url}"]
    reps = f"{config.repeats} repeats each (figures: median (min-max))"
    if config.simulated:
        span = (
            "trace timestamps"
            if trace is not None and trace.times is not None
            else f"{config.ops_per_second:g} ops/s"
        )
        ops = len(trace.ops) if trace is not None else config.fixed_ops
        lines.append(
            f"clock: simulated ({span}); {runs} combinations x {reps}, {ops:,} ops per run, "
            "1 thread; TTLs and staleness are simulated seconds, latencies and ops/s are real"
        )
    else:
        size = (
            f"{config.duration:g} s"
            if config.duration is not None and trace is None
            else f"{config.ops if trace is None else len(trace.ops):,} ops"
        )
        lines.append(
            f"clock: real; {runs} combinations x {reps}, {size} per run, {config.threads} "
            "threads; TTLs are real seconds"
        )
    fresh = ", ".join(f.label if f.on else "plain TTL" for f in config.freshness)
    load = "its real time"
    if config.load_ms:
        how = "simulated" if config.simulated else "slept"
        load += f" + {config.load_ms:g} ms ({how})"
    lines.append(
        f"freshness: {fresh}; hot keys: the {config.hot_keys} most read; a load takes {load}"
    )
    lines.append(
        f"machine: {platform.machine()} with {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}"
    )
    return lines


def json_document(
    config: BenchConfig,
    trace: Trace | None,
    database: str,
    rows: Sequence[BenchRow],
    recommendation: str,
    **extra: Any,
) -> dict[str, Any]:
    """Return the ``--json`` document: config, clock, machine, rows with runs, recommendation."""
    cfg = dict(vars(config))
    cfg.update(
        strategies=list(config.strategies),
        ttls=list(config.ttls),
        freshness=[f.label for f in config.freshness],
        **extra,
    )
    verdicts = {id(v.row): v for v in assess(rows, config.max_stale)}
    best = pick(list(verdicts.values()))
    results = []
    for row in rows:
        v = verdicts.get(id(row))
        results.append(
            {
                "label": row.label,
                "strategy": row.strategy,
                "ttl": row.ttl,
                "freshness": row.freshness.label,
                "early_refresh": row.freshness.early_refresh,
                "stale_while_revalidate": row.freshness.stale_while_revalidate,
                "ranked": None if v is None else v.ranked,
                "notes": [] if v is None else v.notes(),
                **{name: row[name].as_dict() for name in FIGURES},
                "cache_errors": row.cache_errors,
                "runs": [r.as_dict() for r in row.runs],
            }
        )
    return {
        "command": "bench",
        "config": cfg,
        "database": database,
        "trace": None
        if trace is None
        else {"file": trace.source, "ops": len(trace.ops), "keys": len(trace.names)},
        "clock": {
            "kind": config.clock,
            "threads": config.threads,
            "duration_s": config.duration if trace is None and config.ops is None else None,
            "ops_per_run": config.fixed_ops if trace is None else len(trace.ops),
            "runs_per_combination": config.repeats,
        },
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "results": results,
        "recommended": None if best is None else best.row.label,
        "recommendation": recommendation,
    }


def plot(rows: Sequence[BenchRow], path: str, title: str, max_stale: float) -> None:
    """Draw the rows to ``path`` (see ``cachekit.bench_plot.plot``; needs matplotlib)."""
    from .bench_plot import plot as draw

    draw(rows, path, title, max_stale)
