"""An AsyncCache against a hung server and a closed port: what a call costs while it is down.

A "blackhole" accepts connections and never answers: the first call pays one
command deadline (an AsyncCache reads the namespace version on its first
call; when even that times out the breaker opens at once), the next calls are
skipped by the open breaker. A closed port refuses at once. Each figure is the
median of ``--trials`` fresh caches; the loader is free, so the times are the
cache's own.

    .venv/bin/python benchmarks/aio_outage.py --trials 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faultkit import StallServer, closed_port

from cachekit.aio import AsyncCache


async def one(url: str, calls: int) -> tuple[float, float]:
    """(first call, mean of the next ``calls``) in seconds, for a fresh cache on ``url``."""
    cache = AsyncCache.from_url(url, namespace="o-" + uuid.uuid4().hex[:6], ttl=60)

    async def load() -> int:
        return 1

    try:
        start = time.perf_counter()
        assert await cache.get_or_load("k", load) == 1
        first = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(calls):
            assert await cache.get_or_load(f"k{i}", load) == 1
        later = (time.perf_counter() - start) / calls
    finally:
        await cache.aclose()
    return first, later


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    print("| backend | server | first call ms (median, max) | later calls µs (median) |")
    print("|---|---|---|---|")
    for scheme in ("redis", "memcached"):
        for what in ("blackhole", "closed port"):
            firsts, laters = [], []
            for _ in range(args.trials):
                if what == "blackhole":
                    with StallServer() as hung:
                        url = f"{scheme}://127.0.0.1:{hung.port}"
                        f, later = asyncio.run(one(url, args.calls))
                else:
                    with closed_port() as port:
                        f, later = asyncio.run(one(f"{scheme}://127.0.0.1:{port}", args.calls))
                firsts.append(f)
                laters.append(later)
            print(
                f"| {scheme} | {what} | {statistics.median(firsts) * 1e3:.1f} "
                f"({max(firsts) * 1e3:.1f}) | {statistics.median(laters) * 1e6:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
