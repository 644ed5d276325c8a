"""A hot key across expiries: read latency and loader calls, with and without early refresh.

8 threads read one key as fast as they can for ``--expiries`` TTLs; the loader
takes ``--load-ms`` (a sleep, like a query). Without freshness every expiry
makes the next readers wait for a load; with ``TTL(early_refresh=1.0)``
(XFetch) or ``TTL(stale_while_revalidate=...)`` one reader starts a reload
behind and everybody keeps getting the current value. On Redis the same runs
in 4 processes (2 threads each), counting loader calls across the fleet.

    .venv/bin/python benchmarks/freshness.py --expiries 20

Prints per setting: reads, p50 / p99 read latency, how many reads per expiry
took at least half a load (they waited for one), loader calls per expiry.
Needs the Redis test server (``make servers-up``) for the fleet rows.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
import uuid
from typing import Any

import redis

import cachekit as ck

SETTINGS: dict[str, dict[str, float]] = {
    "plain TTL": {},
    "early_refresh=1.0": {"early_refresh": 1.0},
    "stale_while_revalidate": {"stale_while_revalidate": 2.0},
}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_threads(
    cache: ck.Cache, ttl: ck.TTL, seconds: float, threads: int, load_s: float, count: Any
) -> list[float]:
    """Read the hot key from ``threads`` threads for ``seconds``; return every read's latency."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loader() -> dict[str, int]:
        count()
        time.sleep(load_s)
        return {"row": 1}

    def reader(mine: list[float]) -> None:
        perf = time.perf_counter
        while not stop.is_set():
            start = perf()
            cache.get_or_load("hot", loader, ttl=ttl)
            mine.append(perf() - start)
            time.sleep(0.0005)  # a request's other work

    workers = [threading.Thread(target=reader, args=(lat,)) for lat in latencies]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return [x for lat in latencies for x in lat]


def _fleet_member(url: str, ns: str, opts: dict[str, float], args: Any, out: Any) -> None:
    counter = redis.Redis.from_url(url)
    cache = ck.Cache.from_url(url, namespace=ns, lease_wait=1.0)
    ttl = ck.TTL(args.ttl, **opts)
    lat = run_threads(
        cache, ttl, args.ttl * args.expiries, 2, args.load_ms / 1000, lambda: counter.incr(ns)
    )
    cache.close()
    counter.close()
    out.put(lat)


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--expiries", type=int, default=20)
    parser.add_argument("--load-ms", type=float, default=10.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:16379/0")
    args = parser.parse_args()
    seconds = args.ttl * args.expiries
    print(
        f"hot key, TTL {args.ttl:g} s, {args.expiries} expiries, loader {args.load_ms:g} ms; "
        "latency per read\n"
    )
    waited = args.load_ms / 2000  # a read this slow waited for a load
    print(
        "| backend | setting | reads | p50 us | p99 us | reads that waited for a load, "
        "per expiry | loads per expiry |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, opts in SETTINGS.items():
        calls = [0]
        lock = threading.Lock()

        def count(calls: list[int] = calls, lock: threading.Lock = lock) -> None:
            with lock:
                calls[0] += 1

        cache = ck.Cache(ck.MemoryBackend(), namespace="fresh-" + uuid.uuid4().hex[:6])
        lat = run_threads(cache, ck.TTL(args.ttl, **opts), seconds, 8, args.load_ms / 1000, count)
        cache.close()
        print(
            f"| memory, 8 threads | {name} | {len(lat):,} | {_pct(lat, 0.5) * 1e6:.0f} "
            f"| {_pct(lat, 0.99) * 1e6:.0f} "
            f"| {sum(x >= waited for x in lat) / args.expiries:.1f} "
            f"| {calls[0] / args.expiries:.2f} |"
        )
    ctx = multiprocessing.get_context("fork")
    for name, opts in SETTINGS.items():
        ns = "fresh-" + uuid.uuid4().hex[:6]
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_fleet_member, args=(args.redis_url, ns, opts, args, out))
            for _ in range(4)
        ]
        for p in procs:
            p.start()
        lat = [x for _ in procs for x in out.get()]
        for p in procs:
            p.join()
        r = redis.Redis.from_url(args.redis_url)
        loads = int(r.get(ns) or 0)
        r.delete(ns)
        r.close()
        print(
            f"| Redis, 4 processes x 2 threads | {name} | {len(lat):,} "
            f"| {_pct(lat, 0.5) * 1e6:.0f} | {_pct(lat, 0.99) * 1e6:.0f} "
            f"| {sum(x >= waited for x in lat) / args.expiries:.1f} "
            f"| {loads / args.expiries:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
