"""An AsyncCache hit beside the raw async client's get + ``json.loads``, same server.

Redis: against ``redis.asyncio``. Memcached: against cachekit's own asyncio
memcached driver used directly (no maintained asyncio client passed its
contract: see docs/asyncio-backends.md), so the ratio is what the cache adds.

Both sides read the same warm value (a 10-field row) from the same server in
one event loop, alternating call by call (ABBA) within each round so machine
noise falls on both alike; per round the median call time of each side is
taken, and the table shows the median and interquartile range of the per-round
ratios.

    .venv/bin/python benchmarks/aio_cache.py --rounds 41 --calls 200

Needs the Redis and memcached test servers (``make servers-up``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import redis.asyncio as aredis

from cachekit.aio import AsyncCache

ROW = {f"field{i}": f"value {i}" for i in range(10)}


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


async def measure(url: str, rounds: int, calls: int) -> list[float]:
    """Per-round ratios: cachekit hit time / raw GET + json.loads time."""
    acache = AsyncCache.from_url(url, namespace="bench-" + uuid.uuid4().hex[:6], ttl=600)
    raw = aredis.Redis.from_url(url)
    try:
        await acache.set("row", ROW)
        await raw.set("bench:raw-row", json.dumps(ROW))
        full = await acache.full_key("row")
        assert await raw.get(full) is not None

        async def ours() -> None:
            await acache.get("row")

        async def theirs() -> None:
            json.loads(await raw.get("bench:raw-row"))

        return await _pair(ours, theirs, rounds, calls)
    finally:
        await acache.aclose()
        await raw.aclose()


async def measure_memcached(url: str, rounds: int, calls: int) -> list[float]:
    """Per-round ratios: cachekit hit time / the driver's own get + json.loads time."""
    from cachekit.backends.aio.memcached import AsyncMemcachedBackend

    acache = AsyncCache.from_url(url, namespace="bench-" + uuid.uuid4().hex[:6], ttl=600)
    raw = AsyncMemcachedBackend.from_url(url)
    try:
        await acache.set("row", ROW)
        await raw.set("bench:raw-row", json.dumps(ROW).encode(), 600)

        async def ours() -> None:
            await acache.get("row")

        async def theirs() -> None:
            json.loads(await raw.get("bench:raw-row"))

        return await _pair(ours, theirs, rounds, calls)
    finally:
        await acache.aclose()
        await raw.aclose()


async def _pair(ours: Any, theirs: Any, rounds: int, calls: int) -> list[float]:
    for _ in range(200):  # warm both pools and paths
        await ours()
        await theirs()
    ratios = []
    perf = time.perf_counter
    for _ in range(rounds):
        a: list[float] = []
        b: list[float] = []
        for i in range(calls):
            order = (ours, theirs) if i % 4 in (0, 3) else (theirs, ours)
            for fn in order:
                start = perf()
                await fn()
                (a if fn is ours else b).append(perf() - start)
        ratios.append(statistics.median(a) / statistics.median(b))
    return ratios


def main() -> int:
    """Print the ratio table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:16379/0")
    parser.add_argument("--memcached-url", default="memcached://127.0.0.1:21211")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    rows = [
        ("AsyncCache.get / redis.asyncio GET + json.loads", measure(args.redis_url, *sizes))
        for sizes in [(args.rounds, args.calls)]
    ]
    rows.append(
        (
            "AsyncCache.get / async memcached driver get + json.loads",
            measure_memcached(args.memcached_url, args.rounds, args.calls),
        )
    )
    print(f"{args.rounds} rounds x {args.calls} calls per side, ABBA interleaved")
    print("| comparison | ratio, median (IQR) | <= 1.1x |")
    print("|---|---|---|")
    for name, coro in rows:
        lo, med, hi = _quartiles(asyncio.run(coro))
        print(f"| {name} | {med:.2f}x ({lo:.2f}-{hi:.2f}) | {'yes' if med <= 1.1 else 'NO'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
