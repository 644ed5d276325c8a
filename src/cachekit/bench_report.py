"""What ``cachekit bench`` prints: the table, the recommendation, the JSON document and the plot.

``recommend`` picks the combination with the most hits among those whose
stale-read rate is within the budget (``--max-stale``), ties (within half a
point of hits) broken by fewer database reads per read. matplotlib is
imported only by ``plot`` (the ``plot`` extra).
"""

from __future__ import annotations

import math
import os
import platform
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from .bench import BenchConfig, BenchResult, Trace

__all__ = ["TIE", "describe_run", "json_document", "plot", "recommend", "render_bench_table"]

#: Hit ratios closer than this are a tie, broken on database reads.
TIE = 0.005


def _ttl(ttl: float | None) -> str:
    return "none" if ttl is None else f"{ttl:g}s"


def _pct(x: float) -> str:
    return f"{x:.1%}" if x >= 0.001 or x == 0 else f"{x:.2%}"


def render_bench_table(results: Sequence[BenchResult]) -> str:
    """Return the results as an aligned text table, one row per strategy and TTL."""
    head = (
        "strategy", "TTL", "hit ratio", "DB reads", "DB writes", "p50 µs", "p95 µs", "p99 µs",
        "ops/s", "stale %", "max stale s", "evictions",
    )  # fmt: skip
    rows = [head]
    for r in results:
        cached = r.strategy != "none"
        rows.append(
            (
                r.strategy,
                _ttl(r.ttl) if cached else "-",
                _pct(r.hit_ratio) if cached else "-",
                f"{r.db_reads:,}",
                f"{r.db_writes:,}",
                f"{r.p50_us:.1f}",
                f"{r.p95_us:.1f}",
                f"{r.p99_us:.1f}",
                f"{r.throughput:,.0f}",
                f"{r.stale_ratio:.2%}",
                f"{r.max_staleness_s:.3g}",
                f"{r.evictions:,}" if cached else "-",
            )
        )
    from .workload import format_table

    return format_table(rows)


def _describe(r: BenchResult) -> str:
    stale = "0 stale reads" if r.stale_reads == 0 else f"{_pct(r.stale_ratio)} stale reads"
    return (
        f"{r.strategy} with TTL {_ttl(r.ttl)}: {_pct(r.hit_ratio)} hits, {stale}, "
        f"{r.db_reads_per_read:.2f} DB reads per read"
    )


def pick(results: Sequence[BenchResult], max_stale: float) -> BenchResult | None:
    """Return the recommended combination, or None when no cached one meets the budget."""
    ok = [r for r in results if r.strategy != "none" and r.stale_ratio <= max_stale]
    if not ok:
        return None
    top = max(r.hit_ratio for r in ok)
    tied = [r for r in ok if r.hit_ratio >= top - TIE]
    return min(tied, key=lambda r: (r.db_reads_per_read, r.stale_ratio, -r.hit_ratio))


def recommend(results: Sequence[BenchResult], max_stale: float) -> str:
    """Return a one-paragraph recommendation derived from the results."""
    cached = [r for r in results if r.strategy != "none"]
    if not cached:
        return "No cache strategy was run, so there is nothing to recommend."
    base = next((r for r in results if r.strategy == "none"), None)
    best = pick(results, max_stale)
    budget = f"the stale-read budget of {_pct(max_stale)}"
    if best is None:
        least = min(cached, key=lambda r: (r.stale_ratio, -r.hit_ratio))
        text = (
            f"No combination kept stale reads within {budget}; the least stale was "
            f"{_describe(least)}. Stale reads here come from writes that bypass the cache "
            "and live until the TTL expires: shorten the TTL, send those writes through "
            "the cache (write-through) or invalidate on them"
        )
        if base is not None:
            text += ", or do without a cache for this data"
        return text + "."
    text = f"Recommended: {_describe(best)}; it has the most hits within {budget}"
    others = [r for r in cached if r is not best]
    rival = max(others, key=lambda r: (r.hit_ratio, -r.stale_ratio)) if others else None
    if rival is not None:
        why = "over the budget" if rival.stale_ratio > max_stale else "fewer hits, or more DB reads"
        text += f". Next best: {_describe(rival)} ({why})"
    over = [r.label for r in others if r.stale_ratio > max_stale and r is not rival]
    if over:
        text += f". Also over the budget: {', '.join(over)}"
    if base is not None and base.db_reads_per_read > 0:
        saved = 1 - best.db_reads_per_read / base.db_reads_per_read
        text += (
            f". Against no cache it saves {saved:.0%} of database reads, p50 read latency "
            f"{base.p50_us:.0f} -> {best.p50_us:.1f} µs"
        )
    return text + "."


