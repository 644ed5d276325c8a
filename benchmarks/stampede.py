"""Stampede: 32 callers released together on a cold key; how many loader calls per library.

Threads (cachekit, cachetools, dogpile.cache) are released by one
``threading.Barrier``; asyncio peers (cashews, aiocache) by 32 tasks gathered
on one event loop. Each run uses a fresh key, so every run starts cold. The
loader sleeps ``--load-ms`` (50 ms) and counts its calls.

    .venv/bin/python benchmarks/stampede.py --runs 5

Prints, per library and backend: loader calls and wall time (release to the
last caller's return), median over the runs with min-max spread. Peers are
optional: a missing one prints ``not installed``. Exits non-zero if a
scenario raised.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

INSTALL_HINT = "not installed (pip install 'cachekit[bench]')"


@dataclass
class Row:
    library: str
    backend: str
    model: str
    calls: list[int] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    note: str = ""


class Counter:
    """A thread-safe call counter."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def incr(self) -> None:
        with self._lock:
            self.n += 1


# --------------------------------------------------------------------------- drivers


def run_threads(n: int, call: Callable[[], Any]) -> float:
    """Release ``n`` threads at once on ``call``; return the wall time of the stampede."""
    barrier = threading.Barrier(n + 1)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return wall


def threaded_stampede(
    decorate: Callable[[Callable[[str], str]], Callable[[str], Any]], load_s: float, n: int
) -> tuple[int, float]:
    """Decorate a counting loader, stampede ``n`` threads on a fresh key: (calls, wall)."""
    counter = Counter()

    def load(k: str) -> str:
        counter.incr()
        time.sleep(load_s)
        return "value"

    cached = decorate(load)
    key = uuid.uuid4().hex
    wall = run_threads(n, lambda: cached(key))
    return counter.n, wall


def run_tasks(n: int, make_call: Callable[[], Any]) -> float:
    """Gather ``n`` coroutines of ``make_call()`` on a fresh loop; return the wall time."""

    async def main() -> float:
        coros = [make_call() for _ in range(n)]
        started = time.perf_counter()
        await asyncio.gather(*coros)
        return time.perf_counter() - started

    return asyncio.run(main())


# --------------------------------------------------------------------------- scenarios
# Each scenario: (library, backend, model, setup) where setup(load_s, n) returns
# a function run() -> (loader calls, wall seconds) for one cold-key stampede.

Scenario = Callable[[float, int], Callable[[], tuple[int, float]]]


