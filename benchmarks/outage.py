"""Backend down and stalled: time per call for each library with its default settings.

Two outages, both on loopback: (a) a closed port (connection refused at once)
and (b) a server that accepts connections and never answers
(``tests.faultkit.StallServer``). Each library decorates a function whose
loader returns at once, with the library's DEFAULT timeouts and retries, and
calls it ``--calls`` times (50) with distinct arguments.

Every library runs in its own subprocess, killed after ``--cap`` seconds (20):
with default settings some peers wait a long time per call on a stalled
server, and the table then says "> 20 s (timed out)" with the calls completed.

    .venv/bin/python benchmarks/outage.py --runs 3

Columns: setup (building the cache / client), first call, median and p99 of
the following calls, total for all calls, and how many calls raised to the
caller. With ``--runs`` > 1 each figure is the median over runs (spread of
the total is printed). Exits non-zero if a cachekit measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_HINT = "not installed (pip install 'cachekit[bench]')"

# library id -> (label, backend, module that must be importable)
LIBRARIES: dict[str, tuple[str, str, str]] = {
    "cachekit-redis": ("cachekit", "redis://", "redis"),
    "cachekit-memcached": ("cachekit", "memcached://", "pymemcache"),
    "dogpile-redis": ("dogpile.cache", "dogpile.cache.redis", "dogpile.cache"),
    "cashews-redis": ("cashews", "redis://", "cashews"),
    "aiocache-redis": ("aiocache", "RedisCache", "aiocache"),
    "redis-py": ("redis-py (raw)", "redis.Redis() get/set", "redis"),
}


# --------------------------------------------------------------------------- child side


def emit(kind: str, seconds: float, error: BaseException | None = None) -> None:
    status = "ok" if error is None else f"{type(error).__name__}: {error}"[:160]
    print(json.dumps({"kind": kind, "s": seconds, "status": status}), flush=True)


def timed_calls(call: Callable[[int], Any], calls: int) -> None:
    for i in range(calls):
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            call(i)
        except Exception as exc:
            error = exc
        emit("call", time.perf_counter() - started, error)


async def timed_calls_async(call: Callable[[int], Any], calls: int) -> None:
    for i in range(calls):
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await call(i)
        except Exception as exc:
            error = exc
        emit("call", time.perf_counter() - started, error)


def child(lib: str, port: int, calls: int) -> None:
    """Build ``lib`` with its defaults against 127.0.0.1:port and time ``calls`` calls.

    Driver modules are imported before the setup clock starts: setup is building
    the cache or client (and whatever I/O the library does then), not imports.
    """
    importlib.import_module(LIBRARIES[lib][2])
    if lib.startswith("cachekit-"):
        import cachekit as ck

        scheme = "redis" if lib == "cachekit-redis" else "memcached"
        importlib.import_module(f"cachekit.backends.{scheme}")
        started = time.perf_counter()
        cache = ck.Cache.from_url(f"{scheme}://127.0.0.1:{port}", namespace="bench-outage")
        emit("setup", time.perf_counter() - started)

        @cache.cached(ttl=60)
        def f(i: int) -> int:
            return i

        timed_calls(f, calls)
        st = cache.stats()
        info = f"breaker open={st.circuit_open}, backend errors by op {st.errors_by_operation}"
        print(json.dumps({"kind": "info", "s": 0.0, "status": info}), flush=True)
    elif lib == "dogpile-redis":
        from dogpile.cache import make_region
        from dogpile.cache.backends import redis as _dogpile_redis  # noqa: F401

        started = time.perf_counter()
        region = make_region().configure(
            "dogpile.cache.redis", expiration_time=60, arguments={"host": "127.0.0.1", "port": port}
        )
        emit("setup", time.perf_counter() - started)

        @region.cache_on_arguments()
        def g(i: int) -> int:
            return i

        timed_calls(g, calls)
    elif lib == "redis-py":
        import redis

        started = time.perf_counter()
        client = redis.Redis(host="127.0.0.1", port=port)
        emit("setup", time.perf_counter() - started)

        def h(i: int) -> int:
            key = f"bench-outage:{i}"
            raw = client.get(key)
            if raw is not None:
                return int(raw)
            client.set(key, i, ex=60)
            return i

        timed_calls(h, calls)
    elif lib == "cashews-redis":
        from cashews import Cache as CashewsCache
        from cashews.backends import redis as _cashews_redis  # noqa: F401

        started = time.perf_counter()
        cashews_cache = CashewsCache()
        cashews_cache.setup(f"redis://127.0.0.1:{port}/0")
        emit("setup", time.perf_counter() - started)

        @cashews_cache(ttl=60)
        async def a(i: int) -> int:
            return i

        asyncio.run(timed_calls_async(a, calls))
    elif lib == "aiocache-redis":
        from aiocache import RedisCache, cached

        started = time.perf_counter()
        deco = cached(cache=RedisCache, endpoint="127.0.0.1", port=port, ttl=60)
        emit("setup", time.perf_counter() - started)

        @deco
        async def b(i: int) -> int:
            return i

        asyncio.run(timed_calls_async(b, calls))
    else:
        raise SystemExit(f"unknown library {lib}")


# --------------------------------------------------------------------------- parent side


@dataclass
class Measure:
    setup: float | None = None
    calls: list[float] = field(default_factory=list)
    raised: int = 0
    first_error: str = ""
    timed_out: bool = False
    crash: str = ""
    info: str = ""

    @property
    def total(self) -> float:
        return (self.setup or 0.0) + sum(self.calls)


def measure(lib: str, port: int, calls: int, cap: float) -> Measure:
    """Run one child under a hard ``cap`` and collect what it reported."""
    m = Measure()
    argv = ["--child", lib, "--port", str(port), "--calls", str(calls)]
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    stderr: list[str] = []

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec["kind"] == "setup":
                m.setup = rec["s"]
            elif rec["kind"] == "info":
                m.info = rec["status"]
            else:
                m.calls.append(rec["s"])
                if rec["status"] != "ok":
                    m.raised += 1
                    m.first_error = m.first_error or rec["status"]

    def read_err() -> None:
        assert proc.stderr is not None
        stderr.extend(proc.stderr)

    readers = [threading.Thread(target=read_out), threading.Thread(target=read_err)]
    for t in readers:
        t.start()
    try:
        proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        m.timed_out = True
        proc.kill()
        proc.wait()
    for t in readers:
        t.join(timeout=5)
    if proc.returncode not in (0, None) and not m.timed_out:
        tail = [ln.strip() for ln in stderr if ln.strip()]
        m.crash = tail[-1][:160] if tail else f"exit {proc.returncode}"
    return m


def ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def summarize(runs: list[Measure], calls: int, cap: float) -> list[str]:
    """Return the table cells: setup, first, median, p99, total, raised, note."""
    med = statistics.median
    cells: list[str] = []
    setups = [m.setup for m in runs if m.setup is not None]
    firsts = [m.calls[0] for m in runs if m.calls]
    rests = [m.calls[1:] for m in runs if len(m.calls) > 1]
    cells.append(ms(med(setups)) if setups else "-")
    cells.append(ms(med(firsts)) if firsts else "-")
    cells.append(ms(med([med(r) for r in rests])) if rests else "-")
    cells.append(ms(med([p99(r) for r in rests])) if rests else "-")
    done = [len(m.calls) for m in runs]
    if any(m.timed_out for m in runs):
        cells.append(f"> {cap:g} s (timed out), {min(done)} calls completed")
    elif any(m.crash for m in runs):
        cells.append("-")
    else:
        totals = [m.total for m in runs]
        spread = f" ({ms(min(totals))}-{ms(max(totals))})" if len(totals) > 1 else ""
        cells.append(f"{ms(med(totals))}{spread} for {calls} calls")
    raised = max(m.raised for m in runs)
    cells.append(f"yes, {raised}/{max(done)}" if raised else "no")
    notes = [m.crash for m in runs if m.crash] or [m.first_error for m in runs if m.first_error]
    notes = notes or [m.info for m in runs if m.info]
    cells.append(notes[0] if notes else "")
    return cells


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def plot(results: dict[tuple[str, str], list[Measure]], path: str, cap: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, outage in zip(axes, ("refused", "stalled"), strict=True):
        libs = [lib for (lib, o) in results if o == outage]
        values, hatches = [], []
        for lib in libs:
            runs = results[(lib, outage)]
            timed_out = any(m.timed_out for m in runs)
            values.append(cap if timed_out else statistics.median(m.total for m in runs))
            hatches.append("//" if timed_out else "")
        colors = ["tab:green" if lib.startswith("cachekit") else "tab:gray" for lib in libs]
        bars = ax.barh(range(len(libs)), values, color=colors)
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax.set_yticks(range(len(libs)), libs, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("seconds for the calls (log; hatched = hit the cap)")
        ax.set_title(f"backend {outage}")
        for i, v in enumerate(values):
            ax.text(v, i, f" {ms(v)}", va="center", fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nplot written to {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--cap", type=float, default=20.0, help="seconds allowed per library and run")
    p.add_argument("--libs", default=",".join(LIBRARIES), help="comma-separated subset")
    p.add_argument("--redis-url", default="redis://127.0.0.1:16379/0", help="unused: outages only")
    p.add_argument("--memcached-url", default="memcached://127.0.0.1:21211", help="unused")
    p.add_argument("--plot", metavar="PATH.png")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        child(args.child, args.port, args.calls)
        return 0

    sys.path.insert(0, ROOT)
    from tests.faultkit import StallServer, free_port

    libs = [lib for lib in args.libs.split(",") if lib]
    results: dict[tuple[str, str], list[Measure]] = {}
    failed = False
    rows: list[list[str]] = []
    with StallServer() as stall:
        for outage in ("refused", "stalled"):
            for lib in libs:
                label, backend, module = LIBRARIES[lib]
                head = [label, backend, outage]
                if not installed(module):
                    rows.append([*head, INSTALL_HINT])
                    continue
                runs = []
                for _ in range(args.runs):
                    port = stall.port if outage == "stalled" else free_port()
                    print(f"  {lib} / {outage} ...", file=sys.stderr, flush=True)
                    runs.append(measure(lib, port, args.calls, args.cap))
                results[(lib, outage)] = runs
                if lib.startswith("cachekit") and any(m.crash or m.timed_out for m in runs):
                    failed = True
                rows.append([*head, *summarize(runs, args.calls, args.cap)])

    print(
        f"\nBackend down: {args.calls} calls of a decorated function (loader returns at once), "
        f"default settings,\n{args.runs} run(s) per library, each in a subprocess capped at "
        f"{args.cap:g} s; figures are medians over runs\n"
    )
    cols = ["library", "backend", "outage", "setup", "first call", "median next", "p99 next"]
    cols += ["total", "raised to caller", "first error / note"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.plot and results:
        plot(results, args.plot, args.cap)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