def describe_run(config: BenchConfig, trace: Trace | None, database: str) -> list[str]:
    """Return the header lines saying what was measured and how."""
    runs = len(config.combinations())
    if trace is not None:
        work = (
            f"trace {trace.source}: {len(trace.ops):,} ops on {len(trace.names):,} keys, "
            "replayed once per combination"
        )
    else:
        work = (
            f"{config.keys:,} keys, Zipf skew {config.zipf:g}, {config.write_ratio:.0%} writes "
            f"({config.bypass_writes:.0%} of them bypassing the cache), "
            f"{config.value_size} B payload, seed {config.seed}"
        )
    lines = [f"cachekit bench: {work}; database {database}, cache {config.cache_url}"]
    if config.simulated:
        span = (
            "trace timestamps"
            if trace is not None and trace.times is not None
            else f"{config.ops_per_second:g} ops/s"
        )
        ops = len(trace.ops) if trace is not None else config.fixed_ops
        lines.append(
            f"clock: simulated ({span}); {runs} runs of {ops:,} ops, 1 thread, one run per "
            "combination; TTLs and staleness are simulated seconds, latencies and ops/s are real"
        )
    else:
        size = (
            f"{config.duration:g} s"
            if config.duration is not None and trace is None
            else f"{config.ops if trace is None else len(trace.ops):,} ops"
        )
        lines.append(
            f"clock: real; {runs} runs of {size}, {config.threads} threads, one run per "
            "combination (no repeats: expect a few % of noise); TTLs are real seconds"
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
    results: Sequence[BenchResult],
    recommendation: str,
    **extra: Any,
) -> dict[str, Any]:
    """Return the ``--json`` document: config, clock, machine, results, recommendation."""
    cfg = {k: v for k, v in vars(config).items()}
    cfg.update(strategies=list(config.strategies), ttls=list(config.ttls), **extra)
    best = pick(results, config.max_stale)
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
            "runs_per_combination": 1,
        },
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "results": [r.as_dict() for r in results],
        "recommended": None if best is None else best.label,
        "recommendation": recommendation,
    }


def plot(results: Sequence[BenchResult], path: str, title: str) -> None:
    """Draw hit ratio and stale-read rate vs TTL per strategy, and the read latency CDF."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'cachekit[plot]'") from exc
    cached = [r for r in results if r.strategy != "none"]
    ttls = sorted({r.ttl for r in cached}, key=lambda t: math.inf if t is None else t)
    xs = list(range(len(ttls)))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    try:
        ax_hit, ax_stale, ax_db, ax_cdf = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
        for strategy in dict.fromkeys(r.strategy for r in cached):
            rows = {r.ttl: r for r in cached if r.strategy == strategy}
            pts = [(x, rows[t]) for x, t in zip(xs, ttls, strict=True) if t in rows]
            px = [x for x, _ in pts]
            ax_hit.plot(px, [r.hit_ratio * 100 for _, r in pts], "o-", label=strategy)
            ax_stale.plot(px, [r.stale_ratio * 100 for _, r in pts], "o-", label=strategy)
            ax_db.plot(px, [r.db_reads_per_read for _, r in pts], "o-", label=strategy)
        base = next((r for r in results if r.strategy == "none"), None)
        if base is not None:
            ax_db.axhline(base.db_reads_per_read, color="grey", ls="--", label="no cache")
        for ax, ylabel, name in (
            (ax_hit, "hit ratio (%)", "Hit ratio vs TTL"),
            (ax_stale, "stale reads (% of reads)", "Stale-read rate vs TTL"),
            (ax_db, "database reads per read", "Database load vs TTL"),
        ):
            ax.set_xticks(xs, [_ttl(t) for t in ttls])
            ax.set_xlabel("TTL")
            ax.set_ylabel(ylabel)
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend()
        ax_hit.set_ylim(0, 100)
        ax_stale.set_ylim(bottom=0)
        ax_db.set_ylim(bottom=0)
        for r in results:
            lat = r.latencies_us
            if not lat:
                continue
            step = max(1, len(lat) // 2000)
            sample = lat[::step]
            ys = [(i * step + 1) / len(lat) for i in range(len(sample))]
            ax_cdf.plot(sample, ys, label=r.label, drawstyle="steps-post")
        ax_cdf.set_xscale("log")
        ax_cdf.set_xlabel("read latency (µs, log scale)")
        ax_cdf.set_ylabel("share of reads at or below")
        ax_cdf.set_title("Read latency CDF")
        ax_cdf.grid(alpha=0.3, which="both")
        ax_cdf.legend(fontsize="small")
        fig.suptitle(textwrap.fill(title, 150), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
