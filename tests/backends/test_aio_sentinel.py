"""AsyncRedisSentinelBackend (``redis+sentinel://`` for AsyncCache) on private Sentinel groups.

Each group is a master, a replica and three Sentinels on free loopback ports,
started with ``tests/test_failover.py``'s helpers, never the shared servers.
Covered: the URL forms and checks shared with the sync driver, the commands,
an ``AsyncCache`` built from the URL, entries shared with a sync ``Cache``,
passwords, deadlines and errors, ``wait_replicas``, and a killed master.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends.aio import async_backend_from_url
from cachekit.backends.aio.sentinel import AsyncRedisSentinelBackend
from cachekit.backends.base import MISSING
from cachekit.errors import BackendUnavailableError, ConfigurationError
from tests.faultkit import StallServer, TrickleProxy, closed_port
from tests.test_failover import (
    SERVICE,
    RedisProcess,
    SentinelGroup,
    Timeline,
    _answers,
    _workdir,
    sentinel_group,
)

MASTER_PW = "am-Secret-3141"
SENTINEL_PW = "as-Secret-2718"


@pytest.fixture(scope="module")
def protected() -> Iterator[SentinelGroup]:
    """A Sentinel group whose master and Sentinels each have their own password."""
    with sentinel_group(password=MASTER_PW, sentinel_password=SENTINEL_PW) as group:
        yield group


def _url(group: SentinelGroup, master_pw: str = MASTER_PW, sentinel_pw: str = SENTINEL_PW) -> str:
    return (
        f"redis+sentinel://:{master_pw}@{group.hosts}/{SERVICE}/2?sentinel_password={sentinel_pw}"
    )


def run(url: str, body: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
    """``asyncio.run`` of ``body(backend)`` over a fresh async backend for ``url``, closed after."""

    async def main() -> Any:
        backend = async_backend_from_url(url, **options)
        try:
            return await body(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


# ---------------------------------------------------------------- URLs


def test_the_registry_serves_both_sentinel_schemes() -> None:
    for scheme in ("redis+sentinel", "rediss+sentinel"):
        backend = async_backend_from_url(f"{scheme}://s1/orders")
        assert isinstance(backend, AsyncRedisSentinelBackend)
        assert backend.server_address == f"{scheme}://s1:26379/orders/0"


def test_url_forms_and_defaults() -> None:
    url = (
        "redis+sentinel://app:pw%40x@s1,s2:26380,[::1]/orders/3"
        "?sentinel_password=spw&sentinel_username=watch&socket_timeout=0.2"
    )

    async def body(backend: Any) -> None:
        assert backend.service_name == "orders"
        assert backend.server_address == "redis+sentinel://s1:26379,s2:26380,[::1]:26379/orders/3"
        sentinel, master = backend._client()
        kw = master.connection_pool.connection_kwargs
        assert (kw["db"], kw["username"], kw["password"]) == (3, "app", "pw@x")
        # the command's Deadline is the only timeout, and redis-py never retries
        assert backend._timeout == 0.2 and kw["socket_timeout"] is None
        assert kw["retry"].get_retries() == 0
        assert len(sentinel.sentinels) == 3
        for node in sentinel.sentinels:
            skw = node.connection_pool.connection_kwargs
            assert (skw["username"], skw["password"]) == ("watch", "spw")
            # each Sentinel gets a share of the deadline: a hung one leaves time for the next
            assert skw["socket_timeout"] == pytest.approx(0.05) and skw["retry"].get_retries() == 0
        for text in (repr(backend), backend.server_address):
            assert "pw" not in text and "watch" not in text

    run(url, body)
    # keywords win over the query; db and the service as keywords work too
    other = AsyncRedisSentinelBackend.from_url(
        "redis+sentinel://s1/orders?db=4", db=4, service_name="orders"
    )
    assert other.server_address == "redis+sentinel://s1:26379/orders/4"


def test_rediss_sentinel_uses_tls_to_the_master_and_the_sentinels() -> None:
    from redis.asyncio import SSLConnection
    from redis.asyncio.sentinel import SentinelManagedSSLConnection

    async def body(backend: Any) -> None:
        sentinel, master = backend._client()
        assert master.connection_pool.connection_class is SentinelManagedSSLConnection
        assert master.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
        for node in sentinel.sentinels:
            assert node.connection_pool.connection_class is SSLConnection
            assert node.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"

    run("rediss+sentinel://s1,s2/orders?ssl_ca_certs=/ca.pem", body)
    with pytest.raises(ConfigurationError, match="asyncio driver"):
        AsyncRedisSentinelBackend.from_url("rediss+sentinel://s1/orders", ssl_validate_ocsp=True)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",  # no service
        "redis+sentinel://s1:26379/orders/1?db=2",  # two databases
        "redis+sentinel://s1:26379/orders/x",
        "redis+sentinel://s1:26379/orders/1/more",
        "redis+sentinel://s1:port/orders",
        "redis+sentinel://s1/orders?nonsense=1",
        "redis+sentinel://s1/orders?wait_replicas=-1",
        "redis+sentinel://s1/orders?wait_replicas=x",
        "redis+sentinel://s1/orders?sentinel_timeout=0",
        "redis+sentinel://s1/orders?retries=1",  # the asyncio drivers never retry
        "redis+sentinel://::1/orders",  # IPv6 needs brackets
        "redis+sentinel://s1/orders?ssl_ca_certs=/ca.pem",  # TLS options need rediss+sentinel
        "redis+cluster://s1/orders",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        AsyncRedisSentinelBackend.from_url(url)
    if not url.startswith("redis+cluster"):
        with pytest.raises(ConfigurationError):
            ck.AsyncCache.from_url(url)


def test_a_password_in_a_bad_url_is_never_shown() -> None:
    with pytest.raises(ConfigurationError) as info:
        ck.AsyncCache.from_url("redis+sentinel://:pw-Hidden-99@s1/orders?nonsense=1")
    assert "pw-Hidden-99" not in str(info.value)


# ---------------------------------------------------------------- commands and caches


def test_commands_go_to_the_master_from_every_loop(protected: SentinelGroup) -> None:
    backend = AsyncRedisSentinelBackend.from_url(_url(protected))
    key = "ck-asentinel-" + uuid.uuid4().hex

    async def first() -> int:
        await backend.set(key, b"v1", 60)
        assert await backend.get(key) == b"v1"
        assert await backend.add(key, b"v2", 60) is False
        assert await backend.compare_and_set(key, b"v1", b"v2", 60) is True
        assert await backend.compare_and_set(key, b"v1", b"v3", 60) is False
        await backend.set_many({key + "a": b"a", key + "b": b"b"}, 60)
        assert await backend.get_many([key, key + "a", key + "b", key + "c"]) == {
            key: b"v2",
            key + "a": b"a",
            key + "b": b"b",
        }
        assert set(await backend.server_stats()) >= {"hits", "misses", "evictions", "expired"}
        return int(await backend._client()[1].client_id())

    async def second() -> int:  # another loop: its own pool, the same master
        assert await backend.delete_many([key + "a", key + "b", key + "c"]) == 2
        assert await backend.delete(key) is True
        assert await backend.get(key) is MISSING
        client_id = int(await backend._client()[1].client_id())
        await backend.aclose()
        return client_id

    one = asyncio.run(first())
    with protected.master.client() as raw:
        raw.select(2)
        assert raw.get(key) == b"v2"
    assert asyncio.run(second()) != one


def test_an_async_cache_from_url_round_trips(protected: SentinelGroup) -> None:
    async def main() -> None:
        cache = ck.AsyncCache.from_url(_url(protected), namespace="as-" + uuid.uuid4().hex[:8])
        try:
            assert isinstance(cache.backend, AsyncRedisSentinelBackend)

            async def load() -> dict[str, int]:
                return {"v": 1}

            assert await cache.get_or_load("k", load) == {"v": 1}
            assert await cache.get("k") == {"v": 1}
            assert await cache.delete("k") is True
            assert cache.stats().errors == 0
        finally:
            await cache.aclose()

    asyncio.run(main())


def test_a_sync_and_an_async_cache_on_one_url_share_entries(protected: SentinelGroup) -> None:
    namespace = "as-" + uuid.uuid4().hex[:8]
    sync = ck.Cache.from_url(_url(protected), namespace=namespace)
    try:
        sync.set("from-sync", {"v": "sync"})

        async def main() -> None:
            acache = ck.AsyncCache.from_url(_url(protected), namespace=namespace)
            try:
                assert await acache.get("from-sync") == {"v": "sync"}
                await acache.set("from-async", [1, 2])
                await acache.delete("from-sync")
            finally:
                await acache.aclose()

        asyncio.run(main())
        assert sync.get("from-async") == [1, 2]
        assert sync.get("from-sync") is None  # the async delete is seen by the sync cache
    finally:
        sync.close()


# ---------------------------------------------------------------- errors and passwords


@pytest.mark.parametrize("wrong", ["master", "sentinel"])
def test_wrong_passwords_are_unavailable_and_never_shown(
    protected: SentinelGroup, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad_master, bad_sentinel = "bad-aMaster-1234", "bad-aSentinel-5678"
    url = (
        _url(protected, master_pw=bad_master)
        if wrong == "master"
        else _url(protected, sentinel_pw=bad_sentinel)
    )

    async def body(backend: Any) -> list[str]:
        with pytest.raises(BackendUnavailableError) as info:
            await backend.get("k")
        cache = ck.AsyncCache(backend, namespace="as-" + uuid.uuid4().hex[:8])
        assert await cache.get("k", "dflt") == "dflt"
        return [str(info.value), repr(info.value), repr(backend), repr(info.value.__cause__)]

    shown = [*run(url, body), caplog.text]
    for secret in (MASTER_PW, SENTINEL_PW, bad_master, bad_sentinel):
        for text in shown:
            assert secret not in text


def test_no_sentinel_answering_is_unavailable_and_the_cache_falls_open() -> None:
    with closed_port() as p1, closed_port() as p2:
        url = f"redis+sentinel://127.0.0.1:{p1},127.0.0.1:{p2}/{SERVICE}"

        async def body(backend: Any) -> None:
            with pytest.raises(BackendUnavailableError, match="MasterNotFoundError"):
                await backend.get("k")

        run(url, body)

        async def main() -> None:
            cache = ck.AsyncCache.from_url(url, namespace="as-" + uuid.uuid4().hex[:8])
            try:
                assert await cache.get("k", "dflt") == "dflt"

                async def load() -> int:
                    return 7

                assert await cache.get_or_load("k", load) == 7
                await cache.set("k", 1)
                assert cache.stats().errors > 0
            finally:
                await cache.aclose()

        asyncio.run(main())


def test_an_unknown_service_is_unavailable(protected: SentinelGroup) -> None:
    url = f"redis+sentinel://{protected.hosts}/no-such-service?sentinel_password={SENTINEL_PW}"

    async def body(backend: Any) -> None:
        with pytest.raises(BackendUnavailableError, match="no-such-service"):
            await backend.set("k", b"v", 10)

    run(url, body)


def test_a_hung_sentinel_costs_only_its_share_of_the_deadline(protected: SentinelGroup) -> None:
    with StallServer() as hung:
        url = (
            f"redis+sentinel://:{MASTER_PW}@127.0.0.1:{hung.port},{protected.hosts}/{SERVICE}/2"
            f"?sentinel_password={SENTINEL_PW}"
        )

        async def body(backend: Any) -> None:
            await backend.set("ck-ahung-sentinel", b"v", 10)  # asks the hung Sentinel first
            assert await backend.get("ck-ahung-sentinel") == b"v"

        run(url, body)


def test_trickling_sentinels_cannot_hold_a_command_past_its_deadline(
    protected: SentinelGroup,
) -> None:
    with contextlib.ExitStack() as stack:
        slow = [stack.enter_context(TrickleProxy(s.port)) for s in protected.sentinels]
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in slow)
        url = f"redis+sentinel://{hosts}/{SERVICE}?sentinel_password={SENTINEL_PW}"

        async def body(backend: Any) -> float:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                await backend.get("k")
            return time.monotonic() - started

        # a correctness bound (one 250 ms deadline, generously), not a speed figure
        assert run(url, body) < 0.6


def test_a_trickling_master_cannot_hold_a_command_past_its_deadline() -> None:
    with _workdir("ck-atrickle-") as work, contextlib.ExitStack() as stack:
        master = RedisProcess(work, "master", []).start()
        stack.callback(master.kill)
        slow = stack.enter_context(TrickleProxy(master.port))
        watcher = RedisProcess(work, "sentinel", ["--sentinel"])
        config = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {slow.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 60000\n"
        )
        watcher.start(config=config)
        stack.callback(watcher.kill)

        async def body(backend: Any) -> None:
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "get": lambda: backend.get("k"),
                "set": lambda: backend.set("k", b"v" * 100, 10),
                "get_many": lambda: backend.get_many(["a", "b"]),
                "set_many": lambda: backend.set_many({"a": b"1", "b": b"2"}, 10),
                "delete": lambda: backend.delete("k"),
                "compare_and_set": lambda: backend.compare_and_set("k", b"v", b"w", 10),
                "server_stats": backend.server_stats,
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(BackendUnavailableError):
                    await call()
                took = time.monotonic() - started
                # a correctness bound (one 250 ms deadline, generously), not a speed figure
                assert took < 0.6, f"{name} took {took:.2f} s"

        run(f"redis+sentinel://127.0.0.1:{watcher.port}/{SERVICE}", body)


def test_wait_replicas_needs_that_many_acknowledgements(protected: SentinelGroup) -> None:
    key = "ck-await-" + uuid.uuid4().hex

    async def enough(backend: Any) -> None:
        await backend.set(key, b"v", 30)  # the one replica acknowledges it
        await backend.set_many({key + "a": b"a"}, 30)
        assert await backend.get(key) == b"v"
        assert await backend.add(key, b"w", 30) is False  # SET NX: no WAIT
        assert await backend.delete_many([key, key + "a"]) == 2

    run(_url(protected) + "&wait_replicas=1", enough)

    async def too_many(backend: Any) -> None:
        with pytest.raises(BackendUnavailableError, match="1 of 2 replica"):
            await backend.set(key, b"v", 30)
        with pytest.raises(BackendUnavailableError, match="1 of 2 replica"):
            await backend.delete(key)

    run(_url(protected) + "&wait_replicas=2", too_many)


# ---------------------------------------------------------------- a killed master


async def _watch(
    cache: ck.AsyncCache, promoted: Callable[[], bool], timeout: float = 20.0
) -> dict[str, float]:
    """After a kill: seconds until the outage was seen, the replica promoted, the breaker closed."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    marks: dict[str, float] = {}
    hits = cache.stats().hits
    while loop.time() - start < timeout:
        now = loop.time() - start
        stats = cache.stats()
        if "first_error" not in marks and stats.errors:
            marks["first_error"] = now
        if "promoted" not in marks and await asyncio.to_thread(_answers, promoted):
            marks["promoted"] = now
        healthy = not cache.breaker.is_open and not cache.breaker.failures
        if "promoted" in marks and healthy and stats.hits > hits:
            marks["closed"] = now
            return marks
        hits = stats.hits
        await asyncio.sleep(0.05)
    pytest.fail(f"no recovery within {timeout} s after the kill: {marks}")


