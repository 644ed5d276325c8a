"""The ``cachekit bench`` command: its options, and the run from options to table, JSON and plot."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import textwrap
import uuid
from typing import Any, TextIO

from .args import Progress, _db_url, _fraction, _positive_int, _split, _ttl, add_workload_arguments

__all__ = ["REAL_DEFAULTS", "SIMULATED_DEFAULTS", "add_bench_arguments", "run_bench_command"]

#: TTLs people run: ten seconds to an hour.
DEFAULT_TTLS: tuple[str, ...] = ("10", "60", "300", "3600")
#: (duration s, TTLs, threads) when not given, per clock. The simulated window (2 h)
#: is longer than the longest default TTL, so every default TTL really expires.
REAL_DEFAULTS: tuple[float, tuple[str, ...], int] = (2.0, DEFAULT_TTLS, 2)
SIMULATED_DEFAULTS: tuple[float, tuple[str, ...], int] = (7200.0, DEFAULT_TTLS, 1)
#: Simulated requests per second: 28,800 operations per 2 h run, 27 runs in under a minute.
SIMULATED_RATE = 4.0


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _numbers(values: list[str] | None, default: float, what: str) -> list[float]:
    """``--early-refresh`` / ``--stale-while-revalidate`` values (spaces or commas), each > 0."""
    out = []
    for text in _split(values or [f"{default:g}"]):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{what} must be numbers, not {text!r}") from None
        if not 0 < value < float("inf"):
            raise ValueError(f"{what} must be > 0, got {text}")
        out.append(value)
    return list(dict.fromkeys(out))


def _freshness(args: argparse.Namespace) -> Any:
    from .bench_fresh import freshness_grid

    if args.freshness is not None:
        kinds = [k.lower() for k in _split(args.freshness)]
    else:
        kinds = ["none"]
        kinds += ["early"] if args.early_refresh is not None else []
        kinds += ["swr"] if args.stale_while_revalidate is not None else []
    betas = _numbers(args.early_refresh, 1.0, "--early-refresh")
    windows = _numbers(args.stale_while_revalidate, 60.0, "--stale-while-revalidate")
    return freshness_grid(kinds, betas, windows)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options (the shared workload knobs and its own) to ``parser``."""
    add_workload_arguments(
        parser,
        ops_default=None,
        ttl_default=None,
        ttl_help="one or more TTLs in seconds, or 'none' (default: 10 60 300 3600)",
        # a little traffic around the cache (an admin script, another service): enough
        # for TTLs to matter, little enough that some choice fits a 1 % stale budget
        bypass_default=0.01,
        rate_default=SIMULATED_RATE,
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="seconds per run (default: 7200 simulated = 28,800 ops at 4 ops/s; 2 real); "
        "--ops counts operations instead",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=3,
        help="runs per combination; figures are their median and min-max (default 3)",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="replay threads (real clock: 2)"
    )
    parser.add_argument(
        "--value-size", type=_non_negative_int, default=100, help="payload bytes per row"
    )
    clocks = parser.add_mutually_exclusive_group()
    clocks.add_argument(
        "--simulated-clock",
        action="store_true",
        help="the default: the cache expires entries on a simulated clock (one thread), so "
        "TTLs of an hour are exercised in seconds of wall time, on any cache URL",
    )
    clocks.add_argument(
        "--real-clock",
        action="store_true",
        help="replay with several threads as fast as possible for --duration real seconds; "
        "TTLs are real seconds (those at least as long as the run are not ranked)",
    )
    parser.add_argument(
        "--workload",
        metavar="FILE",
        default=None,
        help="replay a trace instead of the generator: CSV lines op,key[,ts] with op one of "
        "read, write, bypass (see docs/bench.md)",
    )
    parser.add_argument("--plot", metavar="PNG", default=None, help="write a plot (matplotlib)")
    parser.add_argument(
        "--policy-sim",
        nargs=argparse.REMAINDER,
        default=None,
        metavar="TRACE",
        help="instead of the bench: replay key traces (files or synthetic:zipf|loop|scan|"
        "recency) against eviction policies and print hit ratios; everything after it goes to "
        "the simulator (--capacity N ..., --policy ..., --limit N, --plot PNG)",
    )
    fresh = parser.add_argument_group(
        "freshness", "early refresh and stale-while-revalidate, compared at every TTL"
    )
    fresh.add_argument(
        "--freshness",
        nargs="+",
        default=None,
        metavar="KIND",
        help="freshness settings to compare: none, early, swr, early+swr (spaces or commas; "
        "default: none, plus early / swr when --early-refresh / --stale-while-revalidate "
        "is given)",
    )
    fresh.add_argument(
        "--early-refresh",
        nargs="+",
        default=None,
        metavar="BETA",
        help="XFetch beta(s) of the 'early' setting (default 1)",
    )
    fresh.add_argument(
        "--stale-while-revalidate",
        nargs="+",
        default=None,
        metavar="SECONDS",
        help="stale window(s) of the 'swr' setting, seconds past the TTL (default 60)",
    )
    fresh.add_argument(
        "--load-ms",
        type=_non_negative_float,
        default=0.0,
        metavar="MS",
        help="a load takes this much longer than the database's own time: simulated "
        "milliseconds on the simulated clock, slept on the real one (default 0)",
    )
    fresh.add_argument(
        "--hot-keys",
        type=_positive_int,
        default=10,
        metavar="N",
        help="how many of the most read keys the 'hot' columns watch (default 10)",
    )
    parser.add_argument(
        "--max-stale",
        type=_fraction,
        default=0.01,
        help="stale-read budget of the recommendation, a share of reads (default 0.01)",
    )


