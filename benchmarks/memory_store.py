"""The in-process store: bytes per entry, throughput and hit ratio, per policy, against its peers.

Three tables:

- **memory**: bytes per entry (tracemalloc: every allocation the store makes,
  keys and values excluded, they are created beforehand) after filling
  ``--entries`` entries with a TTL, and again after churning three times the
  capacity of new keys through it; cachetools' ``TTLCache`` (one TTL for all
  entries, a linked list instead of a heap) and ``LRUCache`` (no TTL) for the
  same entries. The clock ticks 1 us per write, as a real one would.
- **throughput**: operations per second, single thread: a hit (``get`` of a
  live key), a write that evicts (``set`` of a new key into a full store), and
  a cache-aside replay of a Zipf(1.1) trace over 10,000 keys at capacity 1,000
  (``get``, then ``set`` on a miss, from an empty store). Median of
  ``--rounds`` rounds; each round runs every store in turn.
- **hit ratio**: the same replay's hit ratio, plus the loop and recency traces.

``theine`` (W-TinyLFU in Rust) joins when importable; it is not a dependency:

    .venv/bin/python benchmarks/memory_store.py
    pip install --target /tmp/libtry theine && \\
        PYTHONPATH=/tmp/libtry .venv/bin/python benchmarks/memory_store.py --section throughput hit
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import cachetools

import cachekit as ck
from cachekit.advisor.policy_sim import synthetic
from cachekit.backends.base import MISSING

TTL = 300.0


class Ticker:
    """A clock that moves 1 us each time it is read after a write, like a real one would."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now


# -- stores under test: (name, factory(capacity) -> (get(key) -> hit?, set(key)))

Ops = tuple[Callable[[str], bool], Callable[[str], None]]


def cachekit_store(policy: str) -> Callable[[int], Ops]:
    def make(capacity: int) -> Ops:
        b = ck.MemoryBackend(capacity, policy=policy, timer=Ticker())
        get, put = b.get, b.set

        def hit(key: str) -> bool:
            return get(key) is not MISSING

        def store(key: str) -> None:
            put(key, 1, TTL)

        return hit, store

    return make


def ttlcache_store(capacity: int) -> Ops:
    c: cachetools.TTLCache[str, int] = cachetools.TTLCache(capacity, TTL, timer=Ticker())
    get = c.get

    def hit(key: str) -> bool:
        return get(key) is not None

    def store(key: str) -> None:
        c[key] = 1

    return hit, store


def theine_store(capacity: int) -> Ops:
    from datetime import timedelta

    import theine

    c = theine.Cache(capacity)
    ttl = timedelta(seconds=TTL)

    def hit(key: str) -> bool:
        return bool(c.get(key)[1])

    def store(key: str) -> None:
        c.set(key, 1, ttl)

    return hit, store


def stores() -> list[tuple[str, Callable[[int], Ops]]]:
    out = [
        ("cachekit lru", cachekit_store("lru")),
        ("cachekit tinylfu", cachekit_store("tinylfu")),
        ("cachetools TTLCache", ttlcache_store),
    ]
    try:
        import theine  # noqa: F401
    except ImportError:
        pass
    else:
        out.append(("theine (W-TinyLFU, Rust)", theine_store))
    return out


# -- memory


