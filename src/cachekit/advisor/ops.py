"""The operator's commands ``cachekit inspect``, ``stats`` and ``flush``: parser and dispatch.

Each one talks to a shared cache server (Redis, Redis Cluster, memcached)
with short timeouts, prints what it found, and fails with one line and exit
status 2 on a bad URL or a server that does not answer; never a traceback.
Credentials in a URL (a password, a ``password=`` query value) never appear in
anything printed: URLs are shown masked, and error texts are scrubbed.

This module holds the parser and the dispatch; each command lives in its own
module (``ops_inspect``, ``ops_stats``, ``ops_flush``) and what they share in
``ops_common``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

# mask_url, scrub and parse_metrics moved out: re-exported (``as``) because
# tests/test_cli_ops.py imports them from here
from .ops_common import _Failed
from .ops_common import mask_url as mask_url
from .ops_common import scrub as scrub
from .ops_flush import _flush
from .ops_inspect import _inspect
from .ops_stats import _stats
from .ops_stats import parse_metrics as parse_metrics

__all__ = ["COMMANDS", "add_ops_commands", "mask_url", "run_ops_command", "scrub"]

#: The subcommands this module serves.
COMMANDS = ("inspect", "stats", "flush")


# ---------------------------------------------------------------- the parser


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_ops_commands(sub: Any) -> None:
    """Add ``inspect``, ``stats`` and ``flush`` to the ``cachekit`` subcommand parsers."""
    inspect = sub.add_parser(
        "inspect",
        usage="cachekit inspect [-h] URL --namespace NS [KEY] [--serializer S] [--limit N]",
        help="show a namespace (version, keys) or one entry (TTL left, size, value)",
        description="Without KEY: the namespace's current version and a count and sample of "
        "its keys (Redis; memcached cannot list keys). With KEY: the entry, its TTL left, its "
        "size in bytes and a decoded preview.",
    )
    # one positional list: argparse (before 3.12) cannot match an optional positional
    # that comes after an option, as in "inspect URL --namespace NS KEY"
    inspect.add_argument(
        "target",
        nargs="+",
        metavar="URL [KEY]",
        help="cache URL (redis://..., memcached://...), then optionally one cache key",
    )
    inspect.add_argument("--namespace", required=True, metavar="NS", help="cache namespace")
    inspect.add_argument(
        "--serializer",
        choices=("json", "pickle", "none"),
        default="json",
        help="how the values were encoded (default json; pickle needs --pickle-key or "
        "CACHEKIT_PICKLE_KEY)",
    )
    inspect.add_argument("--pickle-key", default=None, help="signing key of pickled values")
    inspect.add_argument(
        "--limit", type=_count, default=20, metavar="N", help="keys to show in the sample (20)"
    )
    stats = sub.add_parser(
        "stats",
        help="server-wide counters, and an application's cachekit_* metrics",
        description="Print the server's counters (hits, misses, evictions, expirations) and, "
        "with --metrics, the cachekit_* counters an application exports to Prometheus.",
    )
    stats.add_argument("url", metavar="URL", help="cache URL: redis://..., memcached://...")
    stats.add_argument(
        "--metrics",
        metavar="URL",
        default=None,
        help="an application's Prometheus endpoint, e.g. http://127.0.0.1:9100/metrics",
    )
    flush = sub.add_parser(
        "flush",
        help="drop every entry of one namespace at once (its version changes)",
        description="Bump the namespace's version: every entry written under the old one is "
        "unreachable at once (it expires on its own). Other namespaces are untouched.",
    )
    flush.add_argument("url", metavar="URL", help="cache URL: redis://..., memcached://...")
    flush.add_argument("--namespace", required=True, metavar="NS", help="cache namespace")
    flush.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def run_ops_command(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Run ``inspect``, ``stats`` or ``flush``; return the exit status."""
    if args.command == "inspect":
        if len(args.target) > 2:
            err.write("cachekit inspect: error: give one URL and at most one KEY\n")
            return 2
        args.url, args.key = args.target[0], (args.target[1:] or [None])[0]
    urls = [args.url, *([args.metrics] if getattr(args, "metrics", None) else [])]
    run: Callable[..., int] = {"inspect": _inspect, "stats": _stats, "flush": _flush}[args.command]
    try:
        return run(args, out, err, stdin)
    except _Failed as exc:
        message, code = str(exc), exc.code
    except KeyboardInterrupt:
        err.write(f"\ncachekit {args.command}: interrupted\n")
        return 130
    except Exception as exc:  # a driver's surprise still gets one line, never a traceback
        message, code = f"{type(exc).__name__}: {exc}", 2
    line = " ".join(scrub(message, *urls).split())
    err.write(f"cachekit {args.command}: error: {line[:400]}\n")
    return code
