"""``AsyncCache``: the contract of ``Cache``, awaited, on memory, Redis and Memcached.

Each test runs its coroutine with ``asyncio.run`` (no plugin needed) against
the real test servers, in a fresh namespace.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

import cachekit as ck
from cachekit.aio import AsyncCache
from tests.faultkit import StallServer, closed_port

T = TypeVar("T")
KINDS = ("memory", "redis", "memcached")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _ns() -> str:
    return "a-" + uuid.uuid4().hex[:8]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue(f"{request.param}_url"))


# ---------------------------------------------------------------- basics


def test_round_trip_and_counts(url: str) -> None:
    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=_ns(), ttl=60) as c:
            assert await c.get("k") is None
            await c.set("k", {"a": [1, 2]})
            assert await c.get("k") == {"a": [1, 2]}
            assert await c.contains("k")
            await c.set_many({"x": 1, "y": 2})
            assert await c.get_many(["x", "y", "z"]) == {"x": 1, "y": 2}
            assert await c.delete("k") is True
            assert await c.delete_many(["x", "y"]) >= 1
            assert await c.add("n", 1) is True and await c.add("n", 2) is False
            await c.clear()
            assert await c.get("n") is None
            st = c.stats()
            assert st.hits == 4 and st.misses >= 3  # get, contains, x, y

    run(main())


def test_thirty_two_tasks_on_a_cold_key_make_one_load(url: str) -> None:
    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=_ns(), ttl=60) as c:
            calls = 0

            async def loader() -> int:
                nonlocal calls
                calls += 1
                await asyncio.sleep(0.05)
                return 42

            got = await asyncio.gather(*(c.get_or_load("k", loader) for _ in range(32)))
            assert got == [42] * 32 and calls == 1
            st = c.stats()
            assert (st.loads, st.coalesced) == (1, 31)

    run(main())


def test_a_loader_error_reaches_every_waiter_and_is_not_cached(url: str) -> None:
    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=_ns(), ttl=60) as c:

            async def boom() -> int:
                await asyncio.sleep(0.02)
                raise RuntimeError("source down")

            results = await asyncio.gather(
                *(c.get_or_load("k", boom) for _ in range(8)), return_exceptions=True
            )
            assert all(isinstance(r, RuntimeError) for r in results)
            assert await c.get("k") is None
            assert c.stats().load_failures == 1

    run(main())


def test_cancelling_the_loading_task_never_leaves_the_key_stuck(url: str) -> None:
    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=_ns(), ttl=60) as c:
            started = asyncio.Event()

            async def slow() -> int:
                started.set()
                await asyncio.sleep(10)
                return 1

            leader = asyncio.create_task(c.get_or_load("k", slow))
            await started.wait()
            waiter = asyncio.create_task(c.get_or_load("k", lambda: asyncio.sleep(0, 2)))
            await asyncio.sleep(0.01)
            leader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leader
            assert await asyncio.wait_for(waiter, 2) == 2  # loads for itself, not cancelled
            assert await asyncio.wait_for(c.get_or_load("k2", lambda: asyncio.sleep(0, 3)), 2) == 3
            assert await asyncio.wait_for(c.get_or_load("k", lambda: asyncio.sleep(0, 4)), 2) in (
                2,
                4,
            )

    run(main())


def test_a_write_during_a_load_keeps_the_write(url: str) -> None:
    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=_ns(), ttl=60) as c:

            async def load_then_overtaken() -> str:
                await c.set("k", "new")  # a write lands while the load is in flight
                return "old"

            assert await c.get_or_load("k", load_then_overtaken) == "old"
            assert await c.get("k") == "new"

            async def refresh_overtaken() -> str:
                await c.write("k", lambda: asyncio.sleep(0, "newer"))
                return "older"

            c.policy = ck.WriteThrough(ttl=60)
            assert await c.refresh("k", refresh_overtaken) == "older"
            assert await c.get("k") == "newer"

    run(main())


def test_a_loader_asking_for_its_own_key_fails_at_once(url: str) -> None:
    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=_ns(), ttl=60) as c:

            @c.cached(key="cfg")
            async def cfg() -> int:
                return await c.get_or_load("cfg", lambda: asyncio.sleep(0, 1))

            with pytest.raises(ck.ReentrantLoadError):
                await asyncio.wait_for(cfg(), 5)
            assert await c.get_or_load("cfg", lambda: asyncio.sleep(0, 2)) == 2

    run(main())


# ---------------------------------------------------------------- decorators


def test_decorators_and_helpers(url: str) -> None:
    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=_ns(), ttl=60, policy=ck.WriteThrough()) as c:
            db = {1: "ann"}
            reads = 0

            @c.cached(key="user:{user_id}")
            async def get_user(user_id: int) -> str:
                nonlocal reads
                reads += 1
                return db[user_id]

            @c.writes(key="user:{user_id}")
            async def save_user(user_id: int, name: str) -> str:
                db[user_id] = name
                return name

            @c.evicts(key="user:{user_id}")
            async def delete_user(user_id: int) -> None:
                db.pop(user_id, None)

            assert await get_user(1) == "ann" and await get_user(1) == "ann" and reads == 1
            await save_user(1, "bob")
            assert await get_user(1) == "bob" and reads == 1  # written through
            db[1] = "cy"
            assert await get_user.refresh(1) == "cy" and await get_user(1) == "cy"
            assert await get_user.invalidate(1) is True
            assert get_user.key(1) == "user:1"
            await delete_user(1)
            assert await get_user.uncached(2) if 2 in db else True

            class Repo:
                @c.cached()
                async def load(self, x: int) -> int:
                    return x * 2

            r = Repo()
            assert await r.load(3) == 6 and await r.load(3) == 6
            assert await r.load.invalidate(3) is True

    run(main())


def test_each_kind_of_cache_refuses_the_other_kind_of_function() -> None:
    acache = AsyncCache.from_url("memory://", namespace=_ns())
    cache = ck.Cache.from_url("memory://", namespace=_ns())
    with pytest.raises(ck.ConfigurationError, match="use a Cache"):

        @acache.cached()
        def plain(x: int) -> int:
            return x

    with pytest.raises(ck.ConfigurationError, match="use an AsyncCache"):

        @cache.cached()
        async def coro(x: int) -> int:
            return x


# ---------------------------------------------------------------- interop


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_a_cache_and_an_async_cache_share_entries_and_invalidations(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(f"{kind}_url"))
    ns = _ns()
    sync = ck.Cache.from_url(url, namespace=ns, ttl=60)

    async def main() -> None:
        async with AsyncCache.from_url(url, namespace=ns, ttl=60) as a:
            sync.set("k", {"from": "sync"})
            assert await a.get("k") == {"from": "sync"}
            await a.set("k2", [1, "two"])
            assert sync.get("k2") == [1, "two"]
            await a.delete("k")
            assert sync.get("k") is None
            sync.clear()
            await asyncio.sleep(0)
            a._ns.check_at = 0  # re-read the namespace version now, not in a second
            assert await a.get("k2") is None

    try:
        run(main())
    finally:
        sync.close()


def test_caches_over_one_memory_store_share_it() -> None:
    from cachekit.backends.aio.memory import AsyncMemoryBackend

    store = ck.MemoryBackend()
    ns = _ns()
    sync = ck.Cache(store, namespace=ns, ttl=60)

    async def main() -> None:
        a = AsyncCache(AsyncMemoryBackend(store), namespace=ns, ttl=60)
        sync.set("k", 1)
        assert await a.get("k") == 1
        await a.clear()
        assert sync.get("k") is None

    run(main())


# ---------------------------------------------------------------- failure


def test_a_hung_server_never_blocks_the_event_loop() -> None:
    async def main() -> tuple[float, float, float]:
        with StallServer() as hung:
            c = AsyncCache.from_url(f"redis://127.0.0.1:{hung.port}/0", namespace=_ns(), ttl=60)
            worst = 0.0
            stop = False

            async def ticker() -> None:
                nonlocal worst
                while not stop:
                    before = time.monotonic()
                    await asyncio.sleep(0.01)
                    worst = max(worst, time.monotonic() - before - 0.01)

            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.05)
            started = time.monotonic()
            assert await c.get_or_load("k", lambda: asyncio.sleep(0, 1)) == 1
            first = time.monotonic() - started
            started = time.monotonic()
            for _ in range(20):
                assert await c.get("k") is None
            later = (time.monotonic() - started) / 20
            stop = True
            await tick
            await c.aclose()
            return first, later, worst

    first, later, worst = run(main())
    assert first < 0.4, f"first call {first:.3f} s"  # one deadline (0.25 s)
    assert later < 0.01, f"calls while the breaker is open took {later:.4f} s"
    assert worst < 0.1, f"the event loop stalled {worst:.3f} s"


def test_a_closed_port_fails_open_fast() -> None:
    async def main() -> float:
        with closed_port() as port:
            c = AsyncCache.from_url(f"redis://127.0.0.1:{port}/0", namespace=_ns(), ttl=60)
            started = time.monotonic()
            assert await c.get_or_load("k", lambda: asyncio.sleep(0, 1)) == 1
            took = time.monotonic() - started
            await c.aclose()
            return took

    assert run(main()) < 0.1


def test_metrics_export_an_async_cache(url: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from cachekit.metrics import register_prometheus, unregister_prometheus

    async def main() -> None:
        async with AsyncCache.from_url(url, namespace="m-" + uuid.uuid4().hex[:8], ttl=60) as c:
            registry = CollectorRegistry()
            register_prometheus(c, registry)  # type: ignore[arg-type]
            await c.get_or_load("k", lambda: asyncio.sleep(0, 1))
            await c.get("k")
            text = generate_latest(registry).decode()
            assert "cachekit_hits_total{backend=" in text or "cachekit_hits_total{" in text
            line = next(ln for ln in text.splitlines() if ln.startswith("cachekit_hits_total{"))
            assert line.endswith(" 1.0")
            unregister_prometheus(c, registry)  # type: ignore[arg-type]

    run(main())


def _unused(_: Callable[[], Awaitable[Any]]) -> None:  # keeps the typing imports honest
    return None
