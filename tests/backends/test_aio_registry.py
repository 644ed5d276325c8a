"""The async registry (schemes, lazy imports, missing drivers, plug-ins) and the memory driver."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends.aio import async_backend_from_url, register_async_backend
from cachekit.backends.aio.memory import AsyncMemoryBackend
from cachekit.backends.base import (
    MISSING,
    AsyncBackend,
    SupportsCompareAndSet,
    SupportsDropPrefix,
    SupportsEvictionCounts,
)
from tests.conftest import FakeClock


def test_unknown_and_missing_schemes_are_configuration_errors() -> None:
    with pytest.raises(ck.ConfigurationError, match="known: memcached, memory"):
        async_backend_from_url("mongodb://127.0.0.1")
    with pytest.raises(ck.ConfigurationError, match="no scheme"):
        async_backend_from_url("127.0.0.1:6379")
    secret = "pw-in-a-bad-url"
    with pytest.raises(ck.ConfigurationError) as info:
        async_backend_from_url(f"redis://user:{secret}@[::1/0")
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("url", "blocked", "driver_module", "extra"),
    [
        ("redis://127.0.0.1:6379/0", "redis.asyncio", "cachekit.backends.aio.redis", "redis"),
        ("redis+cluster://127.0.0.1:7000", "redis", "cachekit.backends.aio.redis", "redis"),
        (
            "memcached://127.0.0.1:11211",
            "pymemcache",
            "cachekit.backends.aio.memcached",
            "memcached",
        ),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, blocked: str, driver_module: str, extra: str
) -> None:
    for name in list(sys.modules):
        if name == blocked or name.startswith(blocked + "."):
            monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, blocked, None)
    monkeypatch.delitem(sys.modules, driver_module, raising=False)
    with pytest.raises(ck.ConfigurationError, match=rf"pip install 'cachekit-py\[{extra}\]'"):
        async_backend_from_url(url)


def test_drivers_are_imported_only_when_first_used() -> None:
    import subprocess

    code = (
        "import sys, cachekit.backends.aio as a;"
        "a.async_backend_from_url('memory://');"
        "print(sorted(m for m in sys.modules if m.startswith(('redis', 'pymemcache.client.base'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _Dummy(AsyncBackend):
    schemes = ("dummy",)

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    def from_url(cls, url: str, **options: Any) -> _Dummy:
        return cls(url)

    async def get(self, key: str) -> Any:
        return MISSING

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        return None

    async def add(self, key: str, value: Any, ttl: float | None) -> bool:
        return True

    async def delete(self, key: str) -> bool:
        return False


def test_third_party_backends_can_be_registered() -> None:
    register_async_backend("dummy", _Dummy)
    backend = async_backend_from_url("dummy://x")
    assert isinstance(backend, _Dummy) and backend.url == "dummy://x"
    register_async_backend("dummy2", f"{__name__}:_Dummy")
    assert isinstance(async_backend_from_url("dummy2://y"), _Dummy)
    with pytest.raises(ck.ConfigurationError):
        register_async_backend("bad", dict)  # type: ignore[arg-type]
    register_async_backend("bad", "cachekit.backends.memory:MemoryBackend")  # a sync class
    with pytest.raises(ck.ConfigurationError, match="not a cachekit AsyncBackend"):
        async_backend_from_url("bad://")


# ---------------------------------------------------------------- memory


def test_memory_driver_shares_the_store_of_its_memory_backend(namespace: str) -> None:
    clock = FakeClock()
    store = ck.MemoryBackend(maxsize=2, timer=clock)
    cache = ck.Cache(store, namespace=namespace)
    aio = AsyncMemoryBackend(store)
    value = {"not": "copied"}

    async def body() -> None:
        await aio.set("a", value, 10)
        assert await aio.get("a") is value  # the object itself: no serialization, no copy
        assert store.get("a") is value
        cache.set("k", 1)
        full = next(k for k in store._mirror if k.endswith("k"))
        assert await aio.get(full) == 1
        assert await aio.add("b", 2, 1) is True  # the third entry evicts one for room
        assert aio.eviction_counts() == (1, 0)
        clock.advance(2)
        assert await aio.get("b") is MISSING
        assert aio.eviction_counts() == (1, 1)
        assert aio.drop_prefix("a") in (0, 1)
        assert await aio.get("a") is MISSING

    asyncio.run(body())
    assert aio.local is True and aio.max_value_size is None
    assert isinstance(aio, SupportsEvictionCounts) and isinstance(aio, SupportsDropPrefix)
    assert isinstance(aio, SupportsCompareAndSet)


def test_memory_url_options_reach_the_store() -> None:
    aio = async_backend_from_url("memory://?maxsize=7&policy=tinylfu&max_value_size=100")
    assert isinstance(aio, AsyncMemoryBackend)
    assert aio.backend.maxsize == 7 and aio.backend.policy == "tinylfu"
    assert aio.max_value_size == 100
    with pytest.raises(ck.ConfigurationError):
        async_backend_from_url("memory://?bogus=1")

    async def body() -> None:
        with pytest.raises(ck.ValueTooLargeError):
            await aio.set("k", b"x" * 101, None)
        await aio.aclose()

    asyncio.run(body())
