"""Hot path: one in-process cache hit through cachekit and through its peers, side by side.

Every contestant memoizes the same function ``square(x)`` and is called with
a warm key, so each timed call is a hit:

- ``cachekit @cache.cached``: a ``MemoryBackend`` cache, key from the bound
  arguments (the default), stats counting on (it always is);
- ``cachekit @cache.cached(key=...)``: the same with a key template;
- ``functools.lru_cache``: the floor - a C dict lookup, no TTL, no stats;
- ``cachetools.cached(TTLCache)``: the target of issue 2 (ratio <= 1.0);
- ``dogpile.cache`` memory region with ``cache_on_arguments``, ``cashews``
  ``mem://`` and ``aiocache`` ``Cache.MEMORY``, when importable (``[bench]``
  extra). The async ones are timed inside one event loop: N awaited calls
  per round, the loop created once.

All contestants run in the same process, in interleaved rounds whose order
rotates, so machine noise falls on all of them alike. Each round times a
batch sized to take about ``--round-ms``; the figure per contestant is the
median over rounds of the time per call, with the min-max spread. The ratio
to cachetools is taken per round (the rounds ran side by side) and its
median and spread are reported. Loop overhead (~0.02 us) is included for all.

    .venv/bin/python benchmarks/hot_path.py --rounds 21 --plot docs/img/hot_path.png

``--check`` exits 1 if the cachekit hit is slower than cachetools (ratio > 1.0).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cachetools

import cachekit as ck

KEY = 7
Timer = Callable[[int], float]  # run n hits, return elapsed seconds


def _sync_timer(fn: Callable[[int], int]) -> Timer:
    fn(KEY)  # warm

    def run(n: int) -> float:
        repeat, perf = itertools.repeat, time.perf_counter
        start = perf()
        for _ in repeat(None, n):
            fn(KEY)
        return perf() - start

    return run


def _async_timer(fn: Callable[[int], object], loop: asyncio.AbstractEventLoop) -> Timer:
    async def timed(n: int) -> float:
        repeat, perf = itertools.repeat, time.perf_counter
        start = perf()
        for _ in repeat(None, n):
            await fn(KEY)  # type: ignore[misc]
        return perf() - start

    loop.run_until_complete(timed(1))  # warm

    def run(n: int) -> float:
        return loop.run_until_complete(timed(n))

    return run


def cachekit_args() -> tuple[Timer, ck.Cache]:
    cache = ck.Cache(ck.MemoryBackend(maxsize=10_000), namespace="bench", ttl=300)

    @cache.cached()
    def square(x: int) -> int:
        return x * x

    return _sync_timer(square), cache


def cachekit_template() -> tuple[Timer, ck.Cache]:
    cache = ck.Cache(ck.MemoryBackend(maxsize=10_000), namespace="bench-t", ttl=300)

    @cache.cached(key="square:{x}")
    def square(x: int) -> int:
        return x * x

    return _sync_timer(square), cache


def cachekit_async(loop: asyncio.AbstractEventLoop) -> tuple[Timer, ck.AsyncCache]:
    from cachekit.backends.aio.memory import AsyncMemoryBackend

    acache = ck.AsyncCache(
        AsyncMemoryBackend(ck.MemoryBackend(maxsize=10_000)), namespace="bench-a", ttl=300
    )

    @acache.cached()
    async def square(x: int) -> int:
        return x * x

    return _async_timer(square, loop), acache


def trivial_coroutine(loop: asyncio.AbstractEventLoop) -> Timer:
    async def square(x: int) -> int:
        return x * x

    return _async_timer(square, loop)


def lru() -> Timer:
    @functools.lru_cache(maxsize=10_000)
    def square(x: int) -> int:
        return x * x

    return _sync_timer(square)


def cachetools_ttl() -> Timer:
    @cachetools.cached(cachetools.TTLCache(maxsize=10_000, ttl=300))
    def square(x: int) -> int:
        return x * x

    return _sync_timer(square)


def dogpile_memory() -> Timer:
    from dogpile.cache import make_region

    region = make_region().configure("dogpile.cache.memory", expiration_time=300)

    @region.cache_on_arguments()
    def square(x: int) -> int:
        return x * x

    return _sync_timer(square)


def cashews_memory(loop: asyncio.AbstractEventLoop) -> Timer:
    from cashews import Cache

    cache = Cache()
    cache.setup("mem://")

    @cache(ttl="5m")
    async def square(x: int) -> int:
        return x * x

    return _async_timer(square, loop)


def aiocache_memory(loop: asyncio.AbstractEventLoop) -> Timer:
    from aiocache import Cache, cached

    @cached(ttl=300, cache=Cache.MEMORY)
    async def square(x: int) -> int:
        return x * x

    return _async_timer(square, loop)


@dataclass
class Contestant:
    name: str
    run: Timer
    per_call: int = 1000
    us: list[float] = field(default_factory=list)

    def calibrate(self, seconds: float) -> None:
        """Size the batch so one round takes about ``seconds``."""
        n = 100
        while True:
            elapsed = self.run(n)
            if elapsed >= seconds / 4 or n >= 10_000_000:
                self.per_call = max(100, int(n * seconds / max(elapsed, 1e-9)))
                return
            n *= 4

    def round(self) -> float:
        us = self.run(self.per_call) / self.per_call * 1e6
        self.us.append(us)
        return us


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(us: float) -> str:
    return f"{us:.3f}" if us < 1 else f"{us:.2f}" if us < 10 else f"{us:.1f}"


def build(loop: asyncio.AbstractEventLoop) -> tuple[list[Contestant], list[Any]]:
    ck_args, cache_a = cachekit_args()
    ck_tmpl, cache_t = cachekit_template()
    ck_async, cache_async = cachekit_async(loop)
    contestants = [
        Contestant("cachekit @cache.cached", ck_args),
        Contestant("cachekit @cache.cached(key=template)", ck_tmpl),
        Contestant("functools.lru_cache", lru()),
        Contestant("cachetools.cached(TTLCache)", cachetools_ttl()),
        Contestant("cachekit @acache.cached (async)", ck_async),
        Contestant("await a trivial coroutine (async floor)", trivial_coroutine(loop)),
    ]
    optional: list[tuple[str, Callable[[], Timer]]] = [
        ("dogpile.cache memory (cache_on_arguments)", dogpile_memory),
        ("cashews mem:// (async)", lambda: cashews_memory(loop)),
        ("aiocache Cache.MEMORY (async)", lambda: aiocache_memory(loop)),
    ]
    for name, make in optional:
        try:
            contestants.append(Contestant(name, make()))
        except ImportError as exc:
            print(f"skipped {name}: {exc} (pip install -e '.[bench]')", file=sys.stderr)
    return contestants, [cache_a, cache_t, cache_async]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds")
    parser.add_argument("--round-ms", type=float, default=40.0, help="time per contestant-round")
    parser.add_argument("--plot", metavar="PNG", help="write a bar chart here")
    parser.add_argument("--check", action="store_true", help="exit 1 if cachekit > cachetools")
    args = parser.parse_args(argv)

    loop = asyncio.new_event_loop()
    try:
        contestants, caches = build(loop)
        for c in contestants:
            c.calibrate(args.round_ms / 1000)
        for r in range(args.rounds):
            shift = r % len(contestants)
            for c in contestants[shift:] + contestants[:shift]:
                c.round()
    finally:
        loop.close()

    base = next(c for c in contestants if c.name.startswith("cachetools"))
    print(
        f"Python {platform.python_version()} on {_cpu_model()}, {os.cpu_count()} CPUs; "
        f"cachekit {ck.__version__}, cachetools {_version('cachetools')}, "
        f"dogpile.cache {_version('dogpile.cache')}, cashews {_version('cashews')}, "
        f"aiocache {_version('aiocache')}"
    )
    print(f"{args.rounds} interleaved rounds of ~{args.round_ms:g} ms per contestant\n")
    print("| contestant | us per hit, median [min-max] | x cachetools, median [min-max] |")
    print("|---|---|---|")
    rows = []
    for c in contestants:
        ratios = [a / b for a, b in zip(c.us, base.us, strict=True)]
        med, rmed = statistics.median(c.us), statistics.median(ratios)
        rows.append((c, med, rmed))
        print(
            f"| {c.name} | {_fmt(med)} [{_fmt(min(c.us))}-{_fmt(max(c.us))}] "
            f"| {rmed:.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] |"
        )
    hits = sum(cache.stats().hits for cache in caches)
    print(f"\ncachekit counted {hits:,} hits during the run (stats counting stays on)")
    ck_ratio = rows[0][2]
    verdict = "meets" if ck_ratio <= 1.0 else "MISSES"
    print(f"cachekit hit / cachetools hit = {ck_ratio:.2f}x: {verdict} the <= 1.0x target")
    a_hit = next(c for c in contestants if c.name.startswith("cachekit @acache"))
    floor = next(c for c in contestants if c.name.startswith("await a trivial"))
    extra = statistics.median(a - b for a, b in zip(a_hit.us, floor.us, strict=True))
    verdict = "meets" if extra <= 1.5 else "MISSES"
    print(
        f"async hit - awaiting a trivial coroutine = {extra:.2f} us per hit "
        f"(median of per-round differences): {verdict} the <= 1.5 us target"
    )

    if args.plot:
        plot(rows, args.plot, args.rounds)
        print(f"plot written to {args.plot}")
    return 1 if args.check and ck_ratio > 1.0 else 0


def plot(rows: list[tuple[Contestant, float, float]], path: str, rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name.replace(" (", "\n(") for c, _, _ in rows]
    med = [m for _, m, _ in rows]
    lo = [m - min(c.us) for c, m, _ in rows]
    hi = [max(c.us) - m for c, m, _ in rows]
    colors = ["#1f77b4" if c.name.startswith("cachekit") else "#aaaaaa" for c, _, _ in rows]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    y = range(len(rows))
    ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per cache hit (log scale; median, bars = min-max)")
    ax.set_title(f"In-process cache hit, same process, {rounds} interleaved rounds")
    for i, (c, m, r) in enumerate(rows):
        label = f"{_fmt(m)} us ({r:.2f}x cachetools)"
        ax.text(max(c.us) * 1.2, i, label, va="center", fontsize=8)
    ax.set_xlim(right=max(med) * 30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
