"""``cachekit stats``: a server's counters, and an application's ``cachekit_*`` metrics."""

from __future__ import annotations

import argparse
import re
import urllib.error
import urllib.request
from typing import TextIO
from urllib.parse import urlsplit

from ..backends.base import SupportsServerStats
from .ops_common import TIMEOUT, _call, _connect, _Failed, mask_url

__all__ = ["parse_metrics"]

_SAMPLE = re.compile(r"^(cachekit_[A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _stats(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    backend = _connect(args.url)
    try:
        stats = None
        if isinstance(backend, SupportsServerStats):
            stats = _call(args.url, backend.server_stats)
        out.write(f"cache:      {mask_url(args.url)}\n")
        if stats is not None:
            for name in sorted(stats):
                out.write(f"{name + ':':<11} {stats[name]:,.0f}\n")
            lookups = stats.get("hits", 0) + stats.get("misses", 0)
            if lookups:
                out.write(f"hit ratio:  {stats.get('hits', 0) / lookups:.1%} (whole server)\n")
        else:
            out.write("server:     this backend keeps no server-wide counters\n")
    finally:
        backend.close()
    if args.metrics:
        _metrics(args.metrics, out)
    return 0


def _scrape(url: str) -> str:
    if urlsplit(url).scheme not in ("http", "https"):
        raise _Failed(f"--metrics needs an http:// or https:// URL, not {mask_url(url)}")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT * 2) as resp:
            body: bytes = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _Failed(f"cannot scrape {mask_url(url)}: {exc}") from exc
    return body.decode("utf-8", "replace")


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Sum the ``cachekit_*`` samples of a Prometheus text scrape per ``cache`` label and name.

    Counter names lose ``cachekit_`` and ``_total``; histogram buckets are skipped.
    """
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if m is None:
            continue
        name, labels, value = m.groups()
        if name.endswith(("_bucket", "_created")):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        cache = dict(_LABEL.findall(labels or "")).get("cache", "")
        short = name.removeprefix("cachekit_").removesuffix("_total")
        per = out.setdefault(cache, {})
        per[short] = per.get(short, 0.0) + number
    return out


def _metrics(url: str, out: TextIO) -> None:
    families = parse_metrics(_scrape(url))
    out.write(f"metrics:    {mask_url(url)}\n")
    if not families:
        out.write("            no cachekit_* metrics there (is register_prometheus called?)\n")
        return
    for cache in sorted(families):
        figures = families[cache]
        hits, misses = figures.get("hits", 0.0), figures.get("misses", 0.0)
        ratio = f", hit ratio {hits / (hits + misses):.1%}" if hits + misses else ""
        out.write(f"  cache {cache!r}{ratio}\n")
        for name in sorted(figures):
            out.write(f"    {name + ':':<28} {figures[name]:,.6g}\n")
