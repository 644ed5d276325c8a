"""Backend benchmark: a cachekit hit over Redis / Memcached vs the raw client floor, and get_many.

Prints, per backend, (a) the time of one hit through ``@cache.cached`` next to
the raw client's ``get`` + ``json.loads`` on the same server, as a ratio, and
(b) ``cache.get_many(100 keys)`` next to 100 sequential ``cache.get`` calls,
as a speed-up. A hit figure is the median of ``--rounds`` per-round ratios:
each round makes ``--hits`` calls of each side, alternating call by call
(ABBA) and timing each one, and compares the two median call times, so drift
and preemption on a shared machine reach both sides alike. The table gives the
median, the interquartile range and the min-max of those ratios. The get_many
rows time ``--runs`` interleaved runs of each side.

    python benchmarks/backends.py                           # Redis and Memcached
    python benchmarks/backends.py --only memcached --rounds 61
    python benchmarks/backends.py --profile                 # where a cachekit hit spends its time
    python benchmarks/backends.py --plot backends.png
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import platform
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cachekit as ck

PAYLOAD = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin", "dev"]}


@dataclass
class Row:
    """One measured comparison: ``ours`` vs ``base`` over several runs."""

    label: str
    ours: list[float]  # seconds per operation, one entry per run
    base: list[float]
    ratio: list[float]  # per run: ours / base (overhead) or base / ours (speed-up)
    kind: str  # "overhead" or "speed-up"


def per_op(fn: Callable[[], Any], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def compare_hit(
    label: str,
    cached: Callable[[], Any],
    raw: Callable[[], Any],
    rounds: int,
    n: int,
) -> Row:
    """Time the cachekit hit and the raw floor call by call, alternating them (ABBA).

    Each of ``rounds`` rounds makes ``n`` calls of each side, timing every
    call; the round's figure for a side is its median call time, so a call that
    the scheduler preempted does not move it. Alternating call by call puts
    both sides under the same machine load at the same moment.
    """
    clock = time.perf_counter_ns
    for fn in (cached, raw):  # warm connections and code paths
        per_op(fn, max(200, n))
    ours, base = [], []
    for _ in range(rounds):
        a: list[int] = []
        b: list[int] = []
        for i in range(n):
            if i & 1:
                t0 = clock()
                raw()
                t1 = clock()
                cached()
                t2 = clock()
                b.append(t1 - t0)
                a.append(t2 - t1)
            else:
                t0 = clock()
                cached()
                t1 = clock()
                raw()
                t2 = clock()
                a.append(t1 - t0)
                b.append(t2 - t1)
        ours.append(statistics.median(a) / 1e9)
        base.append(statistics.median(b) / 1e9)
    return Row(label, ours, base, [o / b for o, b in zip(ours, base, strict=True)], "overhead")


def compare_many(label: str, cache: ck.Cache, runs: int, n: int) -> Row:
    """``get_many(100)`` vs 100 sequential ``get`` on the same warm keys."""
    keys = [f"k{i}" for i in range(100)]
    cache.set_many({k: dict(PAYLOAD, id=i) for i, k in enumerate(keys)})
    assert len(cache.get_many(keys)) == 100, "keys were not stored"

    def many() -> Any:
        return cache.get_many(keys)

    def sequential() -> Any:
        return [cache.get(k) for k in keys]

    many_t, seq_t = [], []
    per_op(many, 10)
    per_op(sequential, 3)
    for _ in range(runs):
        many_t.append(per_op(many, n))
        seq_t.append(per_op(sequential, n))
    return Row(
        label, many_t, seq_t, [s / m for m, s in zip(many_t, seq_t, strict=True)], "speed-up"
    )


def raw_many_floor(client: Any, runs: int, n: int) -> Row:
    """The same speed-up for redis-py alone: MGET + json.loads vs 100 x (GET + json.loads).

    This is the ceiling for cachekit's get_many ratio on this machine: the
    JSON decoding of 100 values is paid on both sides and does not shrink.
    """
    prefix = "bench:rawmany:" + uuid.uuid4().hex + ":"
    keys = [f"{prefix}{i}".encode() for i in range(100)]
    client.mset({k: json.dumps(dict(PAYLOAD, id=i)).encode() for i, k in enumerate(keys)})
    try:

        def many() -> Any:
            return [json.loads(v) for v in client.mget(keys)]

        def sequential() -> Any:
            return [json.loads(client.get(k)) for k in keys]

        many_t, seq_t = [], []
        for _ in range(runs):
            many_t.append(per_op(many, n))
            seq_t.append(per_op(sequential, n))
        ratio = [s / m for m, s in zip(many_t, seq_t, strict=True)]
        label = "(floor) redis-py MGET(100) vs 100 x GET, each + json.loads"
        return Row(label, many_t, seq_t, ratio, "speed-up")
    finally:
        client.delete(*keys)


@dataclass
class Plan:
    """How much to measure: hit rounds x hits per round, get_many runs x iterations."""

    rounds: int
    hits: int
    runs: int
    iterations: int


def hit_and_many_rows(
    name: str,
    raw_name: str,
    cache: ck.Cache,
    raw_get: Callable[[], Any],
    plan: Plan,
    profile: bool,
) -> list[Row]:
    """A decorator hit vs ``raw_get()`` + ``json.loads``, and get_many(100) vs 100 gets."""

    @cache.cached(ttl=300)
    def get_user(user_id: int) -> dict[str, Any]:
        return dict(PAYLOAD, id=user_id)

    get_user(42)

    def hit() -> Any:
        return get_user(42)

    def floor() -> Any:
        return json.loads(raw_get())

    assert hit() == floor()
    if profile:
        print_profile(f"{name} hit through @cache.cached", hit, plan.iterations * 5)
    label = f"{name}: @cache.cached hit vs {raw_name} + json.loads"
    return [
        compare_hit(label, hit, floor, plan.rounds, plan.hits),
        compare_many(
            f"{name}: get_many(100) vs 100 x get",
            cache,
            plan.runs,
            max(5, plan.iterations // 100),
        ),
    ]


def redis_rows(url: str, plan: Plan, profile: bool) -> list[Row]:
    """The Redis rows: decorator hit vs redis-py GET + json.loads, get_many vs gets."""
    import redis

    cache = ck.Cache.from_url(url, namespace="bench-" + uuid.uuid4().hex[:8], ttl=300)
    client = redis.Redis.from_url(url)
    raw_key = "bench:raw:" + uuid.uuid4().hex
    try:
        client.set(raw_key, json.dumps(PAYLOAD).encode(), ex=300)
        rows = hit_and_many_rows(
            "Redis", "redis-py GET", cache, lambda: client.get(raw_key), plan, profile
        )
        return [*rows, raw_many_floor(client, plan.runs, max(5, plan.iterations // 100))]
    finally:
        client.delete(raw_key)
        client.close()
        cache.close()


def memcached_rows(url: str, plan: Plan, profile: bool) -> list[Row] | str:
    """The Memcached rows, or the reason they cannot be measured."""
    try:
        backend = ck.backend_from_url(url)
    except Exception as exc:  # the backend is optional and written separately
        return f"n/a (memcached backend not available: {type(exc).__name__}: {exc})"
    from pymemcache.client.base import Client

    cache = ck.Cache(backend, namespace="bench-" + uuid.uuid4().hex[:8], ttl=300)
    first = urlsplit(url).netloc.split(",")[0]
    host, _, port = first.rpartition(":")
    client = Client((host, int(port)), connect_timeout=1, timeout=1)
    raw_key = "bench:raw:" + uuid.uuid4().hex
    try:
        client.set(raw_key, json.dumps(PAYLOAD).encode(), expire=300)
        return hit_and_many_rows(
            "Memcached", "pymemcache get", cache, lambda: client.get(raw_key), plan, profile
        )
    except Exception as exc:
        return f"n/a (memcached backend failed: {type(exc).__name__}: {exc})"
    finally:
        with contextlib.suppress(Exception):
            client.delete(raw_key)
        client.close()
        cache.close()


def print_profile(title: str, fn: Callable[[], Any], n: int) -> None:
    """Print the functions a hit spends its time in (cumulative, top 25)."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    print(f"\n--- cProfile: {title}, {n} calls ---")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(20)
    print("cachekit's own functions (cumulative):")
    stats.sort_stats("cumulative").print_stats("cachekit", 12)


