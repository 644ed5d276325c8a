"""Async backend benchmark: cachekit's asyncio drivers vs the raw asyncio clients, as ratios.

Rows (each a ratio ``cachekit / raw``, lower is better; the target for the
finished AsyncCache is <= 1.1x):

- Redis ``get`` through ``AsyncRedisBackend`` vs ``redis.asyncio.Redis.get``
  with no timeout (the floor: cachekit's calls keep their deadline), inside
  ``asyncio.timeout`` (the usual way to give it one) and with redis-py's own
  ``socket_timeout``; ``get_many(100)`` vs ``mget``;
- memcached ``get`` through ``AsyncMemcachedBackend`` vs ``aiomcache`` and
  ``emcache`` (whichever is installed), ``get_many(100)`` vs their multi-gets,
  and 50 concurrent ``get`` calls (``asyncio.gather``: the pools at work).

A single-call figure is the median of ``--rounds`` per-round ratios: each
round awaits ``--hits`` calls of each side, alternating call by call (ABBA)
and timing each, and compares the two median call times, so load on a shared
machine reaches both sides alike. The table gives the median ratio, the
interquartile range and the min-max.

``--clients`` instead checks the two properties the memcached client choice
rests on: whether a client reuses a connection whose command timed out (then
the next command reads the previous answer), and whether a client places keys
on a pool of nodes where pymemcache's ``HashClient`` (the sync backend) does.

    .venv/bin/python benchmarks/aio_backends.py
    .venv/bin/python benchmarks/aio_backends.py --only memcached --rounds 61
    .venv/bin/python benchmarks/aio_backends.py --clients
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logging.getLogger("emcache").setLevel(logging.CRITICAL)  # its pool logs every dropped connection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VALUE = b'{"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"]}'

Call = Callable[[], Awaitable[Any]]


@dataclass
class Row:
    """One comparison: per-round seconds per call of each side, and their ratios."""

    label: str
    ours: list[float]
    base: list[float]

    @property
    def ratio(self) -> list[float]:
        """``ours / base`` per round."""
        return [o / b for o, b in zip(self.ours, self.base, strict=True)]


async def compare(label: str, ours: Call, raw: Call, rounds: int, n: int) -> Row:
    """Await both sides call by call, alternating (ABBA); per round, the median call times."""
    clock = time.perf_counter_ns
    for fn in (ours, raw):  # warm connections and code paths
        for _ in range(max(100, n // 2)):
            await fn()
    a_all, b_all = [], []
    for _ in range(rounds):
        a: list[int] = []
        b: list[int] = []
        for i in range(n):
            first, second, into_first, into_second = (
                (raw, ours, b, a) if i & 1 else (ours, raw, a, b)
            )
            t0 = clock()
            await first()
            t1 = clock()
            await second()
            t2 = clock()
            into_first.append(t1 - t0)
            into_second.append(t2 - t1)
        a_all.append(statistics.median(a) / 1e9)
        b_all.append(statistics.median(b) / 1e9)
    return Row(label, a_all, b_all)


def concurrently(call: Call, width: int) -> Call:
    """A call that awaits ``width`` copies of ``call`` at once."""

    async def run() -> Any:
        return await asyncio.gather(*(call() for _ in range(width)))

    return run


# ---------------------------------------------------------------- Redis


async def deadline_get(client: Any, key: str) -> Any:
    """The raw client's GET under the same whole-command deadline as cachekit's."""
    async with asyncio.timeout(0.25):
        return await client.get(key)


async def redis_rows(url: str, rounds: int, n: int) -> list[Row]:
    """AsyncRedisBackend vs redis.asyncio on the same server."""
    import redis.asyncio as aredis

    from cachekit.backends.aio import async_backend_from_url

    ours = async_backend_from_url(url)
    raw = aredis.Redis.from_url(url)  # from_url sets no socket timeout
    timed = aredis.Redis.from_url(url, socket_timeout=0.25)  # redis-py's own timeouts
    key = "ck-bench-aio:" + uuid.uuid4().hex
    keys = [f"{key}:{i}" for i in range(100)]
    try:
        await raw.set(key, VALUE, ex=600)
        await raw.mset(dict.fromkeys(keys, VALUE))
        rows = [
            await compare(
                "Redis get vs redis.asyncio (no timeout)",
                lambda: ours.get(key),
                lambda: raw.get(key),
                rounds,
                n,
            ),
            await compare(
                "Redis get vs redis.asyncio in asyncio.timeout(0.25)",
                lambda: ours.get(key),
                lambda: deadline_get(raw, key),
                rounds,
                n,
            ),
            await compare(
                "Redis get vs redis.asyncio with socket_timeout=0.25",
                lambda: ours.get(key),
                lambda: timed.get(key),
                rounds,
                n,
            ),
            await compare(
                "Redis get_many(100) vs mget (no timeout)",
                lambda: ours.get_many(keys),
                lambda: raw.mget(keys),
                rounds,
                max(10, n // 10),
            ),
        ]
        await raw.delete(key, *keys)
        return rows
    finally:
        await ours.aclose()
        await raw.aclose()
        await timed.aclose()


# ---------------------------------------------------------------- memcached


async def memcached_rows(url: str, rounds: int, n: int, width: int) -> tuple[list[Row], list[str]]:
    """AsyncMemcachedBackend vs each raw asyncio memcached client that is installed."""
    from cachekit.backends.aio.memcached import AsyncMemcachedBackend

    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 11211
    ours = AsyncMemcachedBackend.from_url(url)
    key = "ck-bench-aio:" + uuid.uuid4().hex
    keys = [f"{key}:{i}" for i in range(100)]
    await ours.set(key, VALUE, 600)
    await ours.set_many(dict.fromkeys(keys, VALUE), 600)
    raw_keys = [k.encode() for k in keys]
    rows: list[Row] = []
    notes: list[str] = []
    try:
        try:
            import aiomcache
        except ImportError:
            notes.append("aiomcache is not installed: its rows are left out")
        else:
            client = aiomcache.Client(host, port, pool_size=width)
            try:
                rows.append(
                    await compare(
                        "memcached get vs aiomcache",
                        lambda: ours.get(key),
                        lambda: client.get(key.encode()),
                        rounds,
                        n,
                    )
                )
                rows.append(
                    await compare(
                        "memcached get_many(100) vs aiomcache multi_get",
                        lambda: ours.get_many(keys),
                        lambda: client.multi_get(*raw_keys),
                        rounds,
                        max(10, n // 10),
                    )
                )
                rows.append(
                    await compare(
                        f"{width} concurrent get vs aiomcache (pool {width})",
                        concurrently(lambda: ours.get(key), width),
                        concurrently(lambda: client.get(key.encode()), width),
                        rounds,
                        max(10, n // 10),
                    )
                )
            finally:
                await client.close()
        try:
            import emcache
        except ImportError:
            notes.append("emcache is not installed: its rows are left out")
        else:
            em = await emcache.create_client(
                [emcache.MemcachedHostAddress(host, port)], timeout=0.25, max_connections=width
            )
            try:
                rows.append(
                    await compare(
                        "memcached get vs emcache",
                        lambda: ours.get(key),
                        lambda: em.get(key.encode()),
                        rounds,
                        n,
                    )
                )
                rows.append(
                    await compare(
                        "memcached get_many(100) vs emcache get_many",
                        lambda: ours.get_many(keys),
                        lambda: em.get_many(raw_keys),
                        rounds,
                        max(10, n // 10),
                    )
                )
                rows.append(
                    await compare(
                        f"{width} concurrent get vs emcache (pool {width})",
                        concurrently(lambda: ours.get(key), width),
                        concurrently(lambda: em.get(key.encode()), width),
                        rounds,
                        max(10, n // 10),
                    )
                )
            finally:
                await em.close()
        await ours.delete_many([key, *keys])
    finally:
        await ours.aclose()
    return rows, notes


# ---------------------------------------------------------------- client checks


async def check_clients(url: str, pool_url: str) -> None:
    """Print, per asyncio memcached client: safe after a timed-out command? same ring as sync?"""
    sys.path.insert(0, ROOT)
    from pymemcache.client.hash import HashClient
    from tests.faultkit import TcpProxy

    from cachekit.backends.aio.memcached import AsyncMemcachedBackend
    from cachekit.backends.memcached import memcached_key, parse_servers

    port = urlsplit(url).port or 11211
    a, b = "ck-bench-aio:a:" + uuid.uuid4().hex, "ck-bench-aio:b:" + uuid.uuid4().hex
    seed = AsyncMemcachedBackend.from_url(url)
    await seed.set(a, b"value-a", 60)
    await seed.set(b, b"value-b", 60)

    async def probe(get: Callable[[str], Awaitable[Any]], proxy: TcpProxy) -> str:
        """GET a while the proxy stalls (times out), resume, then GET b: what comes back?"""
        await get(a)
        proxy.stall()
        try:
            async with asyncio.timeout(0.25):
                await get(a)
        except Exception:
            pass
        proxy.resume()
        await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(1):
                got = await get(b)
        except Exception as exc:
            return f"raised {type(exc).__name__}"
        got = getattr(got, "value", got)
        return "correct (value-b)" if got == b"value-b" else f"WRONG: got {got!r} for b"

    print(
        "| client | GET b after a timed-out GET a on the same pool | places keys like HashClient |"
    )
    print("|---|---|---|")
    nodes = parse_servers(urlsplit(pool_url).netloc)
    ring = HashClient(nodes)
    keys = [memcached_key(f"key-{i}") for i in range(1000)]
    expected = [ring.hasher.get_node(k) for k in keys]

    with TcpProxy(port) as proxy:
        ours = AsyncMemcachedBackend.from_url(f"memcached://127.0.0.1:{proxy.port}")
        outcome = await probe(ours.get, proxy)
        await ours.aclose()
    pool = AsyncMemcachedBackend.from_url(pool_url)
    same = sum(1 for k, e in zip(keys, expected, strict=True) if pool.node_for(k) == e)
    print(f"| cachekit AsyncMemcachedBackend | {outcome} | {same}/{len(keys)} |")

    try:
        import aiomcache
    except ImportError:
        print("| aiomcache | not installed | |")
    else:
        with TcpProxy(port) as proxy:
            client = aiomcache.Client("127.0.0.1", proxy.port, pool_size=1)
            outcome = await probe(lambda k: client.get(k.encode()), proxy)
            await client.close()
        print(f"| aiomcache | {outcome} | single node only |")

    try:
        import emcache
    except ImportError:
        print("| emcache | not installed | |")
    else:
        with TcpProxy(port) as proxy:
            em = await emcache.create_client(
                [emcache.MemcachedHostAddress("127.0.0.1", proxy.port)], max_connections=1
            )
            outcome = await probe(lambda k: em.get(k.encode()), proxy)
            await em.close()
        addresses = [emcache.MemcachedHostAddress(h, p) for h, p in nodes]
        em = await emcache.create_client(addresses)
        try:
            cluster = em._cluster  # type: ignore[attr-defined]  # where it would send each key
            same = sum(
                1
                for k, e in zip(keys, expected, strict=True)
                if "{}:{}".format(*_address(cluster.pick_node(k.encode()))) == e
            )
        finally:
            await em.close()
        print(f"| emcache | {outcome} | {same}/{len(keys)} |")
    await seed.delete_many([a, b])
    await seed.aclose()


def _address(node: Any) -> tuple[str, int]:
    address = node.memcached_host_address
    return address.address, address.port


# ---------------------------------------------------------------- report


def quartiles(values: list[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def print_table(rows: list[Row], notes: list[str]) -> None:
    """Print the rows as a Markdown table."""
    print("| comparison | cachekit (median) | raw client (median) | ratio: median, IQR [min-max] |")
    print("|---|---|---|---|")
    for r in rows:
        ratio = r.ratio
        q1, q3 = quartiles(ratio)
        print(
            f"| {r.label} | {statistics.median(r.ours) * 1e6:.1f} us "
            f"| {statistics.median(r.base) * 1e6:.1f} us "
            f"| {statistics.median(ratio):.2f}x, IQR {q1:.2f}-{q3:.2f} "
            f"[{min(ratio):.2f}-{max(ratio):.2f}] |"
        )
    for note in notes:
        print(f"| {note} | | | |")


async def amain(args: argparse.Namespace) -> int:
    """Run what the arguments ask for."""
    if args.clients:
        await check_clients(args.memcached_url, args.memcached_pool_url)
        return 0
    import cachekit as ck

    print(
        f"# cachekit {ck.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{args.rounds} rounds x {args.hits} calls per side (ABBA)\n"
    )
    rows: list[Row] = []
    notes: list[str] = []
    if args.only in (None, "redis"):
        rows += await redis_rows(args.redis_url, args.rounds, args.hits)
    if args.only in (None, "memcached"):
        mc_rows, mc_notes = await memcached_rows(
            args.memcached_url, args.rounds, args.hits, args.width
        )
        rows += mc_rows
        notes += mc_notes
    print_table(rows, notes)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:16379/0")
    parser.add_argument("--memcached-url", default="memcached://127.0.0.1:21211")
    parser.add_argument(
        "--memcached-pool-url",
        default="memcached://127.0.0.1:21212,127.0.0.1:21213,127.0.0.1:21214",
    )
    parser.add_argument("--rounds", type=int, default=31, help="rounds (median reported)")
    parser.add_argument("--hits", type=int, default=200, help="calls per side per round")
    parser.add_argument("--width", type=int, default=50, help="concurrent calls in the pool row")
    parser.add_argument("--only", choices=["redis", "memcached"], help="measure one backend")
    parser.add_argument("--clients", action="store_true", help="check the memcached clients")
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
