"""Hit-ratio simulator: replay a key trace against each eviction policy at each capacity.

A trace is a text file (optionally gzip), one key per line, or ``time,key``
CSV (the key is the last field; a header line without a comma-free key is
skipped). ``synthetic:NAME`` stands for a generated trace (``zipf``,
``loop``, ``scan``, ``recency``; see ``synthetic``).

Each access is a ``get``; a miss is followed by a ``set``, as cache-aside
does. Policies: ``lru`` and ``tinylfu`` are ``MemoryBackend`` itself (read
buffer and all), ``cachetools-lru`` and ``cachetools-lfu`` are the cachetools
classes for reference, ``optimal`` is Belady's clairvoyant bound (it may also
decline to store a key, so no admission policy can beat it).

    python -m cachekit.policy_sim synthetic:zipf --capacity 100 1000 --plot out.png
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import heapq
import itertools
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cachetools

from ..backends.base import MISSING
from ..backends.memory import MemoryBackend
from ..errors import ConfigurationError

__all__ = ["POLICY_NAMES", "SimResult", "main", "read_trace", "simulate", "synthetic"]

#: Policies in table order.
POLICY_NAMES = ("lru", "tinylfu", "cachetools-lru", "cachetools-lfu", "optimal")

SYNTHETIC = ("zipf", "loop", "scan", "recency")


@dataclass(frozen=True)
class SimResult:
    """One policy's replay of one trace at one capacity."""

    trace: str
    capacity: int
    policy: str
    accesses: int
    hits: int
    seconds: float

    @property
    def hit_ratio(self) -> float:
        """Hits per access (0.0 for an empty trace)."""
        return self.hits / self.accesses if self.accesses else 0.0


def _zipf(rng: random.Random, n: int, keys: int, s: float) -> list[str]:
    cum = list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, keys + 1)))
    total = cum[-1]
    ids = list(range(keys))
    rng.shuffle(ids)  # popularity is not key order
    return [f"z{ids[bisect.bisect(cum, rng.random() * total)]}" for _ in range(n)]


def synthetic(name: str, n: int = 100_000, seed: int = 42) -> list[str]:
    """Return a deterministic synthetic trace of ``n`` keys.

    - ``zipf``: Zipf(1.1) popularity over 10,000 keys;
    - ``loop``: keys 0..1,499 requested in order, again and again;
    - ``scan``: the Zipf trace with one-off sequential scans (20 % of accesses) mixed in;
    - ``recency``: an LRU-stack workload where recently used keys come back
      (stack distance Zipf(1.0), one access in ten a new key); LRU's best case.
    """
    rng = random.Random(f"{name}:{seed}")
    if name == "zipf":
        return _zipf(rng, n, 10_000, 1.1)
    if name == "loop":
        return [f"l{i % 1500}" for i in range(n)]
    if name == "scan":
        hot = iter(_zipf(rng, n, 10_000, 1.1))
        out: list[str] = []
        scanned = 0
        while len(out) < n:
            if rng.random() < 0.2 / 50:  # a scan of 50 new keys starts (20 % of accesses)
                out.extend(f"s{scanned + i}" for i in range(50))
                scanned += 50
            else:
                out.append(next(hot))
        return out[:n]
    if name == "recency":
        stack: list[str] = []  # most recent last
        cum = list(itertools.accumulate(1.0 / d for d in range(1, 5001)))
        fresh = 0
        out = []
        for _ in range(n):
            if not stack or rng.random() < 0.1:
                key = f"r{fresh}"
                fresh += 1
            else:
                depth = bisect.bisect(cum, rng.random() * cum[-1]) % len(stack)
                key = stack.pop(-1 - depth)
            stack.append(key)
            if len(stack) > 5000:
                del stack[0]
            out.append(key)
        return out
    raise ConfigurationError(f"unknown synthetic trace {name!r}: one of {', '.join(SYNTHETIC)}")


def read_trace(spec: str, limit: int | None = None) -> list[str]:
    """Return the keys of a trace file (plain or ``.gz``) or of ``synthetic:NAME``."""
    if spec.startswith("synthetic:"):
        return synthetic(spec.partition(":")[2], n=limit or 100_000)
    path = Path(spec)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            keys = list(itertools.islice(_keys(lines), limit))
    except OSError as exc:
        raise ConfigurationError(f"cannot read trace {spec}: {exc}") from exc
    return keys


def _keys(lines: Iterator[str]) -> Iterator[str]:
    for number, line in enumerate(lines):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line:
            first, _, key = line.rpartition(",")
            if number == 0 and not _is_number(first.split(",")[0]):
                continue  # a CSV header such as ``time,key``
            line = key.strip()
        yield line


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _replay_backend(policy: str) -> Callable[[Sequence[str], int], int]:
    def run(keys: Sequence[str], capacity: int) -> int:
        backend = MemoryBackend(capacity, policy=policy)
        get, put = backend.get, backend.set
        hits = 0
        for key in keys:
            if get(key) is MISSING:
                put(key, 1, None)
            else:
                hits += 1
        return hits

    return run


