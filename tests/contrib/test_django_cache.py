"""``cachekit.contrib.django.CachekitCache``: Django's own cache tests, then what they do not cover.

Django's ``BaseCacheTests`` (vendored from Django 5.2.19 under ``django_suite/``)
runs against the backend on memory, Redis and Memcached, the way Django runs it
against its own backends: a subclass with ``override_settings(CACHES=...)``.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import sys
import threading
import time
import types
import unittest
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

django = pytest.importorskip("django")  # an optional integration: the dev extra installs it

from django.conf import settings  # noqa: E402

SUITE = os.path.join(os.path.dirname(__file__), "django_suite")
if SUITE not in sys.path:
    sys.path.insert(0, SUITE)  # the vendored app imports as ``cache``, as in Django's runner

if not settings.configured:
    settings.configure(
        SECRET_KEY="cachekit-tests-only-not-a-secret",
        INSTALLED_APPS=["cache"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        ALLOWED_HOSTS=["testserver"],
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", run_syncdb=True, verbosity=0)  # the suite's Poll table

from cache.tests import BaseCacheTests, caches_setting_for_tests  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import TestCase, override_settings  # noqa: E402

import cachekit as ck  # noqa: E402
from cachekit.contrib.django import (  # noqa: E402
    CachekitCache,
    UnserializableValueError,
    close_shared_caches,
)
from tests.conftest import MEMCACHED_URL, REDIS_URL  # noqa: E402

BACKEND = "cachekit.contrib.django.CachekitCache"
RUN = uuid.uuid4().hex[:10]  # one namespace per run: the servers are shared

#: Django tests that do not apply to CachekitCache, and why (docs/django.md lists them too).
NOT_APPLICABLE = {
    "test_cull": "culling (MAX_ENTRIES/CULL_FREQUENCY) is the locmem/db/file backends' scheme; "
    "cachekit bounds size in the store (memory://?maxsize=N, maxmemory, memcached -m)",
    "test_zero_cull": "as test_cull",
    "test_cull_delete_when_store_empty": "as test_cull",
}


ASYNC_DRIVEN = "cachekit_async_driven.AsyncDrivenCachekitCache"


class FakeWallClock:
    """Wall-clock time that only moves when the suite sleeps (memory:// runs without waiting)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


#: One clock for the memory store's expiry, the entries' expiry and the suite's time.sleep.
CLOCK = FakeWallClock()


def django_caches(
    location: str, kind: str, backend: str = BACKEND, **options: Any
) -> dict[str, Any]:
    """Django's test CACHES (default, prefix, v2, custom_key...) over one cachekit store."""
    return caches_setting_for_tests(
        BACKEND=backend,
        LOCATION=location,
        OPTIONS={"namespace": f"dj-{kind}-{RUN}", **options},
        exclude={"cull", "zero_cull"},
    )


class FakeTime:
    """Mixin: the suite's ``time.sleep`` moves ``CLOCK`` instead of waiting."""

    def setUp(self) -> None:
        import cache.tests as suite

        import cachekit.contrib.django as backend

        fake = types.SimpleNamespace(time=CLOCK.time, sleep=CLOCK.sleep)
        for module in (suite, backend):
            patcher = mock.patch.object(module, "time", fake)
            patcher.start()
            self.addCleanup(patcher.stop)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


#: Django tests that do not apply to the ``a*`` methods (run inside an event loop), and why.
NOT_APPLICABLE_ASYNC = {
    **NOT_APPLICABLE,
    "test_cache_write_for_model_instance_with_deferred": "pickling an unevaluated QuerySet runs "
    "its query, which Django forbids inside an event loop (SynchronousOnlyOperation)",
    "test_cache_read_for_model_instance_with_deferred": "as "
    "test_cache_write_for_model_instance_with_deferred",
}


def not_applicable(cls: type) -> type:
    """Skip, by name and with the reason, the Django tests that do not apply."""
    skips = NOT_APPLICABLE_ASYNC if "Async" in cls.__name__ else NOT_APPLICABLE
    for name, reason in skips.items():

        def skipped(self: Any, reason: str = reason) -> None:
            raise unittest.SkipTest(reason)

        setattr(cls, name, skipped)
    return cls


@pytest.fixture(scope="module", autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    close_shared_caches()


@not_applicable
@override_settings(CACHES=django_caches("memory://", "memory", timer=CLOCK))
class CachekitMemoryDjangoTests(FakeTime, BaseCacheTests, TestCase):
    """Django's cache suite on ``memory://`` (its sleeps move a fake clock)."""


@not_applicable
@override_settings(CACHES=django_caches("memory://", "memory-async", ASYNC_DRIVEN, timer=CLOCK))
class CachekitMemoryAsyncDjangoTests(FakeTime, BaseCacheTests, TestCase):
    """Django's cache suite on ``memory://`` through the ``a*`` methods."""


@not_applicable
@pytest.mark.redis
@pytest.mark.usefixtures("redis_url")
@override_settings(CACHES=django_caches(REDIS_URL, "redis"))
class CachekitRedisDjangoTests(BaseCacheTests, TestCase):
    """Django's cache suite on Redis."""


@not_applicable
@pytest.mark.redis
@pytest.mark.usefixtures("redis_url")
@override_settings(CACHES=django_caches(REDIS_URL, "redis-async", ASYNC_DRIVEN))
class CachekitRedisAsyncDjangoTests(BaseCacheTests, TestCase):
    """Django's cache suite on Redis through the ``a*`` methods (a fresh event loop per call)."""


@not_applicable
@pytest.mark.memcached
@pytest.mark.usefixtures("memcached_url")
@override_settings(CACHES=django_caches(MEMCACHED_URL, "memcached"))
class CachekitMemcachedDjangoTests(BaseCacheTests, TestCase):
    """Django's cache suite on Memcached."""


# ---------------------------------------------------------------- beyond Django's suite

#: Backend kind -> the conftest fixture giving its URL (Django's suite runs on the first three).
KINDS = {
    "memory": None,
    "redis": "redis_url",
    "memcached": "memcached_url",
    "redis-cluster": "redis_cluster_url",
    "memcached-pool": "memcached_pool_url",
}


@pytest.fixture(params=list(KINDS))
def location(request: pytest.FixtureRequest) -> str:
    """A cachekit URL per backend kind (the servers are required, never skipped)."""
    fixture = KINDS[request.param]
    return "memory://" if fixture is None else str(request.getfixturevalue(fixture))


def make(location: str, namespace: str, **options: Any) -> CachekitCache:
    """A backend as Django's cache handler builds it."""
    return CachekitCache(location, {"OPTIONS": {"namespace": namespace, **options}})


def test_incr_keeps_the_entry_expiry(location: str, namespace: str) -> None:
    cache = make(location, namespace)
    cache.set("n", 1, timeout=100)
    made = cache.make_key("n")
    expires_at = cache.cachekit.get(made)[0]
    assert cache.incr("n", 5) == 6
    assert cache.decr("n") == 5
    assert cache.cachekit.get(made) == (expires_at, 5)  # Django's base incr resets it to 300 s
    assert cache.touch("n", 1000) is True
    assert cache.cachekit.get(made)[0] == pytest.approx(time.time() + 1000, abs=5)


def test_incr_keeps_the_server_ttl_on_redis(redis_url: str, namespace: str) -> None:
    import redis

    cache = make(redis_url, namespace)
    cache.set("n", 1, timeout=100)
    full = cache.cachekit.full_key(cache.make_key("n"))
    client = redis.Redis.from_url(redis_url)
    try:
        assert 0 < client.pttl(full) <= 100_000
        cache.incr("n")
        assert 0 < client.pttl(full) <= 100_000  # not the default TIMEOUT of 300 s
        cache.set("forever", 1, timeout=None)
        cache.incr("forever")
        assert client.pttl(cache.cachekit.full_key(cache.make_key("forever"))) == -1
    finally:
        client.close()


def test_incr_is_atomic_across_threads(location: str, namespace: str) -> None:
    cache = make(location, namespace)
    cache.set("hits", 0, timeout=None)
    threads, rounds = 6, 40

    def bump() -> None:
        for _ in range(rounds):
            cache.incr("hits")

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert cache.get("hits") == threads * rounds  # a get + set incr loses updates here


def test_async_api_uses_asynccache_not_threads(
    location: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import django.core.cache.backends.base as base

    def no_threads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sync_to_async used")

    monkeypatch.setattr(base, "sync_to_async", no_threads)
    cache = make(location, namespace)
    main_thread = threading.get_ident()

    async def scenario() -> None:
        await cache.aset("a", {"x": 1})
        assert threading.get_ident() == main_thread
        assert await cache.aget("a") == {"x": 1}
        assert await cache.aget("missing", "dflt") == "dflt"
        assert await cache.aadd("a", 2) is False
        assert await cache.aadd("b", 2, timeout=None) is True
        assert await cache.aset_many({"c": 3, "d": None}) == []
        assert await cache.aget_many(["a", "b", "c", "d", "e"]) == {
            "a": {"x": 1},
            "b": 2,
            "c": 3,
            "d": None,
        }
        assert await cache.ahas_key("d") is True
        assert await cache.aincr("b", 10) == 12
        assert await cache.adecr("b") == 11
        with pytest.raises(ValueError):
            await cache.aincr("nope")
        assert await cache.atouch("b", 50) is True
        assert await cache.atouch("nope") is False
        assert await cache.aincr_version("c") == 2
        assert await cache.aget("c", version=2) == 3
        assert await cache.aget("c") is None
        assert await cache.adecr_version("c", version=2) == 1
        assert await cache.aget_or_set("f", lambda: "made") == "made"
        assert await cache.adelete("f") is True
        await cache.adelete_many(["a", "b"])
        assert await cache.aget_many(["a", "b"]) == {}
        await cache.aset("z", 1, timeout=0)
        assert await cache.ahas_key("z") is False
        await cache.aclear()
        assert await cache.aget("d", "gone") == "gone"

    asyncio.run(scenario())
    asyncio.run(scenario())  # a second event loop gets its own AsyncCache


def test_sync_and_async_calls_share_entries(location: str, namespace: str) -> None:
    cache = make(location, namespace)
    cache.set("k", [1, 2], timeout=60)

    async def scenario() -> None:
        assert await cache.aget("k") == [1, 2]
        await cache.aset("j", "from async")
        assert await cache.aincr_version("k") == 2

    asyncio.run(scenario())
    assert cache.get("j") == "from async"
    assert cache.get("k", version=2) == [1, 2]


def test_aincr_is_atomic_across_tasks(location: str, namespace: str) -> None:
    cache = make(location, namespace)
    cache.set("hits", 0)

    async def scenario() -> None:
        async def bump() -> None:
            for _ in range(20):
                await cache.aincr("hits")

        await asyncio.gather(*(bump() for _ in range(10)))

    asyncio.run(scenario())
    assert cache.get("hits") == 200


def test_backend_down_falls_open_or_raises(namespace: str) -> None:
    from tests.faultkit import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    cache = make(url, namespace)
    assert cache.get("k", "dflt") == "dflt"
    cache.set("k", 1)  # nothing stored, nothing raised
    assert cache.add("k", 1) is False
    assert cache.set_many({"a": 1, "b": 2}) == ["a", "b"]  # every key failed
    assert cache.delete("k") is False
    assert cache.touch("k") is False
    with pytest.raises(ck.BackendUnavailableError):
        cache.incr("k")  # no value to make up

    strict = make(url, namespace, fail_open=False)
    with pytest.raises(ck.BackendUnavailableError):
        strict.get("k")
    with pytest.raises(ck.BackendUnavailableError):
        strict.set_many({"a": 1})

    async def scenario() -> None:
        assert await cache.aget("k", "dflt") == "dflt"
        assert await cache.aset_many({"a": 1}) == ["a"]
        with pytest.raises(ck.BackendUnavailableError):
            await strict.aget("k")

    asyncio.run(scenario())


def test_too_large_values_drop_the_old_entry(memcached_url: str, namespace: str) -> None:
    cache = make(memcached_url, namespace)
    big = os.urandom(2 * 1024 * 1024)  # over memcached's 1 MiB item limit
    cache.set("k", "old")
    cache.set("k", big)  # as Django's memcached backends: no error, the old value is gone
    assert cache.get("k") is None
    assert cache.add("k", big) is False
    assert cache.set_many({"small": 1, "big": big}) == ["big"]
    assert cache.get_many(["small", "big"]) == {"small": 1}

    async def scenario() -> None:
        await cache.aset("k", "old")
        await cache.aset("k", big)
        assert await cache.aget("k") is None
        assert await cache.aset_many({"small": 2, "big": big}) == ["big"]

    asyncio.run(scenario())


def test_unpicklable_values_raise_a_typed_pickle_error(location: str, namespace: str) -> None:
    cache = make(location, namespace)
    lock = threading.Lock()
    for call in (lambda: cache.set("k", lock), lambda: cache.add("k", lock)):
        with pytest.raises(UnserializableValueError) as info:
            call()
        assert isinstance(info.value, pickle.PicklingError)
        assert isinstance(info.value, ck.SerializationError)


def test_json_serializer(location: str, namespace: str) -> None:
    cache = make(location, namespace, serializer="json")
    cache.set("k", {"a": [1, 2]})
    assert cache.get("k") == {"a": [1, 2]}
    assert cache.add("n", 1) is True
    assert cache.incr("n") == 2
    with pytest.raises(UnserializableValueError):
        cache.set("k", object())


def test_entries_are_signed_with_the_pickle_key(location: str, namespace: str) -> None:
    ours = make(location, namespace)  # key derived from SECRET_KEY
    ours.set("k", "v")
    other = make(location, namespace, pickle_key="another-key-of-16-bytes-or-more")
    assert other.get("k") is None  # a foreign signature reads as a miss, never unpickled
    assert ours.get("k") == "v"


def test_configuration_errors(namespace: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="maxsize"):
        make("memory://", namespace, MAX_ENTRIES=10)
    with pytest.raises(ImproperlyConfigured, match="serializer"):
        make("memory://", namespace, serializer="yaml")
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        CachekitCache(["memcached://a", "memcached://b"], {})  # type: ignore[arg-type]


def test_backends_with_one_location_share_one_cachekit_cache(namespace: str) -> None:
    a, b = make("memory://", namespace), make("memory://", namespace)
    assert a.cachekit is b.cachekit  # one pool per process, not one per thread
    assert make("memory://", namespace + "x").cachekit is not a.cachekit
    assert make("memory://", namespace, pickle_key="k" * 16).cachekit is not a.cachekit


def test_timeouts(location: str, namespace: str) -> None:
    cache = make(location, namespace)
    cache.set("forever", 1, timeout=None)
    assert cache.cachekit.get(cache.make_key("forever"))[0] is None
    cache.set("neg", 1, timeout=-5)
    assert cache.has_key("neg") is False
    assert cache.add("neg", 1, timeout=0) is True  # the key was free; nothing is stored
    assert cache.has_key("neg") is False
    cache.set("taken", 1)
    assert cache.add("taken", 2, timeout=0) is False
    assert cache.get("taken") == 1
    default = CachekitCache(location, {"TIMEOUT": 77, "OPTIONS": {"namespace": namespace}})
    default.set("d", 1)
    left = default.cachekit.get(default.make_key("d"))[0] - time.time()
    assert 70 < left <= 77
    assert not math.isinf(left)


def test_through_djangos_cache_handler(location: str, namespace: str) -> None:
    setting = {
        "default": {"BACKEND": BACKEND, "LOCATION": location, "OPTIONS": {"namespace": namespace}}
    }
    with override_settings(CACHES=setting):
        caches["default"].set("k", "v")
        assert caches["default"].get("k") == "v"
        caches["default"].close()  # Django closes caches after each request: still usable
        assert caches["default"].get("k") == "v"


def test_an_entry_past_its_expiry_is_absent_even_if_the_server_keeps_it(
    location: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import cachekit.contrib.django as module

    cache = make(location, namespace)
    cache.set("k", 1, timeout=5)
    later = types.SimpleNamespace(time=lambda: time.time() + 6, sleep=time.sleep)
    monkeypatch.setattr(module, "time", later)  # the reader's clock: 6 s later
    assert cache.cachekit.get(cache.make_key("k")) is not None  # the server still has it
    assert cache.get("k") is None
    assert cache.has_key("k") is False
    assert cache.touch("k") is False
    with pytest.raises(ValueError):
        cache.incr("k")
