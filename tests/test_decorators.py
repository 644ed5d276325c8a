"""Decorators: cached on functions and methods, writes, evicts (decorators.py).

Every test runs with a ``Cache`` and with an ``AsyncCache`` (``tests/twins.py``): the
async twin decorates an ``async def`` with the same name and parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest

import cachekit as ck
from tests.conftest import FakeClock
from tests.twins import TWIN_KINDS, Twin, open_twin


@pytest.fixture(params=TWIN_KINDS)
def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
    """Each test with a ``Cache``, then with an ``AsyncCache``."""
    yield from open_twin(request.param)


def make_cache(drv: Twin, clock: FakeClock, **opts: Any) -> Any:
    """A cache of the driver's kind over memory on ``clock``."""
    return drv.cache(ck.MemoryBackend(1000, timer=clock), namespace="dec", timer=clock, **opts)


def test_cached_function_and_helpers(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    db = {1: "one", 2: "two"}
    calls: list[int] = []

    @cache.cached()
    def get(uid: int) -> str:
        calls.append(uid)
        return db[uid]

    assert get(1) == "one"
    assert get(1) == "one"
    assert calls == [1]
    db[1] = "uno"
    assert get(1) == "one"  # cached
    assert get.uncached(1) == "uno"  # type: ignore[attr-defined]
    assert calls == [1, 1]
    assert get(1) == "one"  # uncached() did not store
    assert get.refresh(1) == "uno"  # type: ignore[attr-defined]
    assert get(1) == "uno"
    assert calls == [1, 1, 1]
    assert get.invalidate(1) is True  # type: ignore[attr-defined]
    assert get.invalidate(1) is False  # type: ignore[attr-defined]
    db[1] = "eins"
    assert get(1) == "eins"
    assert get.key(1) == get.key(uid=1)  # type: ignore[attr-defined]
    assert get.key(1) != get.key(2)  # type: ignore[attr-defined]
    assert cache.get(get.key(1)) == "eins"  # type: ignore[attr-defined]


def test_cached_none_result_is_a_hit(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    calls = []

    @cache.cached()
    def find(x: int) -> None:
        calls.append(x)

    find(1)
    find(1)
    assert calls == [1]


def test_cached_on_methods_shares_entries_between_instances(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    calls: list[tuple[int, int]] = []

    class Repo:
        def __init__(self, tag: int) -> None:
            self.tag = tag

        @cache.cached()
        def get(self, uid: int) -> str:
            calls.append((self.tag, uid))
            return f"user{uid}"

    r1, r2 = Repo(1), Repo(2)
    assert r1.get(5) == "user5"
    assert r2.get(5) == "user5"  # self is not in the key
    assert calls == [(1, 5)]
    assert r2.get.key(5) == r1.get.key(uid=5)
    assert r2.get.invalidate(5) is True
    assert r1.get(5) == "user5"
    assert calls == [(1, 5), (1, 5)]
    assert r2.get.uncached(5) == "user5"
    assert calls[-1] == (2, 5)
    calls.clear()
    assert r2.get.refresh(6) == "user6"
    assert calls == [(2, 6)]
    assert r1.get(6) == "user6"
    assert calls == [(2, 6)]


def test_cached_classmethod_style(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    calls = []

    class Svc:
        @classmethod
        @cache.cached()
        def lookup(cls, x: int) -> int:
            calls.append(x)
            return x + 1

    assert Svc.lookup(1) == 2
    assert Svc.lookup(1) == 2
    assert calls == [1]


def test_cached_ttl_override(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, ttl=100)
    calls: list[str] = []

    @cache.cached(ttl=5)
    def short(x: str) -> str:
        calls.append(x)
        return x

    @cache.cached()
    def default(x: str) -> str:
        calls.append("d" + x)
        return x

    @cache.cached(ttl=ck.NO_EXPIRY)
    def forever(x: str) -> str:
        calls.append("f" + x)
        return x

    short("a")
    default("a")
    forever("a")
    clock.advance(6)
    short("a")
    default("a")
    assert calls == ["a", "da", "fa", "a"]
    clock.advance(100)
    default("a")
    forever("a")
    assert calls == ["a", "da", "fa", "a", "da"]


def test_cached_template_key_shared_with_writers(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, policy=ck.WriteThrough())
    db: dict[int, dict[str, Any]] = {1: {"name": "a"}}

    @cache.cached(key="user:{user_id}")
    def load_user(user_id: int) -> dict[str, Any]:
        return dict(db[user_id])

    @cache.writes(key="user:{user_id}")
    def save_user(user_id: int, data: dict[str, Any]) -> dict[str, Any]:
        db[user_id] = data
        return data

    assert load_user(1) == {"name": "a"}
    save_user(1, {"name": "b"})
    assert cache.get("user:1") == {"name": "b"}
    db[1] = {"name": "changed behind our back"}
    assert load_user(1) == {"name": "b"}  # served from the write-through entry


def test_writes_under_cache_aside_invalidates(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, policy=ck.CacheAside())
    cache.set("user:1", "old")

    @cache.writes(key="user:{uid}")
    def save(uid: int, value: str) -> str:
        return value

    assert save(1, "new") == "new"
    assert cache.get("user:1", "absent") == "absent"


def test_writes_with_ttl(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, policy=ck.WriteThrough(ttl=100))

    @cache.writes(key="k:{x}", ttl=3)
    def save(x: int) -> int:
        return x

    save(1)
    assert cache.get("k:1") == 1
    clock.advance(3.5)
    assert cache.get("k:1") is None


def test_evicts(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, policy=ck.WriteThrough())
    cache.set("user:7", "x")
    cache.set("user:8", "y")

    @cache.evicts(key="user:{uid}")
    def delete_user(uid: int) -> str:
        return "deleted"

    assert delete_user(7) == "deleted"
    assert cache.get("user:7") is None
    assert cache.get("user:8") == "y"


@pytest.mark.parametrize("policy", [ck.WriteThrough(), ck.CacheAside()], ids=repr)
def test_a_write_or_evict_that_raises_touches_nothing(
    drv: Twin, clock: FakeClock, policy: Any
) -> None:
    cache = make_cache(drv, clock, policy=policy)
    cache.set("user:1", "old")

    @cache.writes(key="user:{uid}")
    def save(uid: int) -> str:
        raise RuntimeError("rollback")

    @cache.evicts(key="user:{uid}")
    def delete(uid: int) -> None:
        raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        save(1)
    with pytest.raises(RuntimeError):
        delete(1)
    assert cache.get("user:1") == "old"
    assert cache.stats().sets == 1
    assert cache.stats().deletes == 0


def test_writes_with_an_unserializable_result_leaves_no_stale_entry(
    drv: Twin, clock: FakeClock
) -> None:
    cache = make_cache(drv, clock, policy=ck.WriteThrough(), serializer=ck.JsonSerializer())
    cache.set("obj:1", {"old": True})
    result = object()

    @cache.writes(key="obj:{i}")
    def save(i: int) -> object:
        return result

    assert save(1) is result  # no exception
    assert cache.get("obj:1", "absent") == "absent"  # the old value is gone
    assert cache.stats().errors == 1


def test_writes_and_evicts_need_a_key(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    with pytest.raises(ck.ConfigurationError):
        cache.writes(key=None)  # type: ignore[arg-type]
    with pytest.raises(ck.ConfigurationError):
        cache.evicts(key=None)  # type: ignore[arg-type]
    with pytest.raises(ck.ConfigurationError):
        cache.cached(key=42)(lambda x: x)  # type: ignore[arg-type]


def test_callable_key(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    calls = []

    @cache.cached(key=lambda uid, verbose=False: f"u:{uid}")
    def get(uid: int, verbose: bool = False) -> int:
        calls.append(uid)
        return uid

    get(1)
    get(1, verbose=True)
    assert calls == [1]
    assert cache.get("u:1") == 1

    @cache.cached(key=lambda uid: 5)
    def bad(uid: int) -> int:
        return uid

    with pytest.raises(ck.InvalidKeyError):
        bad(1)


def test_metadata_and_signature_are_preserved(drv: Twin, clock: FakeClock) -> None:
    cache = drv.raw(make_cache(drv, clock))  # the decorators themselves, on a function of its kind

    def original(user_id: int, *, verbose: bool = False) -> dict[str, int]:
        """Load a user."""
        return {"id": user_id}

    original = drv.loader(original)  # type: ignore[assignment]

    for deco in (
        cache.cached(),
        cache.cached(ttl=5, key="u:{user_id}"),
        cache.writes(key="u:{user_id}"),
        cache.evicts(key="u:{user_id}"),
    ):
        wrapped = deco(original)
        assert wrapped.__name__ == "original"
        assert wrapped.__doc__ == "Load a user."
        assert wrapped.__qualname__ == original.__qualname__
        assert wrapped.__wrapped__ is original
        assert inspect.signature(wrapped) == inspect.signature(original)


def test_method_metadata_is_preserved(drv: Twin, clock: FakeClock) -> None:
    cache = drv.raw(make_cache(drv, clock))  # the decorators themselves, on a method of its kind

    class Repo:
        def get(self, uid: int) -> int:
            """Get one."""
            return uid

        get = cache.cached()(drv.loader(get))  # type: ignore[assignment]

    assert Repo.get.__name__ == "get"
    assert Repo.get.__doc__ == "Get one."
    assert list(inspect.signature(Repo.get).parameters) == ["self", "uid"]
    bound = Repo().get
    assert str(inspect.signature(bound)) == "(uid: 'int') -> 'int'"
    assert bound.__name__ == "get"
    assert bound.__qualname__.endswith("Repo.get")
    assert callable(bound.__wrapped__)


def test_cached_without_parentheses_is_a_clear_error(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    with pytest.raises(ck.ConfigurationError, match="parentheses"):

        @cache.cached  # type: ignore[arg-type]
        def f(x: int) -> int:
            return x


def test_bad_ttl_is_refused_at_decoration_time(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    with pytest.raises(ck.ConfigurationError):

        @cache.cached(ttl="5 minutes")  # type: ignore[arg-type]
        def f(x: int) -> int:
            return x

    with pytest.raises(ck.ConfigurationError):
        cache.writes(key="k", ttl=-1)


def test_decorated_functions_stay_independent(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)

    @cache.cached()
    def a(x: int) -> str:
        return "a"

    @cache.cached()
    def b(x: int) -> str:
        return "b"

    assert (a(1), b(1)) == ("a", "b")
    assert a.key(1) != b.key(1)  # type: ignore[attr-defined]
