"""``cachekit flush``: drop every entry of one namespace at once by changing its version."""

from __future__ import annotations

import argparse
import logging
from typing import Any, TextIO
from urllib.parse import urlsplit

from .ops_common import TIMEOUT, _call, _connect, _Failed, _read_version, mask_url


def _flush(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if not args.namespace:
        raise _Failed("--namespace must not be empty")
    backend = _connect(args.url)
    try:
        before = _read_version(args.url, backend, args.namespace)  # also: is the server there?
    finally:
        backend.close()
    where = f"namespace {args.namespace!r} on {mask_url(args.url)}"
    if not args.yes:
        if not stdin.isatty():
            raise _Failed(f"refusing to flush {where} without confirmation: pass --yes")
        err.write(
            f"Flush {where}? Every entry becomes unreachable at once (other namespaces are "
            "untouched). [y/N] "
        )
        err.flush()
        if stdin.readline().strip().lower() not in ("y", "yes"):
            err.write("not flushed\n")
            return 1
    from ..cache import Cache

    options: dict[str, Any] = {"fail_open": False}
    scheme = urlsplit(args.url).scheme.lower()
    if scheme.startswith(("redis", "rediss", "unix")):
        options.update(socket_timeout=TIMEOUT, connect_timeout=TIMEOUT)
    elif scheme == "memcached":
        options.update(timeout=TIMEOUT, connect_timeout=TIMEOUT)
    # the Cache logs a backend failure as it raises it; here the one-line error says it all
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        cache = _call(
            args.url, lambda: Cache.from_url(args.url, namespace=args.namespace, **options)
        )
        try:
            _call(args.url, cache.clear)
            after = _read_version(args.url, cache.backend, args.namespace)
        finally:
            cache.close()
    finally:
        logging.disable(previous)
    out.write(f"flushed {where}: version {before or '(none)'} -> {after}\n")
    return 0
