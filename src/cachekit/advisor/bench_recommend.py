"""The recommendation paragraph of ``cachekit bench``: which combination to use, and why.

When every cached combination is slower than no cache, it says that a cache
does not pay off here; it ends with the assumptions behind it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .bench_fresh import Freshness
from .bench_model import BenchConfig
from .bench_rows import NOISY, BenchRow, Spread, Verdict, _ttl, assess, pick
from .bench_trace import Trace

__all__ = ["assumptions", "freshness_note", "recommend"]


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
