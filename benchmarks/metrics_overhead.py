"""Metrics overhead: hit latency through ``@cache.cached`` with Prometheus export on and off.

Every configuration runs in the same process, in interleaved rounds (the order
rotates each round) so machine noise falls on all of them alike:

- ``not registered``: a memory-backend cache, no collector;
- ``registered``: the same, exported with ``register_prometheus``;
- ``registered + scrape/100ms``: also scraped (``generate_latest``) every
  100 ms by a background thread, as a busy Prometheus would;
- ``(reference) Counter.inc per hit``: what a hit would cost if it called
  prometheus-client itself (the design cachekit avoids); not part of the target.

    .venv/bin/python benchmarks/metrics_overhead.py --rounds 15 --calls 100000

Prints ns per hit (median, min, max over rounds) and the paired difference
from ``not registered``: per round, (config - base) / base, then the median
and interquartile range of those. Pairing the rounds that ran next to each
other cancels most of the noise of a shared machine. Also prints the mean
time of one scrape. Exits non-zero if ``registered + scrape/100ms`` is 10 %
or more slower (the target of issue 5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter

import cachekit as ck
from cachekit.metrics import register_prometheus

TARGET_PCT = 10.0


def make_hit(namespace: str, registry: CollectorRegistry | None) -> Callable[[], int]:
    """A warm ``@cache.cached`` function on a memory backend; optionally exported."""
    cache = ck.Cache(ck.MemoryBackend(), namespace=namespace)
    if registry is not None:
        register_prometheus(cache, registry)

    @cache.cached()
    def square(x: int) -> int:
        return x * x

    square(7)  # warm: every timed call is a hit
    return lambda: square(7)


def make_prom_counted_hit() -> Callable[[], int]:
    """The reference: a hit that also increments a prometheus-client counter."""
    inner = make_hit("bench-ref", None)
    counter = PromCounter("ref_hits", "reference", ["cache"], registry=CollectorRegistry()).labels(
        "bench-ref"
    )

    def hit() -> int:
        counter.inc()
        return inner()

    return hit


class Scraper:
    """Scrapes a registry every ``interval`` seconds while running."""

    def __init__(self, registry: CollectorRegistry, interval: float) -> None:
        self.registry = registry
        self.interval = interval
        self.scrapes = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Scraper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            generate_latest(self.registry)
            self.seconds += time.perf_counter() - started
            self.scrapes += 1
            self._stop.wait(self.interval)

    def mean_ms(self) -> float:
        """Mean wall time of one scrape, in milliseconds."""
        return self.seconds / self.scrapes * 1000 if self.scrapes else 0.0

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


def time_calls(fn: Callable[[], int], calls: int) -> float:
    """Nanoseconds per call over ``calls`` calls."""
    perf = time.perf_counter_ns
    started = perf()
    for _ in range(calls):
        fn()
    return (perf() - started) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per configuration")
    parser.add_argument("--calls", type=int, default=100_000, help="hits per round")
    parser.add_argument("--scrape-interval", type=float, default=0.1, help="seconds")
    args = parser.parse_args(argv)

    registry = CollectorRegistry()
    scraper = Scraper(registry, args.scrape_interval)
    base = "not registered"
    scraped = f"registered + scrape/{args.scrape_interval * 1000:.0f}ms"
    ref = "(reference) Counter.inc per hit"
    configs: dict[str, tuple[Callable[[], int], bool]] = {
        base: (make_hit("bench-off", None), False),
        "registered": (make_hit("bench-on", registry), False),
        scraped: (make_hit("bench-scraped", registry), True),
        ref: (make_prom_counted_hit(), False),
    }
    results: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for fn, _ in configs.values():  # warm-up round, not recorded
        time_calls(fn, args.calls // 10)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, scrape = configs[name]
            if scrape:
                with scraper:
                    results[name].append(time_calls(fn, args.calls))
            else:
                results[name].append(time_calls(fn, args.calls))

    scrape_ms = scraper.mean_ms()
    print(
        f"hit latency via @cache.cached (memory backend), {args.rounds} rounds x "
        f"{args.calls} calls, Python {sys.version.split()[0]}; {scraper.scrapes} scrapes of "
        f"{scrape_ms:.2f} ms each (= {scrape_ms / (args.scrape_interval * 1000) * 100:.1f} % "
        "of the interval)"
    )
    print(
        f"{'configuration':34} {'median ns':>9} {'min ns':>7} {'max ns':>7} "
        f"{'paired diff: median':>20} {'(IQR)':>16}"
    )
    for name, values in results.items():
        diffs = paired_diffs(values, results[base])
        q1, _, q3 = statistics.quantiles(diffs, n=4)
        print(
            f"{name:34} {statistics.median(values):9.0f} {min(values):7.0f} {max(values):7.0f} "
            f"{statistics.median(diffs):+19.1f}% {f'({q1:+.1f}..{q3:+.1f})':>16}"
        )
    pct = statistics.median(paired_diffs(results[scraped], results[base]))
    ok = pct < TARGET_PCT
    print(f"target: < {TARGET_PCT:.0f} % with scraping -> {pct:+.1f} % {'OK' if ok else 'OVER'}")
    return 0 if ok else 1


def paired_diffs(values: list[float], base: list[float]) -> list[float]:
    """Per-round difference from the base in %: rounds are adjacent in time, so noise pairs up."""
    return [(v - b) / b * 100 for v, b in zip(values, base, strict=True)]


if __name__ == "__main__":
    sys.exit(main())
