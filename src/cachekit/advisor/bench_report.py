"""What ``cachekit bench`` prints: the table, the header lines, the ``--json`` document, the plot.

The figures and verdicts behind them come from ``cachekit.bench_rows``, the
recommendation paragraph from ``cachekit.bench_recommend`` (both re-exported
here); the plot is drawn by ``cachekit.bench_plot`` (matplotlib).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

from .bench_model import BenchConfig

# moved out; re-exported because bench_cli, bench_plot and tests/test_bench.py import
# them from here
from .bench_recommend import recommend as recommend
from .bench_rows import FIGURES
from .bench_rows import TIE as TIE
from .bench_rows import BenchRow as BenchRow
from .bench_rows import Spread as Spread
from .bench_rows import Verdict as Verdict
from .bench_rows import _ttl as _ttl
from .bench_rows import assess as assess
from .bench_rows import pick as pick
from .bench_rows import rows_of as rows_of
from .bench_trace import Trace

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
