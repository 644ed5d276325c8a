"""Sync and async drivers on one server read each other's entries byte for byte, and leases.

Parametrized over every backend kind (``backend_kind``); memory shares one
``MemoryBackend`` object between the two drivers, the remote kinds share the
server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends.aio import async_backend_from_url
from cachekit.backends.aio.memcached import AsyncMemcachedBackend
from cachekit.backends.aio.memory import AsyncMemoryBackend
from cachekit.backends.base import MISSING, AsyncBackend
from cachekit.backends.memcached import MemcachedBackend
from tests.backends.test_conformance import ODD_KEYS
from tests.conftest import _url_for

MakeBackend = Callable[..., ck.Backend]
Body = Callable[[ck.Backend, Any], Awaitable[None]]

PAYLOADS = [
    b"",
    b"plain",
    b"\x00\r\nEND\r\n\xff" * 10,
    bytes(range(256)),
    "é".encode(),
    b"x" * 70_000,
]


@pytest.fixture
def pair(
    backend_kind: str, make_backend: MakeBackend, request: pytest.FixtureRequest
) -> Callable[[Body], None]:
    """``pair(body)``: run ``await body(sync_backend, async_backend)`` on one store, then close."""
    sync = make_backend(backend_kind)

    def run(body: Body) -> None:
        async def main() -> None:
            if backend_kind == "memory":
                assert isinstance(sync, ck.MemoryBackend)
                aio: AsyncBackend = AsyncMemoryBackend(sync)
            else:
                aio = async_backend_from_url(_url_for(backend_kind, request))
            try:
                await body(sync, aio)
            finally:
                await aio.aclose()

        asyncio.run(main())

    return run


def test_sync_writes_async_reads(pair: Callable[[Body], None], namespace: str) -> None:
    async def body(sync: ck.Backend, aio: Any) -> None:
        keys = [f"{namespace}:{i}" for i in range(len(PAYLOADS))]
        sync.set_many(dict(zip(keys, PAYLOADS, strict=True)), 60)
        for key, data in zip(keys, PAYLOADS, strict=True):
            assert await aio.get(key) == data
        assert await aio.get_many(keys) == dict(zip(keys, PAYLOADS, strict=True))
        sync.set(f"{namespace}:one", b"1", None)
        assert await aio.get(f"{namespace}:one") == b"1"
        assert await aio.delete(f"{namespace}:one") is True
        assert sync.get(f"{namespace}:one") is MISSING

    pair(body)


def test_async_writes_sync_reads(pair: Callable[[Body], None], namespace: str) -> None:
    async def body(sync: ck.Backend, aio: Any) -> None:
        keys = [f"{namespace}:{i}" for i in range(len(PAYLOADS))]
        for key, data in zip(keys, PAYLOADS, strict=True):
            await aio.set(key, data, 60)
        for key, data in zip(keys, PAYLOADS, strict=True):
            assert sync.get(key) == data
        await aio.set_many({k: b"many" for k in keys}, 60)
        assert sync.get_many(keys) == dict.fromkeys(keys, b"many")
        assert await aio.add(keys[0], b"no", 60) is False
        assert sync.delete(keys[0]) is True
        assert await aio.add(keys[0], b"yes", 60) is True
        assert sync.get(keys[0]) == b"yes"
        await aio.set(keys[0], b"gone", 0)  # ttl <= 0: the entry goes at once, for both
        assert sync.get(keys[0]) is MISSING
        assert await aio.delete_many(keys) in (len(keys) - 1, 0)
        assert sync.get_many(keys) == {}

    pair(body)


def test_odd_keys_land_on_the_same_entries(pair: Callable[[Body], None], namespace: str) -> None:
    async def body(sync: ck.Backend, aio: Any) -> None:
        keys = [f"{namespace}:{k}" for k in ODD_KEYS]
        for i, key in enumerate(keys[::2]):
            sync.set(key, str(i).encode(), 60)
        for i, key in enumerate(keys[1::2]):
            await aio.set(key, str(i).encode(), 60)
        for i, key in enumerate(keys[::2]):
            assert await aio.get(key) == str(i).encode(), repr(key)
        for i, key in enumerate(keys[1::2]):
            assert sync.get(key) == str(i).encode(), repr(key)
        assert await aio.get_many(keys) == sync.get_many(keys)

    pair(body)


def test_leases_written_by_one_driver_are_compared_by_the_other(
    pair: Callable[[Body], None], namespace: str
) -> None:
    async def body(sync: Any, aio: Any) -> None:
        key = f"{namespace}:lease"
        sync.set(key, b"token-sync", 60)
        assert await aio.compare_and_set(key, b"other", b"v", 60) is False
        assert await aio.compare_and_set(key, b"token-sync", b"value-async", 60) is True
        assert sync.get(key) == b"value-async"
        await aio.set(key, b"token-async", 60)
        assert sync.compare_and_set(key, b"token-sync", b"v", 60) is False
        assert sync.compare_and_set(key, b"token-async", b"value-sync", 60) is True
        assert await aio.get(key) == b"value-sync"
        # a compare-and-set that expires the entry at once removes it for both
        assert await aio.compare_and_set(key, b"value-sync", b"x", 0) is True
        assert sync.get(key) is MISSING

    pair(body)


def test_memcached_pool_places_keys_on_the_sync_ring(memcached_pool_url: str) -> None:
    sync = MemcachedBackend.from_url(memcached_pool_url)
    aio = AsyncMemcachedBackend.from_url(memcached_pool_url)
    try:
        assert aio.nodes == sync.nodes
        keys = [f"k{i}" for i in range(2000)] + ODD_KEYS
        assert [aio.node_for(k) for k in keys] == [sync.node_for(k) for k in keys]
        assert len({aio.node_for(k) for k in keys}) == 3
    finally:
        sync.close()