def _config(args: argparse.Namespace) -> Any:
    from .bench import BenchConfig

    defaults = REAL_DEFAULTS if args.real_clock else SIMULATED_DEFAULTS
    ttls = tuple(dict.fromkeys(_ttl(t) for t in _split(args.ttl or list(defaults[1]))))
    duration = args.duration
    if args.ops is None and duration is None:
        duration = defaults[0]
    if args.ops is not None and args.duration is not None:
        raise ValueError("give --duration or --ops, not both")
    return BenchConfig(
        keys=args.rows,
        zipf=args.zipf,
        write_ratio=args.write_ratio,
        bypass_writes=args.bypass_writes,
        threads=args.threads or defaults[2],
        duration=None if args.ops is not None else duration,
        ops=args.ops,
        value_size=args.value_size,
        strategies=tuple(dict.fromkeys(_split(args.strategies))),
        ttls=ttls,
        cache_url=args.cache_url,
        simulated=not args.real_clock,
        ops_per_second=args.ops_per_second,
        seed=args.seed,
        max_stale=args.max_stale,
        repeats=args.repeats,
        freshness=_freshness(args),
        load_ms=args.load_ms,
        hot_keys=args.hot_keys,
    )


def run_bench_command(
    args: argparse.Namespace, out: TextIO, err: TextIO, *, wrap_backend: Any = None
) -> int:
    """Run ``cachekit bench`` from parsed options; return the exit status.

    ``wrap_backend`` (a ``cachekit.bench.BackendWrapper``) wraps every cached
    run's backend, e.g. to add latency.
    """
    if args.policy_sim is not None:
        return _policy_sim(args.policy_sim, err)
    from . import bench_report
    from .bench import TraceError, progress_total, read_trace, run_bench

    try:
        config = _config(args)
        config.check()
        trace = read_trace(args.workload) if args.workload is not None else None
    except (argparse.ArgumentTypeError, TraceError, ValueError) as exc:
        err.write(f"cachekit bench: error: {exc}\n")
        return 2
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            err.write(
                "cachekit bench: error: --plot needs matplotlib: pip install 'cachekit-py[plot]'\n"
            )
            return 1
    try:
        from .workload_db import SqlUserStore
    except ImportError as exc:
        err.write(f"cachekit bench: error: {exc}\n")
        return 1

    rows = len(trace.names) if trace is not None else config.keys
    progress = Progress(progress_total(config, trace), stream=err, enabled=not args.quiet)
    caches: list[Any] = []
    tmpdir = tempfile.mkdtemp(prefix="cachekit-bench-")
    table = f"cachekit_bench_{uuid.uuid4().hex[:10]}"

    def on_run(label: str) -> None:
        progress.label = label

    try:
        store = SqlUserStore(
            _db_url(args.db, tmpdir), rows, seed=config.seed, table=table, payload=config.value_size
        )
        try:
            database = store.engine.dialect.name
            runs = run_bench(
                store,
                config,
                trace=trace,
                progress=progress.update,
                on_run=on_run,
                on_cache=caches.append,
                wrap_backend=wrap_backend,
            )
        finally:
            store.drop()
            store.close()
        progress.close()
        results = bench_report.rows_of(runs)
        reading = bench_report.recommend(results, config, trace)
        header = bench_report.describe_run(config, trace, database)
        if args.plot is not None:
            bench_report.plot(results, args.plot, " ".join(header[:2]), config.max_stale)
        if args.json:
            doc = bench_report.json_document(
                config,
                trace,
                database,
                results,
                reading,
                db=args.db,
                table=table,
                workload=args.workload,
            )
            out.write(json.dumps(doc, indent=2) + "\n")
        else:
            verdicts = bench_report.assess(results, config.max_stale)
            out.write(_text(header, results, verdicts, reading, config.max_stale, args.plot))
        out.flush()
    finally:
        progress.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        for cache in caches:
            cache.close()
    return 0


