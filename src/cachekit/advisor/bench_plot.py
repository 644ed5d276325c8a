"""The ``cachekit bench --plot`` figure: medians with min-max bars against the TTL.

matplotlib is imported only when drawing.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

from .bench_report import BenchRow, _ttl, assess, pick

__all__ = ["plot"]


def _series(r: BenchRow) -> str:
    return f"{r.strategy} {r.freshness.label}" if r.freshness.on else r.strategy


def plot(rows: Sequence[BenchRow], path: str, title: str, max_stale: float) -> None:
    """Draw medians with min-max bars vs TTL: hits, DB reads, stale reads, ops/s vs no cache.

    TTLs at least as long as the run's window are drawn hollow (not ranked);
    the recommended point is ringed; no cache is a grey line with its range.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'cachekit-py[plot]'") from exc
    cached = [r for r in rows if r.cached]
    base = next((r for r in rows if not r.cached), None)
    verdicts = {id(v.row): v for v in assess(rows, max_stale)}
    best = pick(list(verdicts.values()))
    ttls = sorted({r.ttl for r in cached}, key=lambda t: math.inf if t is None else t)
    xs = {t: i for i, t in enumerate(ttls)}
    panels = (
        ("hit_ratio", 100.0, "hit ratio (%)", "Hits: higher is better"),
        ("db_reads_per_1k", 1.0, "DB reads per 1,000 reads", "Database reads: lower is better"),
        ("stale_per_1k", 1.0, "stale reads per 1,000 reads", "Stale reads: lower is better"),
        ("throughput", 1.0, "operations per second", "Throughput: higher is better"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    try:
        for ax, (name, scale, ylabel, heading) in zip(axes.flat, panels, strict=True):
            series = dict.fromkeys(_series(r) for r in cached)
            for n, label in enumerate(series):
                pts = sorted(
                    ((xs[r.ttl], r) for r in cached if _series(r) == label), key=lambda p: p[0]
                )
                color = f"C{n}"
                shift = (n - (len(series) - 1) / 2) * 0.08  # side by side, bars readable
                px = [x + shift for x, _ in pts]
                med = [r[name].median * scale for _, r in pts]
                err = [
                    [(r[name].median - r[name].lo) * scale for _, r in pts],
                    [(r[name].hi - r[name].median) * scale for _, r in pts],
                ]
                ax.errorbar(px, med, yerr=err, color=color, capsize=3, lw=1.5, label=label)
                for x, (_, r) in zip(px, pts, strict=True):
                    v = verdicts[id(r)]
                    face = "white" if not v.ranked else color
                    ax.plot(x, r[name].median * scale, "o", color=color, mfc=face, ms=7)
                    if best is not None and best.row is r:
                        ax.plot(x, r[name].median * scale, "o", ms=16, mfc="none", mec="black")
            if base is not None and name in ("db_reads_per_1k", "throughput"):
                b = base[name]
                ax.axhline(b.median * scale, color="grey", ls="--", label="no cache")
                ax.axhspan(b.lo * scale, b.hi * scale, color="grey", alpha=0.15)
            if name == "stale_per_1k":
                ax.axhline(max_stale * 1000, color="red", ls=":", label="stale budget")
            ax.set_xticks(range(len(ttls)), [_ttl(t) for t in ttls])
            ax.set_xlabel("TTL (hollow: not ranked; ringed: recommended)")
            ax.set_ylabel(ylabel)
            ax.set_title(heading)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        axes[0][0].set_ylim(0, 100)
        fig.suptitle(textwrap.fill(title + "; median and min-max of the repeats", 150), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