def fmt_us(values: list[float]) -> str:
    med = statistics.median(values) * 1e6
    return f"{med:8.1f} us [{min(values) * 1e6:.1f}-{max(values) * 1e6:.1f}]"


def quartiles(values: list[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles (the middle half of the values)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def print_table(rows: list[Row], notes: list[str]) -> None:
    """Print the results as a Markdown table."""
    print(
        "| comparison | cachekit (median [min-max]) | baseline (median [min-max]) "
        "| ratio: median, middle half (IQR), [min-max] | rounds |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        med = statistics.median(r.ratio)
        q1, q3 = quartiles(r.ratio)
        spread = f"IQR {q1:.2f}-{q3:.2f} [{min(r.ratio):.2f}-{max(r.ratio):.2f}]"
        word = "x time" if r.kind == "overhead" else "x faster"
        print(
            f"| {r.label} | {fmt_us(r.ours)} | {fmt_us(r.base)} "
            f"| {med:.2f}{word}, {spread} | {len(r.ratio)} |"
        )
    for note in notes:
        print(f"| {note} | | | | |")


def plot(rows: list[Row], path: str) -> None:
    """Save a bar chart of the ratios with their spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.7 * len(rows)))
    labels = [r.label for r in rows]
    meds = [statistics.median(r.ratio) for r in rows]
    lo = [m - min(r.ratio) for m, r in zip(meds, rows, strict=True)]
    hi = [max(r.ratio) - m for m, r in zip(meds, rows, strict=True)]
    ax.barh(labels, meds, xerr=[lo, hi], color="#4c72b0")
    ax.set_xscale("log")
    ax.set_xlabel("ratio (overhead: lower is better; speed-up: higher is better)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:16379/0")
    parser.add_argument("--memcached-url", default="memcached://127.0.0.1:21211")
    parser.add_argument("--rounds", type=int, default=41, help="hit rounds (median reported)")
    parser.add_argument("--hits", type=int, default=200, help="hits per side per round")
    parser.add_argument("--runs", type=int, default=7, help="get_many runs (median reported)")
    parser.add_argument("--iterations", type=int, default=2000, help="sizes the get_many runs")
    parser.add_argument("--only", choices=["redis", "memcached"], help="measure one backend")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each hit")
    parser.add_argument("--plot", metavar="PNG", help="save a chart of the ratios")
    args = parser.parse_args(argv)
    plan = Plan(args.rounds, args.hits, args.runs, args.iterations)

    print(
        f"# cachekit {ck.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, hits: {plan.rounds} rounds x {plan.hits} per side (ABBA); "
        f"get_many: {plan.runs} runs\n"
    )
    rows: list[Row] = []
    notes: list[str] = []
    if args.only in (None, "redis"):
        rows += redis_rows(args.redis_url, plan, args.profile)
    if args.only in (None, "memcached"):
        mc = memcached_rows(args.memcached_url, plan, args.profile)
        if isinstance(mc, str):
            notes.append(f"Memcached: {mc}")
        else:
            rows += mc
    print_table(rows, notes)
    if args.plot:
        plot(rows, args.plot)
        print(f"\nchart written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