def _replay_cachetools(cls: Callable[[int], cachetools.Cache[str, int]]) -> Callable[..., int]:
    def run(keys: Sequence[str], capacity: int) -> int:
        cache = cls(capacity)
        hits = 0
        for key in keys:
            if cache.get(key) is None:
                cache[key] = 1
            else:
                hits += 1
        return hits

    return run


def optimal_hits(keys: Sequence[str], capacity: int) -> int:
    """Belady's bound: evict (or do not store) the key whose next use is farthest away."""
    never = len(keys)
    upcoming = [0] * len(keys)
    seen: dict[str, int] = {}
    for i in range(len(keys) - 1, -1, -1):
        upcoming[i] = seen.get(keys[i], never)
        seen[keys[i]] = i
    held: dict[str, int] = {}  # key -> index of its next use
    heap: list[tuple[int, str]] = []  # (-next use, key); stale items skipped
    hits = 0
    for i, key in enumerate(keys):
        if key in held:
            hits += 1
        held[key] = upcoming[i]
        heapq.heappush(heap, (-upcoming[i], key))
        while len(held) > capacity:
            far, victim = heapq.heappop(heap)
            if held.get(victim) == -far:
                del held[victim]
    return hits


_RUNNERS: dict[str, Callable[[Sequence[str], int], int]] = {
    "lru": _replay_backend("lru"),
    "tinylfu": _replay_backend("tinylfu"),
    "cachetools-lru": _replay_cachetools(cachetools.LRUCache),
    "cachetools-lfu": _replay_cachetools(cachetools.LFUCache),
    "optimal": optimal_hits,
}


def simulate(
    keys: Sequence[str],
    capacities: Sequence[int],
    policies: Sequence[str] = POLICY_NAMES,
    trace: str = "trace",
) -> list[SimResult]:
    """Replay ``keys`` against each policy at each capacity."""
    unknown = [p for p in policies if p not in _RUNNERS]
    if unknown:
        raise ConfigurationError(f"unknown policies {unknown}: choose from {POLICY_NAMES}")
    results = []
    for capacity in capacities:
        for policy in policies:
            start = time.perf_counter()
            hits = _RUNNERS[policy](keys, capacity)
            seconds = time.perf_counter() - start
            results.append(SimResult(trace, capacity, policy, len(keys), hits, seconds))
    return results


def format_table(results: Sequence[SimResult], policies: Sequence[str]) -> str:
    """Return a table with one row per trace and capacity, one hit-ratio column per policy."""
    rows: dict[tuple[str, int], dict[str, SimResult]] = {}
    for r in results:
        rows.setdefault((r.trace, r.capacity), {})[r.policy] = r
    width = max([len("trace"), *(len(t) for t, _ in rows)])
    head = f"{'trace':<{width}}  {'capacity':>8}  {'accesses':>9}" + "".join(
        f"  {p:>14}" for p in policies
    )
    lines = [head, "-" * len(head)]
    for (trace, capacity), by_policy in rows.items():
        accesses = next(iter(by_policy.values())).accesses
        cells = "".join(f"  {by_policy[p].hit_ratio:>14.2%}" for p in policies)
        lines.append(f"{trace:<{width}}  {capacity:>8}  {accesses:>9}{cells}")
    return "\n".join(lines)


def plot(results: Sequence[SimResult], policies: Sequence[str], path: str) -> None:
    """Draw hit ratio against capacity, one panel per trace, one line per policy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        hint = "--plot needs matplotlib: pip install 'cachekit-py[plot]'"
        raise ConfigurationError(hint) from exc
    traces = list(dict.fromkeys(r.trace for r in results))
    fig, axes = plt.subplots(1, len(traces), figsize=(4.5 * len(traces), 3.6), squeeze=False)
    for ax, trace in zip(axes[0], traces, strict=True):
        for policy in policies:
            points = sorted(
                (r.capacity, r.hit_ratio * 100)
                for r in results
                if r.trace == trace and r.policy == policy
            )
            ax.plot([c for c, _ in points], [h for _, h in points], marker="o", label=policy)
        ax.set_xscale("log")
        ax.set_title(trace)
        ax.set_xlabel("capacity (entries)")
        ax.set_ylabel("hit ratio (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator from the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="cachekit-policy-sim",
        description="Replay key traces against eviction policies and print hit ratios.",
    )
    parser.add_argument(
        "traces", nargs="+", help="trace files (one key a line, or time,key CSV) or synthetic:NAME"
    )
    parser.add_argument("--capacity", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--policy", nargs="+", choices=POLICY_NAMES, default=list(POLICY_NAMES))
    parser.add_argument("--limit", type=int, default=None, help="replay at most N accesses")
    parser.add_argument("--plot", metavar="PNG", help="also draw hit ratio against capacity")
    args = parser.parse_args(argv)
    if any(c < 1 for c in args.capacity):
        parser.error("--capacity values must be >= 1")
    results: list[SimResult] = []
    try:
        for spec in args.traces:
            keys = read_trace(spec, args.limit)
            results += simulate(keys, args.capacity, args.policy, trace=Path(spec).name)
        print(format_table(results, args.policy))
        if args.plot:
            plot(results, args.policy, args.plot)
            print(f"plot written to {args.plot}")
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
