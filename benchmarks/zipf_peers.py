"""Zipf throughput and hit ratio per library, and per cachekit strategy under writes.

One seeded Zipf key stream (5,000 keys, skew 1.1, 50,000 reads) goes through
each library's decorator over an in-process cache of the same capacity (1,000
entries); the decorated function simulates a database read (a counter and a
``--load-us`` busy wait). Then cachekit over Redis and Memcached with the same
stream, and cachekit CacheAside vs WriteThrough with ``--write-ratio`` of the
operations being writes through ``@cache.writes(key=...)``.

    .venv/bin/python benchmarks/zipf_peers.py --runs 3

Printed per row: hit ratio (1 - loader calls / reads), loader calls and
throughput (operations per second, single thread, median over runs with
min-max spread). Peers are optional imports. Exits non-zero on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import importlib.util
import itertools
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

INSTALL_HINT = "not installed (pip install 'cachekit[bench]')"


# --------------------------------------------------------------------------- workload


def zipf_stream(keys: int, skew: float, length: int, seed: int) -> list[int]:
    """Return ``length`` key ids in [0, keys), rank r drawn with weight 1 / (r + 1) ** skew."""
    cumulative = list(itertools.accumulate(1.0 / (r + 1) ** skew for r in range(keys)))
    total = cumulative[-1]
    rng = random.Random(seed)
    return [bisect.bisect_left(cumulative, rng.random() * total) for _ in range(length)]


def write_mask(length: int, ratio: float, seed: int) -> list[bool]:
    rng = random.Random(seed + 1)
    return [rng.random() < ratio for _ in range(length)]


class Source:
    """The simulated database: counts reads, spends ``cost_s`` per read, versions rows."""

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s
        self.reads = 0
        self.rows: dict[int, int] = {}

    def read(self, k: int) -> dict[str, int]:
        self.reads += 1
        end = time.perf_counter() + self.cost_s
        while time.perf_counter() < end:
            pass
        return {"id": k, "v": self.rows.get(k, 0)}

    def write(self, k: int) -> dict[str, int]:
        self.rows[k] = self.rows.get(k, 0) + 1
        return {"id": k, "v": self.rows[k]}


# --------------------------------------------------------------------------- libraries
# A builder takes (source, capacity) and returns (call, bound): call(k) reads through the
# library's decorator (a coroutine function for asyncio peers), bound describes the size limit.
# Every decorator uses its default key (function name + arguments), as users would.


def b_lru_cache(src: Source, cap: int) -> tuple[Callable[[int], Any], str]:
    return functools.lru_cache(maxsize=cap)(src.read), f"LRU {cap}"


def b_cachekit_memory(src: Source, cap: int) -> tuple[Callable[[int], Any], str]:
    import cachekit as ck

    cache = ck.Cache.from_url(f"memory://?maxsize={cap}", namespace="bench-zipf", ttl=300)
    return cache.cached()(src.read), f"LRU {cap} + TTL heap"


def remote(url: str) -> Callable[[Source, int], tuple[Callable[[int], Any], str]]:
    def build(src: Source, cap: int) -> tuple[Callable[[int], Any], str]:
        import cachekit as ck

        ns = f"bench-zipf-{uuid.uuid4().hex[:8]}"
        cache = ck.Cache.from_url(url, namespace=ns, ttl=300)
        return cache.cached()(src.read), "server (unbounded here)"

    return build


def b_cachetools(kind: str) -> Callable[[Source, int], tuple[Callable[[int], Any], str]]:
    def build(src: Source, cap: int) -> tuple[Callable[[int], Any], str]:
        import threading

        import cachetools

        store: Any = (
            cachetools.LRUCache(cap) if kind == "LRU" else cachetools.TTLCache(cap, ttl=300)
        )
        call = cachetools.cached(store, lock=threading.Lock())(src.read)
        return call, f"{kind}Cache {cap}"

    return build


def b_dogpile(src: Source, cap: int) -> tuple[Callable[[int], Any], str]:
    import cachetools
    from dogpile.cache import make_region

    region = make_region().configure(
        "dogpile.cache.memory",
        expiration_time=300,
        arguments={"cache_dict": cachetools.LRUCache(cap)},
    )

    @region.cache_on_arguments()
    def read(k: int) -> dict[str, int]:
        return src.read(k)

    return read, f"cache_dict=LRUCache({cap})"


def b_cashews(src: Source, cap: int) -> tuple[Callable[[int], Any], str]:
    from cashews import Cache as CashewsCache

    cache = CashewsCache()
    cache.setup(f"mem://?size={cap}")

    @cache(ttl=300)
    async def read(k: int) -> dict[str, int]:
        return src.read(k)

    return read, f"mem://?size={cap}"


def b_aiocache(src: Source, cap: int) -> tuple[Callable[[int], Any], str]:
    from aiocache import SimpleMemoryCache, cached

    @cached(cache=SimpleMemoryCache, ttl=300, namespace=f"zipf-{uuid.uuid4().hex[:8]}")
    async def read(k: int) -> dict[str, int]:
        return src.read(k)

    return read, "UNBOUNDED (no size limit)"


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    library: str
    backend: str
    bound: str = ""
    hit_ratios: list[float] = field(default_factory=list)
    loads: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    note: str = ""


def run_reads(call: Callable[[int], Any], stream: list[int], is_async: bool) -> float:
    if is_async:

        async def main() -> float:
            started = time.perf_counter()
            for k in stream:
                await call(k)
            return time.perf_counter() - started

        return asyncio.run(main())
    started = time.perf_counter()
    for k in stream:
        call(k)
    return time.perf_counter() - started


def measure_reads(
    row: Row,
    build: Callable[[Source, int], tuple[Callable[[int], Any], str]],
    stream: list[int],
    args: argparse.Namespace,
    is_async: bool,
) -> None:
    for _ in range(args.runs):
        src = Source(args.load_us / 1e6)
        call, row.bound = build(src, args.capacity)
        wall = run_reads(call, stream, is_async)
        row.loads.append(src.reads)
        row.hit_ratios.append(1 - src.reads / len(stream))
        row.rates.append(len(stream) / wall)


def strategy_run(
    url: str, policy_name: str, stream: list[int], writes: list[bool], load_s: float
) -> tuple[int, int, float, int]:
    """One pass of reads and writes; return (loader calls, reads, seconds, stale reads)."""
    import cachekit as ck

    src = Source(load_s)
    policy = ck.WriteThrough(ttl=300) if policy_name == "WriteThrough" else ck.CacheAside(ttl=300)
    ns = f"bench-zipf-{uuid.uuid4().hex[:8]}"
    cache = ck.Cache.from_url(url, namespace=ns, policy=policy)

    @cache.cached(key="item:{k}")
    def read(k: int) -> dict[str, int]:
        return src.read(k)

    @cache.writes(key="item:{k}")
    def save(k: int) -> dict[str, int]:
        return src.write(k)

    stale = reads = 0
    started = time.perf_counter()
    for k, is_write in zip(stream, writes, strict=True):
        if is_write:
            save(k)
        else:
            reads += 1
            if read(k)["v"] != src.rows.get(k, 0):
                stale += 1
    wall = time.perf_counter() - started
    cache.close()
    return src.reads, reads, wall, stale


def measure_strategy(
    row: Row, url: str, policy_name: str, stream: list[int], args: argparse.Namespace
) -> None:
    writes = write_mask(len(stream), args.write_ratio, args.seed)
    row.bound = f"{args.write_ratio:.0%} writes"
    for _ in range(args.runs):
        loads, reads, wall, stale = strategy_run(
            url, policy_name, stream, writes, args.load_us / 1e6
        )
        row.loads.append(loads)
        row.hit_ratios.append(1 - loads / reads)
        row.rates.append(len(stream) / wall)
        row.stale.append(stale)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}-{fmt(max(values))})"


def print_table(title: str, rows: list[Row], with_stale: bool = False) -> None:
    print(f"\n{title}\n")
    cols = ["library", "backend", "size bound", "hit ratio", "loader calls", "ops/s"]
    if with_stale:
        cols.append("stale reads")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        if r.note:
            cells = [r.library, r.backend, r.note] + [""] * (len(cols) - 3)
        else:
            cells = [
                r.library,
                r.backend,
                r.bound,
                spread(r.hit_ratios, lambda v: f"{v:.1%}"),
                spread([float(x) for x in r.loads], lambda v: f"{v:,.0f}"),
                spread(r.rates, lambda v: f"{v:,.0f}"),
            ]
            if with_stale:
                cells.append(spread([float(x) for x in r.stale], lambda v: f"{v:,.0f}"))
        print("| " + " | ".join(cells) + " |")


def plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.rates]
    labels = [f"{r.library}\n{r.backend}" for r in measured]
    colors = ["tab:green" if r.library.startswith("cachekit") else "tab:gray" for r in measured]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.4 * len(measured) + 1.6), sharey=True)
    ys = range(len(measured))
    rates = [statistics.median(r.rates) for r in measured]
    ratios = [statistics.median(r.hit_ratios) * 100 for r in measured]
    ax1.barh(ys, rates, color=colors)
    ax1.set_yticks(ys, labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("reads per second, one thread")
    ax2.barh(ys, ratios, color=colors)
    ax2.set_xlim(min(ratios) - 5, 100)
    ax2.set_xlabel("hit ratio %")
    for i, (a, b) in enumerate(zip(rates, ratios, strict=True)):
        ax1.text(a, i, f" {a:,.0f}", va="center", fontsize=7)
        ax2.text(b, i, f" {b:.1f}", va="center", fontsize=7)
    fig.suptitle("Zipf reads (5,000 keys, skew 1.1, 1,000-entry caches)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot written to {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--keys", type=int, default=5000)
    p.add_argument("--skew", type=float, default=1.1)
    p.add_argument("--reads", type=int, default=50_000)
    p.add_argument("--capacity", type=int, default=1000)
    p.add_argument("--load-us", type=float, default=50.0, help="simulated DB read cost")
    p.add_argument("--write-ratio", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--redis-url", default="redis://127.0.0.1:16379/0")
    p.add_argument("--memcached-url", default="memcached://127.0.0.1:21211")
    p.add_argument("--no-remote", action="store_true", help="skip Redis and Memcached rows")
    p.add_argument("--plot", metavar="PATH.png")
    args = p.parse_args(argv)
    if urlsplit(args.redis_url).scheme not in ("redis", "rediss", "unix"):
        p.error("--redis-url must be a redis:// URL")

    stream = zipf_stream(args.keys, args.skew, args.reads, args.seed)
    top = sum(1 for k in stream if k < args.capacity) / len(stream)
    failed = False

    libs: list[tuple[str, str, str | None, Any, bool]] = [
        ("functools.lru_cache", "in-process", None, b_lru_cache, False),
        ("cachekit", "memory://", None, b_cachekit_memory, False),
        ("cachetools", "cached LRUCache", "cachetools", b_cachetools("LRU"), False),
        ("cachetools", "cached TTLCache", "cachetools", b_cachetools("TTL"), False),
        ("dogpile.cache", "memory", "dogpile.cache", b_dogpile, False),
        ("cashews", "mem:// (asyncio)", "cashews", b_cashews, True),
        ("aiocache", "SimpleMemoryCache (asyncio)", "aiocache", b_aiocache, True),
    ]
    if not args.no_remote:
        libs += [
            ("cachekit", "redis://", None, remote(args.redis_url), False),
            ("cachekit", "memcached://", None, remote(args.memcached_url), False),
        ]
    rows: list[Row] = []
    for library, backend, module, build, is_async in libs:
        row = Row(library, backend)
        rows.append(row)
        if module and not installed(module):
            row.note = INSTALL_HINT
            continue
        print(f"  {library} / {backend} ...", file=sys.stderr, flush=True)
        try:
            measure_reads(row, build, stream, args, is_async)
        except Exception as exc:
            failed = True
            row.note = f"ERROR {type(exc).__name__}: {exc}"[:120]

    strategy_rows: list[Row] = []
    urls = [("memory://", f"memory://?maxsize={args.capacity}")]
    if not args.no_remote:
        urls.append(("redis://", args.redis_url))
    for name, url in urls:
        for policy in ("CacheAside", "WriteThrough"):
            row = Row(f"cachekit {policy}", name)
            strategy_rows.append(row)
            print(f"  cachekit {policy} / {name} ...", file=sys.stderr, flush=True)
            try:
                measure_strategy(row, url, policy, stream, args)
            except Exception as exc:
                failed = True
                row.note = f"ERROR {type(exc).__name__}: {exc}"[:120]

    print(
        f"\nWorkload: {args.reads:,} reads, {args.keys:,} keys, Zipf skew {args.skew:g} "
        f"(seed {args.seed}); the {args.capacity:,} hottest keys get {top:.1%} of reads. "
        f"Loader: counter + {args.load_us:g} us busy wait. One thread; {args.runs} runs, "
        "median (min-max)."
    )
    print_table("Reads only, per library", rows)
    print_table(
        f"cachekit strategies, {args.write_ratio:.0%} of operations are writes "
        "(ops/s counts reads + writes; stale = read value != database value)",
        strategy_rows,
        with_stale=True,
    )
    if args.plot:
        plot(rows, args.plot)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