def _policy_sim(argv: list[str], err: TextIO) -> int:
    """``cachekit bench --policy-sim ...``: hand the rest of the command line to the simulator."""
    if not argv:
        err.write("cachekit bench: error: --policy-sim needs at least one TRACE\n")
        return 2
    try:
        from .policy_sim import main as policy_sim_main
    except ImportError as exc:
        err.write(f"cachekit bench: error: --policy-sim is not available here: {exc}\n")
        return 1
    return policy_sim_main(argv)


def _text(
    header: list[str],
    results: Any,
    verdicts: Any,
    reading: str,
    max_stale: float,
    plot_path: str | None,
) -> str:
    from .bench_report import render_bench_table

    lines = [
        *header,
        "",
        render_bench_table(results, verdicts),
        "",
        "each figure: median of the repeats (min-max); hit % = cache hits / lookups; "
        "DB reads/1k reads = SELECTs sent to the database per 1,000 reads (1,000 without a "
        "cache); stale/1k reads = reads per 1,000 that returned a version already superseded "
        "by a write finished before the read started; p50/p95 = read latency; ops/s = all "
        "operations / wall time; hot p99 µs @exp = p99 latency of the hottest keys' reads "
        "around an entry's expiry (the first after it, and those during the load it caused, or "
        "within one load after it; see docs/bench.md); hot waits/exp = those reads that waited "
        "for a load, per expiry (the cold start not counted); "
        "loads/key/TTL = loader calls per hot key per TTL of the window",
        "notes: 'TTL ≥ window' = the TTL is at least as long as the run: nothing expired, the "
        "row is not ranked; 'slower' = median ops/s more than 10% below no cache's (not "
        "ranked); 'p95 up' = median p95 more than 10% above no cache's (not ranked if its "
        "median ops/s is lower too)",
        "",
        *textwrap.wrap(
            f"recommendation (stale budget {max_stale * 1000:g} per 1,000 reads): {reading}",
            width=100,
            break_on_hyphens=False,
        ),
    ]
    errors = sum(r.cache_errors for r in results)
    if errors:
        lines.append(
            f"warning: the cache reported {errors:,} errors during the runs (fail-open: those "
            "calls went to the database)"
        )
    if plot_path is not None:
        lines.append(f"plot written to {plot_path}")
    return "\n".join(lines) + "\n"
