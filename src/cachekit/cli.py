"""The ``cachekit`` command line: ``demo``, ``bench``, and ``inspect`` / ``stats`` / ``flush``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from . import __version__
from .errors import CacheError

__all__ = ["Progress", "add_workload_arguments", "main", "render_table"]

DEFAULT_TTLS = ("10", "60")


class Progress:
    """A one-line progress bar on a stream, drawn only for a TTY and only after ``delay`` s."""

    def __init__(
        self, total: int, *, stream: TextIO = sys.stderr, enabled: bool = True, delay: float = 1.0
    ) -> None:
        self.total, self.done, self.label = max(total, 1), 0, ""
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self._start = time.monotonic()
        self._delay = delay
        self._next_draw = self._start + delay
        self._drawn = False

    def update(self, n: int) -> None:
        """Count ``n`` more steps done; redraw at most ten times a second."""
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now >= self._next_draw:
            self._next_draw = now + 0.1
            self._draw(now)

    def _draw(self, now: float) -> None:
        width = 30
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * width)
        elapsed = now - self._start
        self.stream.write(f"\r[{bar:<{width}}] {frac:4.0%} {elapsed:5.1f}s  {self.label:<34.34}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar, if one was drawn."""
        if self._drawn:
            self.stream.write("\r" + " " * 84 + "\r")
            self.stream.flush()
            self._drawn = False


def _ttl(text: str) -> float | None:
    if text.lower() in ("none", "inf", "never"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"TTL must be seconds or 'none', not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("TTL must be > 0 seconds (or 'none' for no expiry)")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _split(values: Sequence[str]) -> list[str]:
    """Accept ``a b``, ``a,b`` and mixes of both."""
    return [v for item in values for v in item.split(",") if v]


def add_workload_arguments(
    parser: argparse.ArgumentParser,
    *,
    ops_default: int | None = 50_000,
    ttl_default: Sequence[str] | None = DEFAULT_TTLS,
    ttl_help: str = "one or more TTLs in (simulated) seconds, or 'none' (default: 10 60)",
    strategies: Sequence[str] | None = None,
    bypass_default: float = 0.2,
    rate_default: float = 500.0,
) -> None:
    """Add the workload knobs shared by ``demo`` and ``bench`` to ``parser``."""
    from .workload import STRATEGIES

    choices = tuple(strategies or STRATEGIES)

    parser.add_argument(
        "--rows",
        "--keys",
        dest="rows",
        type=_positive_int,
        default=10_000,
        help="keys (users) to seed",
    )
    parser.add_argument(
        "--ops",
        type=_positive_int,
        default=ops_default,
        help="operations per run" + ("" if ops_default is None else f" (default {ops_default})"),
    )
    parser.add_argument("--write-ratio", type=_fraction, default=0.05, help="share of writes")
    parser.add_argument(
        "--bypass-writes",
        type=_fraction,
        default=bypass_default,
        help="share of writes made around the cache, like another service writing the "
        f"database directly; they are what makes TTL staleness visible (default {bypass_default})",
    )
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf skew (0 = uniform)")
    parser.add_argument(
        "--ttl",
        nargs="+",
        default=None if ttl_default is None else list(ttl_default),
        metavar="SECONDS",
        help=ttl_help,
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=list(choices),
        metavar="NAME",
        help=f"any of {', '.join(choices)} (default: all)",
    )
    parser.add_argument(
        "--ops-per-second",
        type=float,
        default=rate_default,
        help="simulated request rate: the cache clock moves 1/N s per operation "
        f"(default {rate_default:g})",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="SQLite file or SQLAlchemy URL (default: a SQLite file in a temporary directory)",
    )
    parser.add_argument("--cache-url", default="memory://", help="cache backend URL")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the workload")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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


def _db_url(db: str | None, tmpdir: str) -> str:
    if db is None:
        return "sqlite:///" + os.path.join(tmpdir, "cachekit-demo.db")
    return db if "://" in db else "sqlite:///" + os.path.abspath(db)


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
