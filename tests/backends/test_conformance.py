"""Backend conformance: every backend kind behaves the same through Cache and at the Backend level.

Parametrized over memory, redis, redis-cluster, memcached and memcached-pool
(the ``backend_kind`` fixture), each through its sync driver and its asyncio
driver (the ``driver`` fixture): an async driver is seen through
``SyncOverAsync``, a ``Backend`` whose every call runs the awaited call to
completion on the test's own event loop, so each test body is written once.
Memory runs with ``JsonSerializer`` so that every kind stores bytes and
behaves alike. Remote servers keep their own clock, so the one expiry test
waits (bounded, about a second) on them.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import inspect
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import pytest

import cachekit as ck
from cachekit.backends.aio import async_backend_from_url
from cachekit.backends.aio.memory import AsyncMemoryBackend
from cachekit.backends.base import MISSING, AsyncBackend, SupportsCompareAndSet
from tests.conftest import FakeClock, _url_for

MakeBackend = Callable[..., ck.Backend]
_T = TypeVar("_T")


class SyncOverAsync(ck.Backend):
    """A ``Backend`` over an ``AsyncBackend``: each call is awaited to completion on ``loop``."""

    def __init__(self, inner: AsyncBackend, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.loop = loop
        self.local = inner.local  # type: ignore[misc]
        self.max_value_size = inner.max_value_size
        self.server_address = inner.server_address

    def _wait(self, call: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(call)

    def get(self, key: str) -> Any:
        return self._wait(self.inner.get(key))

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self._wait(self.inner.set(key, value, ttl))

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        return self._wait(self.inner.add(key, value, ttl))

    def delete(self, key: str) -> bool:
        return self._wait(self.inner.delete(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return self._wait(self.inner.get_many(keys))

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        self._wait(self.inner.set_many(mapping, ttl))

    def delete_many(self, keys: Iterable[str]) -> int:
        return self._wait(self.inner.delete_many(keys))

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        return bool(self._wait(self.inner.compare_and_set(key, expected, value, ttl)))  # type: ignore[attr-defined]

    def close(self) -> None:
        self._wait(self.inner.aclose())

    def __getattr__(self, name: str) -> Any:
        # the other optional capabilities (server_stats, eviction_counts, drop_prefix), if any
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self._wait(attr(*args, **kwargs))
        return attr


@pytest.fixture(params=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> str:
    """Each driver in turn: the sync backend, then its asyncio twin."""
    return str(request.param)


@pytest.fixture
def make_backend(
    make_backend: MakeBackend, driver: str, request: pytest.FixtureRequest
) -> Iterator[MakeBackend]:
    """``make_backend(kind, **options)``: a sync backend, or an async one in ``SyncOverAsync``."""
    if driver == "sync":
        yield make_backend
        return
    loop = asyncio.new_event_loop()
    made: list[SyncOverAsync] = []

    def factory(kind: str, **options: Any) -> ck.Backend:
        if kind == "memory":
            inner: AsyncBackend = AsyncMemoryBackend(ck.MemoryBackend(**options))
        else:
            inner = async_backend_from_url(_url_for(kind, request), **options)
        made.append(SyncOverAsync(inner, loop))
        return made[-1]

    try:
        yield factory
    finally:
        for backend in made:
            backend.close()
        loop.close()


def new_cache(backend: ck.Backend, namespace: str, **opts: Any) -> ck.Cache:
    return ck.Cache(backend, namespace=namespace, serializer=ck.JsonSerializer(), **opts)


@pytest.fixture
def backend(backend_kind: str, make_backend: MakeBackend) -> ck.Backend:
    return make_backend(backend_kind)


@pytest.fixture
def cache(backend: ck.Backend, namespace: str) -> ck.Cache:
    return new_cache(backend, namespace)


VALUES: dict[str, Any] = {
    "dict": {"name": "Ada", "tags": ["x", "y"], "n": None},
    "list": [1, 2.5, "three", None, True],
    "str": "héllo wörld ✓",
    "empty-str": "",
    "int": 2**62,
    "neg": -1,
    "float": 3.14159,
    "true": True,
    "false": False,
    "none": None,
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "date": datetime.date(2024, 2, 29),
    "decimal": decimal.Decimal("10.25"),
    "uuid": uuid.UUID(int=12345),
    "bytes": b"\x00\x01\xff",
    "tuple": (1, "a"),
    "set": {1, 2},
    "nested": {"when": datetime.date(2020, 1, 1), "ids": (uuid.UUID(int=1),), 1: {"x"}},
}


# ---------------------------------------------------------------- round trips


def test_round_trips_through_cache(cache: ck.Cache) -> None:
    for name, value in VALUES.items():
        cache.set(name, value, ttl=60)
    for name, value in VALUES.items():
        got = cache.get(name, default=MISSING)
        assert got == value, name
        assert type(got) is type(value), name
    assert cache.get_many(list(VALUES)) == VALUES
    s = cache.stats()
    assert s.hits == 2 * len(VALUES)
    assert s.misses == 0


def test_round_trips_at_backend_level(backend: ck.Backend, namespace: str) -> None:
    payloads = [b"", b"plain", b"\x00\r\n\xff" * 10, bytes(range(256)), "é".encode()]
    for i, data in enumerate(payloads):
        backend.set(f"{namespace}:b{i}", data, 60)
    for i, data in enumerate(payloads):
        assert backend.get(f"{namespace}:b{i}") == data
    assert backend.get(f"{namespace}:absent") is MISSING


def test_overwrite_and_delete(cache: ck.Cache, backend: ck.Backend, namespace: str) -> None:
    cache.set("k", 1)
    cache.set("k", 2)
    assert cache.get("k") == 2
    assert cache.delete("k") is True
    assert cache.get("k", "absent") == "absent"
    assert cache.delete("k") is False
    backend.set(f"{namespace}:raw", b"1", None)
    assert backend.delete(f"{namespace}:raw") is True
    assert backend.delete(f"{namespace}:raw") is False
    assert backend.get(f"{namespace}:raw") is MISSING


def test_none_is_a_value(cache: ck.Cache) -> None:
    cache.set("n", None)
    assert cache.get("n", "default") is None
    assert cache.get_many(["n", "absent"]) == {"n": None}
    assert cache.get_or_load("n", lambda: "loaded") is None
    assert (cache.stats().hits, cache.stats().misses) == (3, 1)


def test_get_or_load(cache: ck.Cache) -> None:
    calls = []
    assert cache.get_or_load("k", lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert cache.get_or_load("k", lambda: calls.append(1) or {"v": 2}) == {"v": 1}
    assert calls == [1]
    s = cache.stats()
    assert (s.misses, s.loads, s.hits) == (1, 1, 1)


# ---------------------------------------------------------------- expiry


def test_ttl_expiry(
    backend_kind: str, make_backend: MakeBackend, namespace: str, clock: FakeClock
) -> None:
    if backend_kind == "memory":
        cache = new_cache(make_backend("memory", timer=clock), namespace)
        advance: Callable[[], None] = lambda: clock.advance(1.01)  # noqa: E731
        deadline = 1
    else:
        cache = new_cache(make_backend(backend_kind), namespace)
        advance = lambda: time.sleep(0.1)  # noqa: E731
        deadline = 30  # polls: remote servers expire on their own clock (memcached: 1 s ticks)
    cache.set("short", "v", ttl=1)
    cache.set("long", "v", ttl=60)
    cache.set("forever", "v", ttl=ck.NO_EXPIRY)
    cache.set_many({"short-many": "v"}, ttl=1)
    assert cache.get("long") == "v"
    for _ in range(deadline):
        advance()
        if cache.get_many(["short", "short-many"]) == {}:
            break
    else:
        pytest.fail("entries with ttl=1 did not expire within 3 s")
    assert cache.get("long") == "v"
    assert cache.get("forever") == "v"


def test_ttl_at_backend_level(backend: ck.Backend, namespace: str) -> None:
    key = f"{namespace}:t"
    backend.set(key, b"v", 60)
    assert backend.get(key) == b"v"
    backend.set(key, b"v", None)
    assert backend.get(key) == b"v"


# ---------------------------------------------------------------- many ops


def test_many_ops_of_100_keys(cache: ck.Cache) -> None:
    mapping = {f"key-{i}": {"i": i} for i in range(100)}
    cache.set_many(mapping)
    asked = [*mapping, "absent-1", "absent-2"]
    assert cache.get_many(asked) == mapping
    assert cache.delete_many([f"key-{i}" for i in range(50)]) in (50, 0)
    left = {k: v for k, v in mapping.items() if int(k.split("-")[1]) >= 50}
    assert cache.get_many(list(mapping)) == left
    assert cache.get("key-0") is None
    assert cache.get("key-99") == {"i": 99}


def test_many_ops_at_backend_level(backend: ck.Backend, namespace: str) -> None:
    mapping = {f"{namespace}:{i}": str(i).encode() for i in range(100)}
    backend.set_many(mapping, 60)
    got = backend.get_many([*mapping, f"{namespace}:absent"])
    assert got == mapping
    removed = backend.delete_many(list(mapping)[:30])
    assert removed in (30, 0)  # where the backend can tell
    assert len(backend.get_many(list(mapping))) == 70
    assert backend.get_many([]) == {}


# ---------------------------------------------------------------- add / cas


def test_add(cache: ck.Cache, backend: ck.Backend, namespace: str) -> None:
    assert cache.add("a", 1) is True
    assert cache.add("a", 2) is False
    assert cache.get("a") == 1
    cache.delete("a")
    assert cache.add("a", 3) is True
    assert cache.get("a") == 3
    key = f"{namespace}:add"
    assert backend.add(key, b"1", 60) is True
    assert backend.add(key, b"2", 60) is False
    assert backend.get(key) == b"1"


def test_compare_and_set(backend: ck.Backend, namespace: str) -> None:
    if not isinstance(backend, SupportsCompareAndSet):
        pytest.fail(f"{type(backend).__name__} lacks compare_and_set (every backend here has it)")
    key = f"{namespace}:cas"
    assert backend.compare_and_set(key, b"x", b"y", 60) is False
    assert backend.get(key) is MISSING
    backend.set(key, b"v1", 60)
    assert backend.compare_and_set(key, b"nope", b"v2", 60) is False
    assert backend.get(key) == b"v1"
    assert backend.compare_and_set(key, b"v1", b"v2", 60) is True
    assert backend.get(key) == b"v2"


# ---------------------------------------------------------------- namespaces / clear


def test_namespaces_are_isolated_and_clear_is_per_namespace(
    backend: ck.Backend, namespace: str
) -> None:
    a = new_cache(backend, namespace + "-a")
    ab = new_cache(backend, namespace + "-ab")
    a.set("bc", "a")
    ab.set("c", "ab")
    assert ab.get("bc") is None
    assert a.get("c") is None
    assert (a.get("bc"), ab.get("c")) == ("a", "ab")
    a.clear()
    assert a.get("bc") is None
    assert ab.get("c") == "ab"
    a.set("bc", "again")
    assert a.get("bc") == "again"


def test_clear_is_seen_by_a_second_cache_object(
    backend_kind: str, backend: ck.Backend, make_backend: MakeBackend, namespace: str
) -> None:
    clock = FakeClock()
    first = new_cache(backend, namespace, timer=clock)
    # remote: a second backend object, as another process would have; memory: the same store
    other_backend = backend if backend_kind == "memory" else make_backend(backend_kind)
    second = new_cache(other_backend, namespace, timer=clock)
    first.set("k", "v")
    assert second.get("k") == "v"
    first.clear()
    assert first.get("k") is None
    clock.advance(5)  # past the namespace re-check interval
    assert second.get("k") is None
    second.set("k", "new")
    clock.advance(5)
    assert first.get("k") == "new"


# ---------------------------------------------------------------- odd keys

ODD_KEYS = [
    "with space",
    " leading",
    "trailing ",
    "new\nline",
    "\r\nset x 0 0 1\r\n",
    "get x",
    "tab\tkey",
    "ctrl\x01\x02\x7f",
    "nul\x00byte",
    "unicode ключ 鍵 🔑",
    "é",
    "k" * 400,
    "k" * 399 + "j",
    "~",
    "~tilde",
    "~k#" + "0" * 32,
    "a:b:c",
    "{hashtag}",
    "%s%n",
    "*",
]


def test_odd_keys_through_cache(cache: ck.Cache) -> None:
    assert len(set(ODD_KEYS)) == len(ODD_KEYS)
    for i, key in enumerate(ODD_KEYS):
        cache.set(key, i)
    for i, key in enumerate(ODD_KEYS):
        assert cache.get(key) == i, repr(key)
    assert cache.get_many(ODD_KEYS) == {k: i for i, k in enumerate(ODD_KEYS)}
    # the protocol-looking key did not create an entry "x"
    assert cache.get("x") is None
    for key in ODD_KEYS[::2]:
        assert cache.delete(key) is True
    assert cache.get_many(ODD_KEYS) == {k: i for i, k in enumerate(ODD_KEYS) if i % 2}


def test_odd_keys_at_backend_level(backend: ck.Backend, namespace: str) -> None:
    keys = [f"{namespace}:{k}" for k in ODD_KEYS]
    for i, key in enumerate(keys):
        backend.set(key, str(i).encode(), 60)
    for i, key in enumerate(keys):
        assert backend.get(key) == str(i).encode(), repr(key)
    assert backend.get_many(keys) == {k: str(i).encode() for i, k in enumerate(keys)}
    assert backend.get(f"{namespace}:x") is MISSING
    assert backend.get("x") is MISSING or backend.get("x") != b"1"


# ---------------------------------------------------------------- bad values


class Unserializable:
    pass


def test_unserializable_value(cache: ck.Cache) -> None:
    cache.set("k", "previous")
    with pytest.raises(ck.SerializationError):
        cache.set("k", Unserializable())
    with pytest.raises(ck.SerializationError):
        cache.set_many({"k": "other", "j": {"x": Unserializable()}})
    assert cache.get("k") == "previous"
    assert cache.get("j") is None
    loaded = Unserializable()
    assert cache.get_or_load("u", lambda: loaded) is loaded
    assert cache.get("u") is None
    assert cache.stats().errors >= 1


def test_oversized_value_with_a_configured_limit(
    backend_kind: str, make_backend: MakeBackend, namespace: str
) -> None:
    cache = new_cache(make_backend(backend_kind, max_value_size=1000), namespace)
    cache.set("k", "previous")
    with pytest.raises(ck.ValueTooLargeError):
        cache.set("k", "x" * 2000)
    assert cache.get("k") == "previous"
    with pytest.raises(ck.ValueTooLargeError):
        cache.set_many({"k": "small", "big": "x" * 2000})
    assert cache.get("k") == "previous"
    assert cache.get_or_load("big", lambda: "y" * 2000) == "y" * 2000
    assert cache.get("big") is None
    cache.set("k", "x" * 900)  # under the limit still works
    assert cache.get("k") == "x" * 900


def test_oversized_value_over_the_default_memcached_limit(
    backend_kind: str, cache: ck.Cache
) -> None:
    if not backend_kind.startswith("memcached"):
        assert cache.backend.max_value_size is None or cache.backend.max_value_size > 2**21
        cache.set("big", "x" * (2 * 2**20))  # 2 MiB is fine without a limit
        assert cache.get("big") == "x" * (2 * 2**20)
        return
    assert cache.backend.max_value_size is not None
    assert cache.backend.max_value_size <= 2**20
    cache.set("k", "previous")
    with pytest.raises(ck.ValueTooLargeError):
        cache.set("k", "x" * (2 * 2**20))
    assert cache.get("k") == "previous"
