"""``cache_if``: a loaded or written value is always returned, stored only if it passes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import cachekit as ck
from cachekit.aio import AsyncCache


def _ns() -> str:
    return "ci-" + uuid.uuid4().hex[:8]


@pytest.mark.parametrize("kind", ["memory", "redis", "memcached"])
def test_get_or_load_stores_only_what_the_predicate_accepts(
    kind: str, make_backend: Callable[..., ck.Backend]
) -> None:
    cache = ck.Cache(make_backend(kind), namespace=_ns(), ttl=60)
    loads: list[int] = []

    def loader(v: Any) -> Callable[[], Any]:
        def load() -> Any:
            loads.append(1)
            return v

        return load

    not_none: Callable[[Any], bool] = lambda v: v is not None  # noqa: E731
    assert cache.get_or_load("a", loader(None), cache_if=not_none) is None
    assert cache.get_or_load("a", loader(None), cache_if=not_none) is None
    assert len(loads) == 2  # None was never stored: the second call loaded again
    assert cache.get_or_load("b", loader(5), cache_if=not_none) == 5
    assert cache.get_or_load("b", loader(6), cache_if=not_none) == 5  # stored
    assert len(loads) == 3
    assert cache.get_many_or_load(
        ["c", "d"], lambda ks: {"c": None, "d": 1}, cache_if=not_none
    ) == {
        "c": None,
        "d": 1,
    }
    assert cache.get("c", "absent") == "absent" and cache.get("d") == 1


def test_a_refused_value_leaves_no_lease_behind(redis_url: str) -> None:
    ns = _ns()
    cache = ck.Cache.from_url(redis_url, namespace=ns, ttl=60)
    other = ck.Cache.from_url(redis_url, namespace=ns, ttl=60, lease_wait=5)
    try:
        cache.get_or_load("k", lambda: None, cache_if=lambda v: v is not None)
        assert other.get_or_load("k", lambda: 1) == 1  # no wait on a lease nobody holds
        assert cache.get("k") == 1
    finally:
        cache.close()
        other.close()


def test_decorators_take_cache_if() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace=_ns(), ttl=60, policy=ck.WriteThrough())
    db: dict[int, str | None] = {1: None}
    calls = 0

    @cache.cached(key="u:{uid}", cache_if=lambda v: v is not None)
    def get_user(uid: int) -> str | None:
        nonlocal calls
        calls += 1
        return db[uid]

    @cache.writes(key="u:{uid}", cache_if=lambda v: v != "secret")
    def save_user(uid: int, name: str) -> str:
        db[uid] = name
        return name

    assert get_user(1) is None and get_user(1) is None and calls == 2
    save_user(1, "ann")
    assert get_user(1) == "ann" and calls == 2  # written through
    save_user(1, "secret")
    assert cache.get("u:1") is None  # not stored: invalidated instead (never the old "ann")
    assert get_user(1) == "secret" and calls == 3
    assert get_user.refresh(1) == "secret"


def test_async_cache_if() -> None:
    async def main() -> None:
        async with AsyncCache.from_url("memory://", namespace=_ns(), ttl=60) as c:
            calls = 0

            @c.cached(cache_if=lambda v: v > 0)
            async def f(x: int) -> int:
                nonlocal calls
                calls += 1
                return x

            assert await f(0) == 0 and await f(0) == 0 and calls == 2
            assert await f(3) == 3 and await f(3) == 3 and calls == 3
            got = await c.get_or_load("k", lambda: asyncio.sleep(0, None), cache_if=bool)
            assert got is None and not await c.contains("k")

    asyncio.run(main())