def test_master_killed_calls_fall_open_and_the_breaker_closes_on_the_new_master(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """8 tasks call ``get_or_load`` against a versioned "database" while one writes
    through the cache; the master is SIGKILLed. Nothing raises, each call is
    bounded, no call returns a value older than the last completed write, and
    the breaker closes on the promoted replica.
    """
    keys = [f"item:{i}" for i in range(8)]
    rows = dict.fromkeys(keys, 0)
    done = dict.fromkeys(keys, 0)
    seen = Timeline()

    async def main(group: SentinelGroup) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        cache = ck.AsyncCache.from_url(
            group.url, namespace="afo-" + uuid.uuid4().hex[:8], ttl=60, policy=ck.WriteThrough()
        )

        async def reader(seed: int) -> None:
            i = seed
            while not stop.is_set():
                i += 1
                key = keys[i % len(keys)]
                floor = done[key]

                async def load(key: str = key) -> int:
                    return rows[key]

                started = loop.time()
                try:
                    value = await cache.get_or_load(key, load)
                except BaseException as exc:
                    seen.raised.append(exc)
                    continue
                seen.calls += 1
                seen.slowest = max(seen.slowest, loop.time() - started)
                if value < floor:
                    seen.stale.append((key, value, floor))
                await asyncio.sleep(0.002)

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                key = keys[i % len(keys)]

                async def commit(key: str = key) -> int:
                    rows[key] += 1
                    return rows[key]

                try:
                    version = await cache.write(key, commit)
                except BaseException as exc:
                    seen.raised.append(exc)
                    continue
                done[key] = max(done[key], version)
                seen.writes += 1
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(reader(i)) for i in range(8)]
        tasks.append(asyncio.create_task(writer()))
        try:
            while seen.calls < 200:
                await asyncio.sleep(0.02)
            assert not cache.stats().errors
            old = group.master.port
            await asyncio.to_thread(group.master.kill)
            marks = await _watch(cache, lambda: group.master_port() != old)
            await asyncio.sleep(1.0)  # keep going on the new master
            stop.set()
            await asyncio.gather(*tasks)
            assert await asyncio.to_thread(group.master_port) == group.replica.port
            with group.replica.client() as raw:  # written after the failover
                assert raw.exists(await cache.full_key(keys[0]))
            marks["reset_timeout"] = cache.breaker.reset_timeout
            return marks
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await cache.aclose()

    with sentinel_group() as group:
        marks = asyncio.run(main(group))
    assert seen.raised == [], seen.raised[:3]
    assert seen.stale == [], f"{len(seen.stale)} stale answers, e.g. {seen.stale[:3]}"
    assert seen.calls > 100 and seen.writes > 20
    # a correctness bound (several 250 ms deadlines), not a speed figure
    assert seen.slowest < 2.0, f"one call took {seen.slowest:.2f} s"
    assert marks["first_error"] < marks["promoted"] <= marks["closed"]
    # the breaker's next probe after the promotion closes it
    assert marks["closed"] - marks["promoted"] < marks["reset_timeout"] + 1.0
    with capsys.disabled():
        print(
            f"\nasync sentinel failover (s after SIGKILL): {marks}; slowest call "
            f"{seen.slowest:.3f} s; {seen.calls} calls"
        )
