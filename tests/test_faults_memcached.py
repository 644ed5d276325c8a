"""Cache over MemcachedBackend when memcached dies, refuses or stalls: bounded time, no raise."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from pymemcache.client.base import PooledClient

import cachekit as ck
from cachekit.backends.memcached import MemcachedBackend, memcached_key
from tests.faultkit import ServerProcess, StallServer, closed_port

pytestmark = pytest.mark.memcached


def _cache(port: int, namespace: str | None = None, **options: object) -> ck.Cache:
    backend = MemcachedBackend([("127.0.0.1", port)])
    namespace = namespace or "f-" + uuid.uuid4().hex[:8]
    return ck.Cache(backend, namespace=namespace, ttl=60, **options)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess("memcached") as proc:
        yield proc


def _fast_breaker() -> ck.CircuitBreaker:
    return ck.CircuitBreaker(3, reset_timeout=0.2)


def test_killed_server_falls_open_and_recovers_on_restart(server: ServerProcess) -> None:
    cache = _cache(server.port, breaker=_fast_breaker())
    try:
        cache.set("k", {"v": 1})
        assert cache.get("k") == {"v": 1}

        server.kill()
        for _ in range(20):
            assert cache.get("k", "default") == "default"  # no exception reaches the caller
        cache.set("k2", "x")
        assert cache.delete("k") is False
        assert cache.get_or_load("k3", lambda: "loaded") == "loaded"
        assert cache.get_many(["k", "k2"]) == {}
        stats = cache.stats()
        assert stats.errors >= 1

        server.start()  # same port
        deadline = time.monotonic() + 5
        while True:
            cache.set("k", {"v": 2})
            if cache.get("k") == {"v": 2}:
                break
            assert time.monotonic() < deadline, "hits did not resume within 5 s"
            time.sleep(0.05)
        hits = cache.stats().hits
        assert cache.get("k") == {"v": 2}
        assert cache.stats().hits == hits + 1
        assert not cache.stats().circuit_open
    finally:
        cache.close()


def test_closed_port_costs_little_after_the_first_call() -> None:
    with closed_port() as port:
        cache = _cache(port)
        try:
            assert cache.get("k", "d") == "d"  # the first call pays the refusal
            started = time.perf_counter()
            for i in range(100):
                assert cache.get(f"k{i}", "d") == "d"
                cache.set(f"k{i}", i)
            elapsed = time.perf_counter() - started
            assert elapsed < 200 * 0.005, f"{elapsed:.3f} s for 200 calls"
            assert cache.stats().errors >= 1
        finally:
            cache.close()


def test_stalled_server_is_bounded_and_opens_the_breaker() -> None:
    with StallServer() as stall:
        cache = _cache(stall.port)  # default timeouts (0.25 s) and breaker
        try:
            started = time.perf_counter()
            assert cache.get("k", "d") == "d"
            assert time.perf_counter() - started < 1.0

            started = time.perf_counter()
            for _ in range(50):
                assert cache.get("k", "d") == "d"
            elapsed = time.perf_counter() - started
            assert elapsed < 2.0, f"50 calls took {elapsed:.2f} s"
            assert cache.stats().circuit_open
            assert cache.breaker.is_open
            assert cache.get_or_load("k", lambda: "from source") == "from source"
        finally:
            cache.close()


def test_stalled_server_in_strict_mode_raises() -> None:
    with StallServer() as stall:
        cache = _cache(stall.port, fail_open=False)
        try:
            started = time.perf_counter()
            with pytest.raises(ck.BackendUnavailableError):
                cache.get("k")
            assert time.perf_counter() - started < 1.0
            for _ in range(5):  # timeouts, then the open breaker: all raise
                with pytest.raises(ck.BackendUnavailableError):
                    cache.get("k")
            assert cache.breaker.is_open
        finally:
            cache.close()


def test_invalidation_during_an_outage_is_not_lost(server: ServerProcess) -> None:
    """A delete that could not be sent is replayed: the old value is not served after recovery.

    A killed memcached comes back empty, which would hide a lost delete; so the
    server's state from before the outage is put back, as if the outage had
    been a network partition that left the data in place.
    """
    cache = _cache(server.port, breaker=_fast_breaker())
    raw = PooledClient(
        ("127.0.0.1", server.port), connect_timeout=1, timeout=1, default_noreply=False
    )
    try:
        cache.set("user:1", "old name")
        assert cache.get("user:1") == "old name"
        keys = [memcached_key(cache.full_key("user:1")), memcached_key(cache._version_key)]
        before = raw.get_many(keys)
        assert len(before) == 2

        server.kill()
        raw.close()
        assert cache.delete("user:1") is False  # could not reach the server

        server.start()
        assert raw.set_many(before, 0) == []  # the server "kept" the entry and namespace version
        other = _cache(server.port, namespace=cache.namespace)
        try:
            # control: a process that saw no outage would read the old entry
            assert other.get("user:1") == "old name"
            time.sleep(0.25)  # past the breaker's reset timeout
            assert cache.get("user:1") is None
            assert cache.get("user:1") is None
            assert raw.get(keys[0]) is None  # the delete really reached the server
            assert other.get("user:1") is None
        finally:
            other.close()
    finally:
        raw.close()
        cache.close()