def bytes_per_entry(
    make: Callable[[list[str]], Any], keys: list[str], n: int
) -> tuple[float, float]:
    """Return (bytes per entry after filling n keys, after churning 3n more)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    feed = make(keys[:n])
    gc.collect()
    filled = tracemalloc.get_traced_memory()[0] - base
    feed(keys[n:])
    gc.collect()
    churned = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return filled / n, churned / n


def memory_table(n: int) -> list[str]:
    keys = [f"user:{i}" for i in range(4 * n)]

    def cachekit_feeder(policy: str) -> Callable[[list[str]], Any]:
        def make(first: list[str]) -> Callable[[list[str]], None]:
            b = ck.MemoryBackend(n, policy=policy, timer=Ticker())
            for k in first:
                b.set(k, 1, TTL)

            def more(rest: list[str]) -> None:
                for k in rest:
                    b.set(k, 1, TTL)
                heap_items.append((len(b._store.heap), len(b)))

            return more

        return make

    def cachetools_feeder(cls: Callable[[], Any]) -> Callable[[list[str]], Any]:
        def make(first: list[str]) -> Callable[[list[str]], None]:
            c = cls()
            for k in first:
                c[k] = 1

            def more(rest: list[str]) -> None:
                for k in rest:
                    c[k] = 1

            return more

        return make

    rows = [
        "| store | bytes/entry after fill | after churning 3x capacity | heap items / entries |"
    ]
    rows.append("|---|---:|---:|---:|")
    for policy in ("lru", "tinylfu"):
        heap_items: list[tuple[int, int]] = []
        fill, churn = bytes_per_entry(cachekit_feeder(policy), keys, n)
        heap, live = heap_items[-1]
        rows.append(f"| cachekit {policy} | {fill:.0f} | {churn:.0f} | {heap / live:.2f} |")
    peers: list[tuple[str, Callable[[], Any]]] = [
        ("cachetools TTLCache", lambda: cachetools.TTLCache(n, TTL, timer=Ticker())),
        ("cachetools LRUCache (no TTL)", lambda: cachetools.LRUCache(n)),
    ]
    for name, cls in peers:
        fill, churn = bytes_per_entry(cachetools_feeder(cls), keys, n)
        rows.append(f"| {name} | {fill:.0f} | {churn:.0f} | - |")
    return rows


# -- throughput and hit ratio


def timed(run: Callable[[], int]) -> float:
    """Operations per second of one call of ``run`` (which returns how many it did)."""
    start = time.perf_counter()
    count = run()
    return count / (time.perf_counter() - start)


def workloads(make: Callable[[int], Ops], trace: list[str]) -> list[Callable[[], int]]:
    """Return one store's three timed workloads: hits, evicting writes, Zipf replay."""
    capacity = 1000
    hit, store = make(capacity)
    warm = [f"w{i}" for i in range(capacity)]
    for k in warm:
        store(k)

    def hits() -> int:
        for k in warm:
            hit(k)
        return len(warm)

    writer, fresh = make(capacity), iter(range(10**9))

    def writes() -> int:
        for _ in range(2000):
            writer[1](f"new{next(fresh)}")
        return 2000

    def replay() -> int:
        h, s = make(capacity)
        for k in trace:
            if not h(k):
                s(k)
        return len(trace)

    return [hits, writes, replay]


def throughput_table(rounds: int) -> list[str]:
    """Rounds interleave the stores, so machine noise falls on all of them alike."""
    trace = synthetic("zipf", 50_000)
    contestants = [(name, workloads(make, trace)) for name, make in stores()]
    rates: dict[str, list[list[float]]] = {name: [[], [], []] for name, _ in contestants}
    for _ in range(rounds):
        for name, runs in contestants:
            for i, run in enumerate(runs):
                rates[name][i].append(timed(run))
    rows = ["| store | hit (get) | evicting write (set) | Zipf replay (get + set on miss) |"]
    rows.append("|---|---:|---:|---:|")
    for name, _ in contestants:
        cells = [statistics.median(r) / 1e6 for r in rates[name]]
        rows.append(f"| {name} | " + " | ".join(f"{c:.2f} M/s" for c in cells) + " |")
    return rows


def hit_table(length: int) -> list[str]:
    traces = {name: synthetic(name, length) for name in ("zipf", "loop", "recency")}
    rows = ["| store | zipf (cap 1,000) | loop (cap 1,000) | recency (cap 1,000) |"]
    rows.append("|---|---:|---:|---:|")
    for name, make in stores():
        cells = []
        for keys in traces.values():
            hit, store = make(1000)
            hits = 0
            for k in keys:
                if hit(k):
                    hits += 1
                else:
                    store(k)
            cells.append(f"{hits / len(keys):.2%}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--section", nargs="+", choices=("memory", "throughput", "hit"),
        default=["memory", "throughput", "hit"],
    )  # fmt: skip
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=1_000_000, help="accesses per hit trace")
    args = parser.parse_args(argv)
    versions = {p: importlib.metadata.version(p) for p in ("cachetools",)}
    print(f"Python {platform.python_version()}, cachetools {versions['cachetools']}", end="")
    try:
        print(f", theine {importlib.metadata.version('theine')}")
    except importlib.metadata.PackageNotFoundError:
        print()
    for section in args.section:
        table = {
            "memory": lambda: memory_table(args.entries),
            "throughput": lambda: throughput_table(args.rounds),
            "hit": lambda: hit_table(args.length),
        }[section]()
        print(f"\n{section}:\n" + "\n".join(table), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
