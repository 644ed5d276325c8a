"""The ``cachekit`` command line: ``demo``, ``bench``, and ``inspect`` / ``stats`` / ``flush``."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from .. import __version__
from ..errors import CacheError
from .args import (  # shared with bench_cli; re-exported for its importers
    DEFAULT_TTLS as DEFAULT_TTLS,
)
from .args import Progress as Progress
from .args import _db_url as _db_url
from .args import _fraction as _fraction
from .args import _positive_int as _positive_int
from .args import _split as _split
from .args import _ttl as _ttl
from .args import add_workload_arguments as add_workload_arguments

__all__ = ["Progress", "add_workload_arguments", "main", "render_table"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cachekit", description="cachekit: cache-aside, write-through and TTL caching."
    )
    parser.add_argument("--version", action="version", version=f"cachekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="replay a Zipf read/write workload on SQLite against each strategy and TTL",
        description="Seed a SQLite database, replay the same seeded read/write workload "
        "with no cache, cache-aside and write-through at each TTL, and print what each "
        "bought: hit ratio, database queries, read latency, stale reads, evictions.",
    )
    from .workload import DEMO_STRATEGIES

    add_workload_arguments(demo, strategies=DEMO_STRATEGIES)
    from .bench_cli import add_bench_arguments

    bench = sub.add_parser(
        "bench",
        help="benchmark each strategy x TTL on your workload and recommend one",
        description="Replay a Zipf (or recorded) read/write workload against no cache, "
        "cache-aside and write-through at each TTL, three times each, on a simulated clock by "
        "default (TTLs up to an hour really expire); report the median and range of hit ratio, "
        "database and stale reads per 1,000 reads, latency and throughput; recommend a "
        "combination, or no cache when caching is slower here.",
    )
    add_bench_arguments(bench)
    from .ops import add_ops_commands

    add_ops_commands(sub)
    demo.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics of every cache on PORT; keep serving until Ctrl-C",
    )
    return parser


def _fmt_ttl(ttl: float | None) -> str:
    return "none" if ttl is None else f"{ttl:g}s"


def render_table(results: Sequence[Any]) -> str:
    """Return the results as an aligned text table, one row per strategy and TTL."""
    head = (
        "strategy",
        "TTL",
        "hit ratio",
        "DB queries",
        "p50 µs",
        "p99 µs",
        "stale reads",
        "stale %",
        "evictions",
    )
    rows = [head]
    for r in results:
        cached = r.strategy != "none"
        rows.append(
            (
                r.strategy,
                _fmt_ttl(r.ttl) if cached else "-",
                f"{r.hit_ratio:.1%}" if cached else "-",
                f"{r.db_queries:,}",
                f"{r.p50_us:.1f}",
                f"{r.p99_us:.1f}",
                f"{r.stale_reads:,}",
                f"{r.stale_ratio:.2%}",
                f"{r.evictions:,}" if cached else "-",
            )
        )
    from .workload import format_table

    return format_table(rows)


class _Metrics:
    """The Prometheus side of ``--metrics-port``: every cache registered, one HTTP server."""

    def __init__(self, port: int) -> None:
        try:
            metrics = importlib.import_module("cachekit.metrics")
        except (ImportError, CacheError) as exc:
            raise CacheError(
                f"--metrics-port needs cachekit.metrics and prometheus-client ({exc}); "
                "install them with: pip install 'cachekit-py[prometheus]'"
            ) from exc
        self._metrics = metrics
        self._server, _ = metrics.serve_metrics(port)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self._caches: list[Any] = []

    def register(self, cache: Any) -> None:
        """Export ``cache``'s counters."""
        self._metrics.register_prometheus(cache)
        self._caches.append(cache)

    def close(self) -> None:
        """Stop serving and unregister every cache."""
        self._server.shutdown()
        self._server.server_close()
        for cache in self._caches:
            self._metrics.unregister_prometheus(cache)


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C."""
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass


def _run_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .workload import DEMO_STRATEGIES, generate_ops, run_scenario, summarize

    strategies = list(dict.fromkeys(_split(args.strategies)))
    unknown = [s for s in strategies if s not in DEMO_STRATEGIES]
    if unknown:
        err.write(
            f"cachekit demo: error: unknown strategy {unknown[0]!r} "
            f"(choose from {', '.join(DEMO_STRATEGIES)})\n"
        )
        return 2
    try:
        ttls = list(dict.fromkeys(_ttl(t) for t in _split(args.ttl)))
    except argparse.ArgumentTypeError as exc:
        err.write(f"cachekit demo: error: --ttl: {exc}\n")
        return 2
    if args.ops_per_second <= 0:
        err.write("cachekit demo: error: --ops-per-second must be > 0\n")
        return 2
    try:
        from .workload_db import SqlUserStore
    except ImportError as exc:
        err.write(f"cachekit demo: error: {exc}\n")
        return 1

    metrics = _Metrics(args.metrics_port) if args.metrics_port is not None else None
    if metrics is not None:
        err.write(f"serving Prometheus metrics at {metrics.url}\n")
    caches: list[Any] = []

    def on_cache(cache: Any) -> None:
        caches.append(cache)
        if metrics is not None:
            metrics.register(cache)

    def on_repository(repo: Any) -> None:
        # a repository counts its rows in a child cache of its own: export that too
        if metrics is not None:
            metrics.register(repo)

    scenarios: list[tuple[str, float | None]] = []
    for s in strategies:
        scenarios += [(s, None)] if s == "none" else [(s, t) for t in ttls]
    ops = generate_ops(
        rows=args.rows,
        ops=args.ops,
        write_ratio=args.write_ratio,
        bypass_writes=args.bypass_writes,
        zipf=args.zipf,
        seed=args.seed,
    )
    progress = Progress(len(ops) * len(scenarios), stream=err, enabled=not args.quiet)
    tmpdir = tempfile.mkdtemp(prefix="cachekit-demo-")
    results = []
    try:
        with SqlUserStore(_db_url(args.db, tmpdir), args.rows, seed=args.seed) as store:
            database = store.engine.dialect.name
            for strategy, ttl in scenarios:
                progress.label = (
                    strategy if strategy == "none" else f"{strategy} ttl={_fmt_ttl(ttl)}"
                )
                result = run_scenario(
                    ops,
                    store,
                    strategy=strategy,
                    ttl=ttl,
                    cache_url=args.cache_url,
                    ops_per_second=args.ops_per_second,
                    progress=progress.update,
                    on_cache=on_cache,
                    on_repository=on_repository,
                )
                results.append(result)
        progress.close()
        reading = summarize(results)
        if args.json:
            out.write(json.dumps(_json_doc(args, strategies, ttls, results, reading), indent=2))
            out.write("\n")
        else:
            out.write(_text_report(args, database, results, reading))
        out.flush()
        if metrics is not None:
            err.write(f"run finished; still serving metrics at {metrics.url} (Ctrl-C to stop)\n")
            _wait_for_interrupt()
    finally:
        progress.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        if metrics is not None:
            metrics.close()
        for cache in caches:
            cache.close()
    return 0


def _simulated(args: argparse.Namespace) -> bool:
    return urlsplit(str(args.cache_url)).scheme.lower() == "memory"


def _json_doc(
    args: argparse.Namespace,
    strategies: list[str],
    ttls: list[float | None],
    results: Sequence[Any],
    reading: str,
) -> dict[str, Any]:
    config = {k: v for k, v in vars(args).items() if k not in ("command", "json", "quiet")}
    config.update(strategies=strategies, ttl=ttls)
    return {
        "command": "demo",
        "config": config,
        "clock": {
            "simulated": _simulated(args),
            "ops_per_second": args.ops_per_second,
            "simulated_seconds_per_run": args.ops / args.ops_per_second,
        },
        "results": [r.as_dict() for r in results],
        "reading": reading,
    }


def _text_report(
    args: argparse.Namespace, database: str, results: Sequence[Any], reading: str
) -> str:
    writes = results[0].writes + results[0].bypass_writes if results else 0
    lines = [
        f"cachekit demo: {args.ops:,} ops on {args.rows:,} users ({database}), Zipf skew "
        f"{args.zipf:g}, {args.write_ratio:.0%} writes ({writes:,}), "
        f"{args.bypass_writes:.0%} of them bypassing the cache, seed {args.seed}",
    ]
    if _simulated(args):
        lines.append(
            f"clock: simulated, {args.ops_per_second:g} ops/s -> "
            f"{args.ops / args.ops_per_second:g} s per run; TTLs are simulated seconds, "
            "latencies are real"
        )
    else:
        lines.append(
            f"clock: {args.cache_url} expires entries in real time; this run takes seconds, "
            "so long TTLs never expire here"
        )
    lines += [
        "",
        render_table(results),
        "",
        "stale read = a read that returned another version than the database's committed "
        "one at that moment",
        f"reading: {reading}",
    ]
    errors = sum(r.cache_errors for r in results)
    if errors:
        lines.append(
            f"warning: the cache reported {errors:,} errors during the runs (fail-open: those "
            "calls went to the database); the log above says which"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cachekit`` command line; return the exit status."""
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "inspect" and not extra[0].startswith("-"):
        # "inspect URL --namespace NS KEY": argparse leaves a positional after an option over
        args.target += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from .ops import COMMANDS as OPS_COMMANDS

    if args.command in OPS_COMMANDS:
        from .ops import run_ops_command

        return run_ops_command(args, sys.stdout, sys.stderr, sys.stdin)
    try:
        if args.command == "bench":
            from .bench_cli import run_bench_command

            return run_bench_command(args, sys.stdout, sys.stderr)
        return _run_demo(args, sys.stdout, sys.stderr)
    except CacheError as exc:
        sys.stderr.write(f"cachekit {args.command}: error: {exc}\n")
        return 1