def redis_parts(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def cachekit_scenarios(urls: dict[str, str]) -> list[tuple[str, str, str, Scenario]]:
    import cachekit as ck

    def make(url: str, decorated: bool) -> Scenario:
        def setup(load_s: float, n: int) -> Callable[[], tuple[int, float]]:
            cache = ck.Cache.from_url(url, namespace=f"bench-stampede-{uuid.uuid4().hex[:8]}")

            def run() -> tuple[int, float]:
                counter = Counter()
                key = uuid.uuid4().hex

                def loader() -> str:
                    counter.incr()
                    time.sleep(load_s)
                    return "value"

                if decorated:

                    @cache.cached(ttl=60)
                    def load(k: str) -> str:
                        return loader()

                    wall = run_threads(n, lambda: load(key))
                else:
                    wall = run_threads(n, lambda: cache.get_or_load(key, loader, ttl=60))
                return counter.n, wall

            return run

        return setup

    out = []
    for name, url in urls.items():
        out.append(("cachekit", name, "get_or_load, threads", make(url, False)))
        out.append(("cachekit", name, "@cache.cached, threads", make(url, True)))
    return out


def _process_worker(
    url: str, namespace: str, key: str, counter_key: str, lease_wait: float,
    threads: int, load_s: float, barrier: Any,
) -> None:  # fmt: skip
    """One of several processes in a cross-process stampede (spawned: module-level)."""
    import redis

    import cachekit as ck

    cache = ck.Cache.from_url(url, namespace=namespace, lease_wait=lease_wait)
    host, port = redis_parts(url)
    raw = redis.Redis(host=host, port=port)

    def loader() -> str:
        raw.incr(counter_key)  # loader calls counted across processes on the server
        time.sleep(load_s)
        return "value"

    barrier.wait()
    run_threads(threads, lambda: cache.get_or_load(key, loader, ttl=60))
    cache.close()
    raw.close()


def cross_process_scenarios(redis_url: str, processes: int) -> list[tuple[str, str, str, Scenario]]:
    """cachekit over Redis from several processes: single-flight is per process unless
    ``lease_wait`` makes a miss wait for another process's lease."""
    import multiprocessing

    import redis

    def make(lease_wait: float) -> Scenario:
        def setup(load_s: float, n: int) -> Callable[[], tuple[int, float]]:
            ctx = multiprocessing.get_context("spawn")
            namespace = f"bench-xp-{uuid.uuid4().hex[:8]}"
            host, port = redis_parts(redis_url)
            per_process = max(1, n // processes)

            def run() -> tuple[int, float]:
                key, counter_key = uuid.uuid4().hex, f"bench-xp-count-{uuid.uuid4().hex}"
                barrier = ctx.Barrier(processes + 1)
                worker_args = (
                    redis_url,
                    namespace,
                    key,
                    counter_key,
                    lease_wait,
                    per_process,
                    load_s,
                    barrier,
                )
                procs = [
                    ctx.Process(target=_process_worker, args=worker_args) for _ in range(processes)
                ]
                for proc in procs:
                    proc.start()
                barrier.wait(timeout=60)
                started = time.perf_counter()
                for proc in procs:
                    proc.join(60)
                wall = time.perf_counter() - started
                raw = redis.Redis(host=host, port=port)
                calls = int(raw.get(counter_key) or 0)
                raw.delete(counter_key)
                raw.close()
                return calls, wall

            return run

        return setup

    model = f"get_or_load, {processes} processes"
    return [
        ("cachekit", "redis", f"{model}", make(0.0)),
        ("cachekit", "redis", f"{model}, lease_wait=2", make(2.0)),
    ]


def cachetools_scenarios() -> list[tuple[str, str, str, Scenario]]:
    import cachetools

    def make(condition: bool) -> Scenario:
        def setup(load_s: float, n: int) -> Callable[[], tuple[int, float]]:
            def run() -> tuple[int, float]:
                cache: cachetools.TTLCache[Any, Any] = cachetools.TTLCache(1000, ttl=60)
                if condition:
                    cond = threading.Condition()
                    deco = cachetools.cached(cache, lock=cond, condition=cond)
                else:
                    deco = cachetools.cached(cache, lock=threading.Lock())
                return threaded_stampede(deco, load_s, n)

            return run

        return setup

    return [
        ("cachetools", "TTLCache", "cached(lock=Lock()), threads", make(False)),
        ("cachetools", "TTLCache", "cached(lock=, condition=), threads", make(True)),
    ]


def dogpile_scenarios(redis_url: str) -> list[tuple[str, str, str, Scenario]]:
    from dogpile.cache import make_region

    host, port = redis_parts(redis_url)

    def make(backend: str) -> Scenario:
        def setup(load_s: float, n: int) -> Callable[[], tuple[int, float]]:
            if backend == "memory":
                region = make_region().configure("dogpile.cache.memory", expiration_time=60)
            else:
                region = make_region(key_mangler=lambda k: "bench-stampede:" + k).configure(
                    "dogpile.cache.redis",
                    expiration_time=60,
                    arguments={"host": host, "port": port, "db": 1, "redis_expiration_time": 120},
                )

            def run() -> tuple[int, float]:
                return threaded_stampede(region.cache_on_arguments(), load_s, n)

            return run

        return setup

    return [
        ("dogpile.cache", "memory", "cache_on_arguments, threads", make("memory")),
        ("dogpile.cache", "redis db 1", "cache_on_arguments, threads", make("redis")),
    ]


def cashews_scenarios(redis_url: str) -> list[tuple[str, str, str, Scenario]]:
    from cashews import Cache as CashewsCache

    host, port = redis_parts(redis_url)
    urls = {"mem://": "mem://", "redis db 2": f"redis://{host}:{port}/2"}

    def make(url: str, variant: str) -> Scenario:
        def setup(load_s: float, n: int) -> Callable[[], tuple[int, float]]:
            def run() -> tuple[int, float]:
                # cashews binds its Redis pool to the running loop: one Cache per run
                cache = CashewsCache()
                cache.setup(url, prefix="")
                calls = [0]

                async def loader(k: str) -> str:
                    calls[0] += 1
                    await asyncio.sleep(load_s)
                    return "value"

                key = "bench-stampede:" + uuid.uuid4().hex
                if variant == "default":
                    fn = cache(ttl=60)(loader)
                elif variant == "protected=False":
                    fn = cache(ttl=60, protected=False)(loader)
                elif variant == "lock=True":
                    fn = cache(ttl=60, lock=True, protected=False)(loader)
                else:  # early
                    fn = cache.early(ttl=60, early_ttl=30)(loader)

                async def main() -> float:
                    await cache.init()
                    started = time.perf_counter()
                    await asyncio.gather(*(fn(key) for _ in range(n)))
                    wall = time.perf_counter() - started
                    await cache.close()
                    return wall

                wall = asyncio.run(main())
                return calls[0], wall

            return run

        return setup

    out = []
    for name, url in urls.items():
        for variant in ("default", "protected=False", "lock=True", "early"):
            out.append(("cashews", name, f"@cache {variant}, asyncio", make(url, variant)))
    return out


def aiocache_scenarios(redis_url: str) -> list[tuple[str, str, str, Scenario]]:
    from aiocache import RedisCache, SimpleMemoryCache, cached, cached_stampede

    host, port = redis_parts(redis_url)

    def make(backend: str, stampede: bool) -> Scenario:
        def setup(load_s: float, n: int) -> Callable[[], tuple[int, float]]:
            def run() -> tuple[int, float]:
                calls = [0]
                kwargs: dict[str, Any] = {"ttl": 60, "namespace": "bench-stampede"}
                if backend == "redis":
                    kwargs.update(cache=RedisCache, endpoint=host, port=port, db=2)
                else:
                    kwargs.update(cache=SimpleMemoryCache)
                deco = cached_stampede(lease=2, **kwargs) if stampede else cached(**kwargs)

                @deco
                async def load(k: str) -> str:
                    calls[0] += 1
                    await asyncio.sleep(load_s)
                    return "value"

                key = uuid.uuid4().hex

                async def main() -> float:
                    started = time.perf_counter()
                    await asyncio.gather(*(load(key) for _ in range(n)))
                    wall = time.perf_counter() - started
                    await load.cache.close()
                    return wall

                wall = asyncio.run(main())
                return calls[0], wall

            return run

        return setup

    return [
        ("aiocache", "SimpleMemoryCache", "@cached, asyncio", make("memory", False)),
        ("aiocache", "SimpleMemoryCache", "@cached_stampede, asyncio", make("memory", True)),
        ("aiocache", "RedisCache db 2", "@cached, asyncio", make("redis", False)),
        ("aiocache", "RedisCache db 2", "@cached_stampede, asyncio", make("redis", True)),
    ]


PEERS: list[tuple[str, str, Callable[..., list[tuple[str, str, str, Scenario]]]]] = [
    ("cachetools", "cachetools", lambda url: cachetools_scenarios()),
    ("dogpile.cache", "dogpile.cache", dogpile_scenarios),
    ("cashews", "cashews", cashews_scenarios),
    ("aiocache", "aiocache", aiocache_scenarios),
]


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# --------------------------------------------------------------------------- report


def fmt_spread(values: list[float], unit: Callable[[float], str]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return unit(med)
    return f"{unit(med)} ({unit(min(values))}-{unit(max(values))})"


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\nStampede: {args.threads} callers on one cold key, loader {args.load_ms:g} ms; "
        f"{args.runs} runs, median (min-max)\n"
    )
    header = f"| {'library':<14}| {'backend':<18}| {'how':<36}| {'loader calls':<14}| wall time |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        if r.note:
            calls, wall = r.note, ""
        else:
            calls = fmt_spread([float(c) for c in r.calls], lambda v: f"{v:g}")
            wall = fmt_spread(r.walls, lambda v: f"{v * 1000:.0f} ms")
        print(f"| {r.library:<14}| {r.backend:<18}| {r.model:<36}| {calls:<14}| {wall} |")


def plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.calls]
    labels = [f"{r.library} {r.backend}\n{r.model.rsplit(', ', 1)[0]}" for r in measured]
    values = [statistics.median(r.calls) for r in measured]
    colors = ["tab:green" if r.library == "cachekit" else "tab:gray" for r in measured]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(measured) + 1.5))
    ax.barh(range(len(measured)), values, color=colors)
    ax.set_yticks(range(len(measured)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("loader calls for one cold key (median), fewer is better")
    ax.set_title("Stampede: 32 concurrent callers, 50 ms loader")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:g}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot written to {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=32, help="concurrent callers")
    p.add_argument("--load-ms", type=float, default=50.0, help="loader duration")
    p.add_argument("--redis-url", default="redis://127.0.0.1:16379/0")
    p.add_argument("--memcached-url", default="memcached://127.0.0.1:21211")
    p.add_argument("--no-memcached", action="store_true", help="skip cachekit over memcached")
    p.add_argument("--plot", metavar="PATH.png")
    p.add_argument(
        "--processes", type=int, default=4, help="processes for the cross-process rows (0: skip)"
    )
    args = p.parse_args(argv)

    urls = {"memory": "memory://", "redis": args.redis_url}
    if not args.no_memcached:
        urls["memcached"] = args.memcached_url
    scenarios = cachekit_scenarios(urls)
    if args.processes:
        scenarios += cross_process_scenarios(args.redis_url, args.processes)
    rows = [Row(library, backend, model) for library, backend, model, _ in scenarios]
    for module, library, factory in PEERS:
        if not installed(module):
            rows.append(Row(library, "-", "-", note=INSTALL_HINT))
            continue
        peer = factory(args.redis_url)
        scenarios.extend(peer)
        rows.extend(Row(lib, be, model) for lib, be, model, _ in peer)

    failed = False
    by_name = {(r.library, r.backend, r.model): r for r in rows}
    load_s = args.load_ms / 1000
    for library, backend, model, setup in scenarios:
        row = by_name[(library, backend, model)]
        print(f"  {library} / {backend} / {model} ...", file=sys.stderr, flush=True)
        try:
            run = setup(load_s, args.threads)
            for _ in range(args.runs):
                calls, wall = run()
                row.calls.append(calls)
                row.walls.append(wall)
        except Exception as exc:
            failed = True
            row.note = f"ERROR {type(exc).__name__}: {exc}"[:120]
            row.calls.clear()

    print_table(rows, args)
    if args.plot:
        plot(rows, args.plot)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
