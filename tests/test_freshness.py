"""Early refresh (XFetch) and stale-while-revalidate: deterministic, on an injected clock.

Loaders advance the fake clock by their "duration" (XFetch's delta); the
XFetch draw is pinned by replacing the module's random source, so whether a
hit is due is exact: with U pinned, a hit reloads iff
``expiry - now <= -delta * beta * ln(1 - U)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cachekit as ck
from cachekit.aio import AsyncCache
from cachekit.backends.aio.memory import AsyncMemoryBackend
from cachekit.core import fresh
from tests.conftest import FakeClock


def _ns() -> str:
    return "fr-" + uuid.uuid4().hex[:8]


class _Fixed:
    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # 1 - U = e^-1: a hit is due iff expiry - now <= delta * beta
    monkeypatch.setattr(fresh, "_random", _Fixed(1 - 0.36787944117144233))
    yield


def _settle(cache: Any, field: str, value: int, timeout: float = 5.0) -> None:
    """Wait (real time, bounded) until a background reload has finished."""
    deadline = time.monotonic() + timeout
    while getattr(cache.stats(), field) < value:
        assert time.monotonic() < deadline, cache.stats()
        time.sleep(0.005)


def _memory(clock: FakeClock, ttl: ck.TTL) -> ck.Cache:
    return ck.Cache(ck.MemoryBackend(timer=clock), namespace=_ns(), ttl=ttl, timer=clock)


def _counting_loader(clock: FakeClock, duration: float) -> tuple[Callable[[], int], list[int]]:
    calls: list[int] = []

    def load() -> int:
        clock.advance(duration)  # the load takes ``duration`` on the cache's clock
        calls.append(1)
        return len(calls)

    return load, calls


def test_no_early_reload_far_from_expiry(clock: FakeClock, pinned: None) -> None:
    cache = _memory(clock, ck.TTL(100, early_refresh=1.0))
    load, calls = _counting_loader(clock, 2.0)
    assert cache.get_or_load("k", load) == 1
    for _ in range(50):
        clock.advance(1.9)  # up to 95 s: expiry - now stays above delta * beta (2 s)
        assert cache.get_or_load("k", load) == 1
        if clock.now > 1002 + 97:
            break
    assert len(calls) == 1
    assert cache.stats().refreshes_started == 0


def test_exactly_one_early_reload_near_expiry_and_callers_never_wait(
    clock: FakeClock, pinned: None
) -> None:
    cache = _memory(clock, ck.TTL(100, early_refresh=1.0))
    release = threading.Event()
    calls: list[int] = []

    def load() -> int:
        calls.append(1)
        if len(calls) == 1:
            clock.advance(2.0)  # the first load takes 2 s: XFetch's delta
        else:
            release.wait(5)  # the background reload is held while callers keep reading
        return len(calls)

    assert cache.get_or_load("k", load) == 1  # expires at 1002 + 100
    clock.now = 1102 - 1.5  # within delta * beta of expiry: due
    for _ in range(20):
        assert cache.get_or_load("k", load) == 1  # the old value at once, every time
    assert cache.stats().refreshes_started == 1  # one reload, not one per hit
    release.set()
    _settle(cache, "refreshes_completed", 1)
    assert len(calls) == 2
    assert cache.get_or_load("k", load) == 2


def test_stale_while_revalidate_window_edges(clock: FakeClock) -> None:
    cache = _memory(clock, ck.TTL(10, stale_while_revalidate=5))
    load, _ = _counting_loader(clock, 0.0)
    assert cache.get_or_load("k", load) == 1  # expires at 1010, kept until 1015
    clock.now = 1009.99
    assert cache.get_or_load("k", load) == 1 and cache.stats().refreshes_started == 0
    clock.now = 1010.0  # expired: the old value now, a reload behind
    assert cache.get_or_load("k", load) == 1
    assert cache.stats().stale_revalidated == 1
    _settle(cache, "refreshes_completed", 1)
    assert cache.get_or_load("k", load) == 2  # the reloaded value (expires at 1020)
    clock.now = 1025.0  # past the window: gone, a normal (blocking) load
    assert cache.get_or_load("k", load) == 3
    assert cache.stats().refreshes_started == 1
    assert cache.get("k") == 3


def test_a_reload_that_races_a_write_never_overwrites_it(
    clock: FakeClock, make_backend: Callable[..., ck.Backend]
) -> None:
    for kind in ("memory", "redis"):
        cache: ck.Cache
        if kind == "memory":
            cache = _memory(clock, ck.TTL(10, stale_while_revalidate=60))
        else:
            cache = ck.Cache(
                make_backend("redis"),
                namespace=_ns(),
                ttl=ck.TTL(10, stale_while_revalidate=60),
                timer=clock,
            )
        started, release = threading.Event(), threading.Event()

        def load(
            cache: ck.Cache = cache,
            started: threading.Event = started,
            release: threading.Event = release,
        ) -> str:
            if cache.stats().loads >= 1:  # the background reload: reads the row, then waits
                started.set()
                release.wait(5)
                return "reloaded-old"
            return "v1"

        assert cache.get_or_load("k", load) == "v1"
        clock.advance(11)  # stale: the next hit reloads behind
        assert cache.get_or_load("k", load) == "v1"
        assert started.wait(5)
        cache.set("k", "written")  # a write while the reload holds an older row
        release.set()
        _settle(cache, "refreshes_completed", 1)
        assert cache.get("k") == "written", kind


def test_a_failed_reload_keeps_the_old_value_until_hard_expiry(clock: FakeClock) -> None:
    cache = _memory(clock, ck.TTL(10, stale_while_revalidate=5))
    state = {"fail": False}

    def load() -> str:
        if state["fail"]:
            raise RuntimeError("source down")
        return "v1"

    assert cache.get_or_load("k", load) == "v1"
    state["fail"] = True
    clock.now = 1011.0
    assert cache.get_or_load("k", load) == "v1"
    _settle(cache, "refreshes_failed", 1)
    assert cache.stats().load_failures == 1
    clock.now = 1014.0
    assert cache.get_or_load("k", load) == "v1"  # still serving, one more reload tried
    _settle(cache, "refreshes_failed", 2)
    clock.now = 1016.0  # hard expiry: the failure now reaches the caller
    with pytest.raises(RuntimeError):
        cache.get_or_load("k", load)


def test_decorated_functions_refresh_too(clock: FakeClock) -> None:
    cache = _memory(clock, ck.TTL(10, stale_while_revalidate=5))
    calls = 0

    @cache.cached()
    def f(x: int) -> int:
        nonlocal calls
        calls += 1
        return x * 10 + calls

    assert f(1) == 11
    clock.advance(11)
    assert f(1) == 11  # stale, returned at once
    _settle(cache, "refreshes_completed", 1)
    assert f(1) == 12


def test_the_queue_bound_skips_and_counts(clock: FakeClock) -> None:
    cache = _memory(clock, ck.TTL(10, stale_while_revalidate=60))
    cache._background.limit = 1
    hold = threading.Event()

    def slow() -> int:
        hold.wait(5)
        return 2

    for k in ("a", "b"):
        cache.set(k, 1)
    clock.advance(11)
    assert cache.get_or_load("a", slow) == 1  # reload started, held
    assert cache.get_or_load("b", slow) == 1  # the queue is full: skipped, counted
    assert cache.stats().refreshes_skipped == 1
    hold.set()
    _settle(cache, "refreshes_completed", 1)


def test_ttl_options_are_validated() -> None:
    for bad in ({"early_refresh": -1}, {"stale_while_revalidate": float("nan")}):
        with pytest.raises(ck.ConfigurationError):
            ck.TTL(10, **bad)  # type: ignore[arg-type]
    with pytest.raises(ck.ConfigurationError):
        ck.TTL(None, early_refresh=1.0)


def test_a_plain_entry_and_a_plain_get_are_untouched(clock: FakeClock) -> None:
    cache = _memory(clock, ck.TTL(10, stale_while_revalidate=5))
    cache.set("k", {"a": 1})
    assert cache.get("k") == {"a": 1}
    assert cache.get_many(["k"]) == {"k": {"a": 1}}
    clock.advance(12)
    assert cache.get("k") == {"a": 1}  # inside the window a plain get still answers
    clock.advance(5)
    assert cache.get("k") is None


def test_async_reloads_are_tasks_cancelled_on_aclose(clock: FakeClock) -> None:
    async def main() -> None:
        store = ck.MemoryBackend(timer=clock)
        c = AsyncCache(
            AsyncMemoryBackend(store),
            namespace=_ns(),
            ttl=ck.TTL(10, stale_while_revalidate=30),
            timer=clock,
        )
        hold = asyncio.Event()
        calls = 0

        async def load() -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                await hold.wait()
            return calls

        assert await c.get_or_load("k", load) == 1
        clock.advance(11)
        assert await c.get_or_load("k", load) == 1  # stale at once, reload behind
        await asyncio.sleep(0)
        assert c.stats().refreshes_started == 1 and len(c._background._tasks) == 1
        await c.aclose()
        assert not c._background._tasks  # cancelled and awaited, not left running

    asyncio.run(main())


def test_prometheus_exports_the_freshness_counters(clock: FakeClock) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from cachekit.metrics import register_prometheus

    cache = _memory(clock, ck.TTL(10, stale_while_revalidate=5))
    registry = CollectorRegistry()
    register_prometheus(cache, registry)
    cache.get_or_load("k", lambda: 1)
    clock.advance(11)
    cache.get_or_load("k", lambda: 2)
    _settle(cache, "refreshes_completed", 1)
    text = generate_latest(registry).decode()
    ns = cache.namespace
    assert f'cachekit_stale_revalidated_total{{backend="memory",cache="{ns}"}} 1.0' in text
    completed = f'cachekit_refreshes_total{{backend="memory",cache="{ns}",outcome="completed"}}'
    assert f"{completed} 1.0" in text


def test_an_early_reload_that_ends_after_expiry_is_not_lost(
    redis_url: str, pinned: None
) -> None:
    # Real time: the entry expires at 1 s; a hit 0.2 s before triggers a reload that
    # takes 0.3 s. The backend keeps the entry past its serving window, so the reload's
    # compare-and-set over it still lands (before, Redis had dropped it: value lost).
    cache = ck.Cache.from_url(redis_url, namespace=_ns(), ttl=ck.TTL(1, early_refresh=1.0))
    calls: list[int] = []

    def load() -> int:
        time.sleep(0.3)
        calls.append(1)
        return len(calls)

    try:
        assert cache.get_or_load("k", load) == 1
        time.sleep(0.8)  # stored at +0.3 s, expires at +1.3 s: 0.2 s left, within 0.3 s: due
        assert cache.get_or_load("k", load) == 1
        assert cache.stats().refreshes_started == 1
        _settle(cache, "refreshes_completed", 1)
        assert cache.get("k") == 2  # the reload landed
        assert len(calls) == 2
    finally:
        cache.close()
