"""Cache and AsyncCache: the public API over memory on a fake clock, bad values, fail-open, breaker.

Every test runs twice through the ``drv`` fixture (``tests/twins.py``): against a
``Cache`` and against an ``AsyncCache`` (each awaited call run on the test's loop).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest

import cachekit as ck
from cachekit.backends.base import MISSING
from tests.conftest import FakeClock
from tests.twins import TWIN_KINDS, Twin, open_twin


@pytest.fixture(params=TWIN_KINDS)
def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
    """Each test with a ``Cache``, then with an ``AsyncCache``."""
    yield from open_twin(request.param)


def make_cache(drv: Twin, clock: FakeClock, namespace: str = "app", **opts: Any) -> Any:
    """A cache of the driver's kind over memory on ``clock``."""
    backend = opts.pop("backend", None)
    if backend is None:  # not `or`: an empty MemoryBackend is falsy (it has __len__)
        backend = ck.MemoryBackend(1000, timer=clock)
    return drv.cache(backend, namespace=namespace, timer=clock, **opts)


# ---------------------------------------------------------------- basic API


def test_get_set_delete(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    assert cache.get("k") is None
    assert cache.get("k", default="d") == "d"
    cache.set("k", {"a": [1, 2]})
    assert cache.get("k") == {"a": [1, 2]}
    assert "k" in cache
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k", 0) == 0
    assert "k" not in cache


def test_none_is_a_value(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    cache.set("k", None)
    assert cache.get("k", default="d") is None
    s = cache.stats()
    assert (s.hits, s.misses) == (1, 0)
    calls = []
    assert cache.get_or_load("k", drv.loader(lambda: calls.append(1))) is None
    assert calls == []
    assert cache.get_many(["k", "x"]) == {"k": None}


def test_many_ops(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    cache.set_many({f"k{i}": i for i in range(50)})
    assert cache.get_many([f"k{i}" for i in range(60)]) == {f"k{i}": i for i in range(50)}
    assert cache.delete_many([f"k{i}" for i in range(10)] + ["absent"]) == 10
    assert cache.get_many([f"k{i}" for i in range(20)]) == {f"k{i}": i for i in range(10, 20)}
    assert cache.delete_many([]) == 0
    cache.set_many({})
    assert cache.get_many([]) == {}


def test_add(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    assert cache.add("k", 1) is True
    assert cache.add("k", 2) is False
    assert cache.get("k") == 1


def test_clear_is_per_namespace_and_seen_by_other_cache_objects(
    drv: Twin, clock: FakeClock
) -> None:
    backend = ck.MemoryBackend(1000, timer=clock)
    a = make_cache(drv, clock, "a", backend=backend)
    b = make_cache(drv, clock, "b", backend=backend)
    a2 = make_cache(drv, clock, "a", backend=backend)
    a.set("x", 1)
    b.set("x", 2)
    assert a2.get("x") == 1
    a.clear()
    assert a.get("x") is None
    assert a2.get("x") is None
    assert b.get("x") == 2
    a2.set("y", 3)
    assert a.get("y") == 3
    a2.clear()
    assert a.get("y") is None
    assert b.get("x") == 2


def test_namespaces_are_isolated(drv: Twin, clock: FakeClock) -> None:
    backend = ck.MemoryBackend(1000, timer=clock)
    a = make_cache(drv, clock, "a", backend=backend)
    ab = make_cache(drv, clock, "ab", backend=backend)
    a.set("bc", "from a")
    assert ab.get("c") is None
    ab.set("c", "from ab")
    assert a.get("bc") == "from a"
    assert ab.get("c") == "from ab"


@pytest.mark.parametrize("bad", [1, None, b"k", "", ("k",)])
def test_invalid_keys(drv: Twin, clock: FakeClock, bad: Any) -> None:
    cache = make_cache(drv, clock)
    for call in (
        lambda: cache.get(bad),
        lambda: cache.set(bad, 1),
        lambda: cache.delete(bad),
        lambda: cache.get_many(["ok", bad]),
        lambda: cache.set_many({bad: 1}),
        lambda: cache.delete_many([bad]),
        lambda: cache.get_or_load(bad, drv.loader(lambda: 1)),
        lambda: cache.add(bad, 1),
    ):
        with pytest.raises(ck.InvalidKeyError):
            call()


def test_bad_constructor_arguments(drv: Twin, clock: FakeClock) -> None:
    with pytest.raises(ck.ConfigurationError):
        drv.Cache({}, namespace="x")
    with pytest.raises(ck.ConfigurationError):
        drv.cache(ck.MemoryBackend(), namespace="")


def test_from_url(drv: Twin) -> None:
    cache = drv.from_url("memory://?maxsize=5", namespace="u", ttl=30)
    store = cache.backend.backend if drv.is_async else cache.backend  # the async driver's store
    assert isinstance(store, ck.MemoryBackend)
    assert store.maxsize == 5
    assert cache.policy.ttl == ck.TTL(30)
    cache.set("k", 1)
    assert cache.get("k") == 1
    js = drv.from_url("memory://?serializer=json")
    assert isinstance(js.serializer, ck.JsonSerializer)
    with pytest.raises(ck.ConfigurationError):
        drv.from_url("memory://?serializer=pickle")  # no key
    with pytest.raises(ck.ConfigurationError):
        drv.from_url("memory://?serializer=yaml")


def test_long_keys_are_stored_and_do_not_collide(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    k1, k2 = "p" * 300 + "1", "p" * 300 + "2"
    cache.set(k1, 1)
    cache.set(k2, 2)
    assert (cache.get(k1), cache.get(k2)) == (1, 2)
    assert cache.full_key(k1) != cache.full_key(k2)
    assert len(cache.full_key(k1)) < 150


# ---------------------------------------------------------------- stats


def test_stats_are_exact(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    loads = []
    assert cache.get_or_load("k", drv.loader(lambda: loads.append(1) or "v")) == "v"
    s = cache.stats()
    assert (s.misses, s.loads, s.hits, s.coalesced) == (1, 1, 0, 0)
    assert cache.get_or_load("k", drv.loader(lambda: loads.append(1) or "w")) == "v"
    assert loads == [1]
    cache.get("k")
    cache.get("nope")
    cache.get_many(["k", "nope", "nope2"])
    s = cache.stats()
    assert (s.hits, s.misses, s.loads) == (3, 4, 1)
    assert s.lookups == 7
    assert s.hit_ratio == pytest.approx(3 / 7)
    assert s.errors == 0
    assert s.namespace == "app"


def test_stats_count_sets_deletes_and_evictions(drv: Twin, clock: FakeClock) -> None:
    backend = ck.MemoryBackend(4, timer=clock)
    cache = make_cache(drv, clock, backend=backend)
    base = len(backend)  # the namespace version entry, if the cache keeps one in the backend
    for i in range(6):
        cache.set(f"k{i}", i)
    s = cache.stats()
    assert s.sets == 6
    assert s.evictions_capacity == 6 + base - 4
    assert s.evictions_capacity == backend.eviction_counts()[0]
    cache.delete("k5")
    cache.delete("k5")
    s = cache.stats()
    assert s.deletes == 2
    assert s.evictions_invalidated == 1
    cache.set("t", 1, ttl=5)
    clock.advance(6)
    assert cache.stats().evictions_expired == 1
    assert cache.stats().evictions == cache.stats().evictions_capacity + 1


def test_get_or_load_loader_error_propagates_and_is_not_cached(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)

    def boom() -> int:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        cache.get_or_load("k", drv.loader(boom))
    assert cache.get("k", "absent") == "absent"
    s = cache.stats()
    assert (s.loads, s.load_failures) == (0, 1)
    assert cache.get_or_load("k", drv.loader(lambda: 5)) == 5


def test_refresh_replaces_the_cached_value(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    cache.set("k", 1)
    assert cache.refresh("k", drv.loader(lambda: 2)) == 2
    assert cache.get("k") == 2


# ---------------------------------------------------------------- TTL


def test_ttl_from_policy_and_per_call(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, ttl=10)
    cache.set("policy", 1)
    cache.set("call", 1, ttl=3)
    cache.set("obj", 1, ttl=ck.TTL(20))
    cache.set_many({"m": 1}, ttl=4)
    cache.get_or_load("loaded", drv.loader(lambda: 1), ttl=6)
    clock.advance(2.9)
    assert cache.get_many(["policy", "call", "obj", "m", "loaded"]) == dict.fromkeys(
        ["policy", "call", "obj", "m", "loaded"], 1
    )
    clock.advance(0.2)
    assert cache.get("call") is None
    clock.advance(1)
    assert cache.get("m") is None
    clock.advance(3)
    assert cache.get("loaded") is None
    assert cache.get("policy") == 1
    clock.advance(3)
    assert cache.get("policy") is None
    assert cache.get("obj") == 1
    clock.advance(10)
    assert cache.get("obj") is None


def test_default_policy_ttl_is_300s(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock)
    cache.set("k", 1)
    clock.advance(299)
    assert cache.get("k") == 1
    clock.advance(1.5)
    assert cache.get("k") is None


def test_no_expiry(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, ttl=5)
    cache.set("k", 1, ttl=ck.NO_EXPIRY)
    forever = make_cache(drv, clock, "forever", ttl=ck.NO_EXPIRY)
    forever.set("k", 2)
    clock.advance(10**8)
    assert cache.get("k") == 1
    assert forever.get("k") == 2


def test_jitter_spreads_expiry(drv: Twin, clock: FakeClock) -> None:
    backend = ck.MemoryBackend(5000, timer=clock)
    cache = make_cache(drv, clock, backend=backend, ttl=ck.TTL(100, jitter=0.1))
    keys = [f"k{i}" for i in range(1000)]
    for k in keys:
        cache.set(k, 1)
    live_by_second = []
    for _ in range(115):
        clock.advance(1)
        live_by_second.append(len(cache.get_many(keys)))
    # nothing before 90 s, everything gone after 110 s
    assert live_by_second[88] == 1000  # t = 89
    assert live_by_second[110] == 0  # t = 111
    drops = [a - b for a, b in itertools.pairwise(live_by_second)]
    assert all(d >= 0 for d in drops)
    # gradual: expiries land in many different seconds, none takes a big share
    assert sum(1 for d in drops if d) >= 18
    assert max(drops) < 120
    # roughly uniform: about half gone at 100 s
    assert 350 < live_by_second[99] < 650


# ---------------------------------------------------------------- bad values


def test_unserializable_value_raises_and_keeps_previous_entry(drv: Twin, clock: FakeClock) -> None:
    cache = make_cache(drv, clock, serializer=ck.JsonSerializer())
    cache.set("k", {"v": 1})
    with pytest.raises(ck.SerializationError):
        cache.set("k", object())
    assert cache.get("k") == {"v": 1}
    with pytest.raises(ck.SerializationError):
        cache.set_many({"k": 2, "j": object()})
    assert cache.get("k") == {"v": 1}
    assert cache.get("j") is None


def test_too_large_value_raises_and_keeps_previous_entry(drv: Twin, clock: FakeClock) -> None:
    backend = ck.MemoryBackend(100, timer=clock, max_value_size=100)
    cache = make_cache(drv, clock, backend=backend, serializer=ck.JsonSerializer())
    cache.set("k", "small")
    with pytest.raises(ck.ValueTooLargeError) as info:
        cache.set("k", "x" * 200)
    assert info.value.limit == 100
    assert cache.get("k") == "small"
    with pytest.raises(ck.ValueTooLargeError):
        cache.set_many({"k": "tiny", "big": "x" * 200})
    assert cache.get("k") == "small"


def test_get_or_load_returns_an_uncacheable_value_and_counts_the_error(
    drv: Twin, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(drv, clock, serializer=ck.JsonSerializer())
    value = object()
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert cache.get_or_load("k", drv.loader(lambda: value)) is value
    assert cache.get("k", "absent") == "absent"
    s = cache.stats()
    assert s.loads == 1
    assert s.errors == 1
    assert "not cached" in caplog.text
    big = drv.cache(
        ck.MemoryBackend(timer=clock, max_value_size=10), serializer=ck.JsonSerializer()
    )
    assert big.get_or_load("k", drv.loader(lambda: "x" * 100)) == "x" * 100
    assert big.get("k") is None
    assert big.stats().errors == 1


# ---------------------------------------------------------------- failing backend


class FlakyBackend(ck.Backend):
    """A memory backend that raises while ``down``; counts the calls that reach it."""

    local = True

    def __init__(self, clock: FakeClock) -> None:
        self.inner = ck.MemoryBackend(1000, timer=clock)
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise ck.BackendUnavailableError("connection refused")

    def get(self, key: str) -> Any:
        self._check()
        return self.inner.get(key)

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self._check()
        self.inner.set(key, value, ttl)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        self._check()
        return self.inner.add(key, value, ttl)

    def delete(self, key: str) -> bool:
        self._check()
        return self.inner.delete(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        self._check()
        return self.inner.get_many(keys)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        self._check()
        self.inner.set_many(mapping, ttl)

    def delete_many(self, keys: Iterable[str]) -> int:
        self._check()
        return self.inner.delete_many(keys)


class RemoteFlakyBackend(FlakyBackend):
    """The same, seen by the Cache as a remote backend (serialized, namespace re-checked)."""

    local = False


@pytest.fixture(params=[FlakyBackend, RemoteFlakyBackend], ids=["local", "remote"])
def flaky(request: pytest.FixtureRequest, clock: FakeClock) -> FlakyBackend:
    return request.param(clock)  # type: ignore[no-any-return]


def flaky_cache(drv: Twin, flaky: FlakyBackend, clock: FakeClock, **opts: Any) -> Any:
    """A cache of the driver's kind over ``flaky`` (the async one through its awaited face)."""
    breaker = ck.CircuitBreaker(3, 5.0, timer=clock)
    return drv.cache(flaky, namespace="f", breaker=breaker, timer=clock, **opts)


def test_backend_errors_fall_open(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = flaky_cache(drv, flaky, clock)
    cache.set("k", 1)
    flaky.down = True
    with caplog.at_level(logging.WARNING, logger="cachekit"):
        assert cache.get("k", "dflt") == "dflt"
        cache.set("k", 2)
        assert cache.delete("k") is False
    assert cache.stats().errors == 3
    assert cache.stats().misses == 1
    # logged once per incident, not once per call
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_get_or_load_calls_the_loader_when_the_backend_is_down(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = flaky_cache(drv, flaky, clock)
    # it has reached the backend once: a Cache does when built, an AsyncCache on its first
    # call (if even that fails, it opens its breaker at once and counts only that error)
    cache.get("seen")
    flaky.down = True
    assert cache.get_or_load("k", drv.loader(lambda: 42)) == 42
    assert cache.get_or_load("k", drv.loader(lambda: 43)) == 43
    s = cache.stats()
    assert s.loads == 2
    assert s.errors >= 2


def test_circuit_breaker_opens_skips_probes_and_closes(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = flaky_cache(drv, flaky, clock)
    cache.set("k", 1)
    flaky.down = True
    for _ in range(3):
        assert cache.get("k") is None
    assert cache.stats().circuit_open is True
    calls = flaky.calls
    for _ in range(50):
        assert cache.get("k", "d") == "d"
        cache.set("j", 1)
    assert flaky.calls == calls  # the open breaker skips the backend
    clock.advance(4.9)
    cache.get("k")
    assert flaky.calls == calls
    clock.advance(0.2)
    # the probe fails: open again for another reset_timeout
    assert cache.get("k", "d") == "d"
    assert flaky.calls == calls + 1
    assert cache.stats().circuit_open is True
    cache.get("k")
    assert flaky.calls == calls + 1
    # the server comes back; after the timeout one probe succeeds and closes the breaker
    flaky.down = False
    clock.advance(5.1)
    assert cache.get("k") == 1
    assert cache.stats().circuit_open is False
    assert cache.get("k") == 1
    cache.set("k", 3)
    assert cache.get("k") == 3


def test_strict_mode_raises(drv: Twin, flaky: FlakyBackend, clock: FakeClock) -> None:
    cache = flaky_cache(drv, flaky, clock, fail_open=False)
    cache.set("k", 1)
    flaky.down = True
    with pytest.raises(ck.BackendUnavailableError):
        cache.get("k")
    with pytest.raises(ck.BackendUnavailableError):
        cache.set("k", 2)
    with pytest.raises(ck.BackendUnavailableError):
        cache.delete("k")
    # breaker open now: still an error, not a silent miss
    with pytest.raises(ck.BackendUnavailableError):
        cache.get("other")
    with pytest.raises(ck.BackendUnavailableError):
        cache.set("other", 1)


def test_strict_mode_raises_for_a_key_with_a_pending_invalidation(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = flaky_cache(drv, flaky, clock, fail_open=False)
    cache.set("k", 1)
    flaky.down = True
    with pytest.raises(ck.BackendUnavailableError):
        cache.delete("k")  # remembered as pending
    with pytest.raises(ck.BackendUnavailableError):
        cache.get("k")


def test_invalidation_during_outage_is_replayed_on_recovery(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = flaky_cache(drv, flaky, clock)
    cache.set("k", "old")
    full = cache.full_key("k")
    flaky.down = True
    assert cache.delete("k") is False  # could not reach the server
    assert cache.get("k", "miss") == "miss"
    flaky.down = False
    clock.advance(0.5)  # breaker still closed: failures 2 < 3
    assert cache.get("k", "miss") == "miss"  # never the old value
    cache.get("other")
    assert flaky.inner.get(full) is MISSING  # the delete reached the server


def test_invalidation_replayed_after_the_breaker_opened(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = flaky_cache(drv, flaky, clock)
    cache.set("k", "old")
    full = cache.full_key("k")
    flaky.down = True
    for _ in range(3):
        cache.get("x")
    assert cache.stats().circuit_open
    cache.delete("k")  # skipped by the open breaker: remembered
    flaky.down = False
    clock.advance(6)
    assert cache.get("k", "miss") == "miss"
    cache.get("other")
    assert flaky.inner.get(full) is MISSING


def test_breaker_closes_after_replaying_pending_invalidations(drv: Twin, clock: FakeClock) -> None:
    # local backend: no namespace re-check that would close the breaker by accident
    flaky = FlakyBackend(clock)
    cache = flaky_cache(drv, flaky, clock)
    cache.set("k", "old")
    cache.set("other", "value")
    flaky.down = True
    for _ in range(3):
        cache.get("x")
    cache.delete("k")
    flaky.down = False
    clock.advance(6)
    assert cache.get("k", "miss") == "miss"  # pending key: replays the delete (the probe)
    clock.advance(60)
    assert cache.get("other") == "value"  # the recovered backend is used again
    assert cache.stats().circuit_open is False


def test_a_write_during_the_outage_does_not_resurrect_the_old_value(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = flaky_cache(drv, flaky, clock)
    cache.set("k", "old")
    flaky.down = True
    cache.set("k", "new")  # lost: the old value must not be served later
    flaky.down = False
    clock.advance(6)
    assert cache.get("k") in (None, "new")
    cache.get("z")
    assert cache.get("k") in (None, "new")


@pytest.mark.parametrize(
    "kind",
    [
        "local",
        "remote",
    ],
)
def test_clear_during_outage_is_not_lost(drv: Twin, kind: str, clock: FakeClock) -> None:
    flaky = (FlakyBackend if kind == "local" else RemoteFlakyBackend)(clock)
    cache = flaky_cache(drv, flaky, clock)
    cache.set("k", "old")
    flaky.down = True
    cache.clear()
    assert cache.get("k") is None
    flaky.down = False
    clock.advance(6)
    cache.get("z")
    assert cache.get("k") is None
    other = drv.cache(flaky, namespace="f", timer=clock)
    assert other.get("k") is None


def test_get_many_with_a_repeated_key_counts_no_miss_for_a_cached_key(
    drv: Twin, clock: FakeClock
) -> None:
    cache = make_cache(drv, clock)
    cache.set("a", 1)
    assert cache.get_many(["a", "a"]) == {"a": 1}
    s = cache.stats()
    assert s.misses == 0
    assert s.hits in (1, 2)
