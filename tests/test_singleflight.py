"""Single-flight: one loader per key at a time, errors shared, stale loads not stored (cache.py).

Every test runs with a ``Cache`` (callers are threads) and with an ``AsyncCache``
(callers are tasks on one event loop), through ``tests/twins.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cachekit as ck
from tests.twins import TWIN_KINDS, WAIT, Twin, open_twin


@pytest.fixture(params=TWIN_KINDS)
def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
    """Each test with a ``Cache`` (threads), then with an ``AsyncCache`` (tasks)."""
    yield from open_twin(request.param)


def test_32_callers_on_a_cold_key_run_one_loader(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf")
    calls = []
    release = drv.event()

    def loader() -> dict[str, int]:
        calls.append(1)
        release.set()
        return {"v": 1}

    # hold the load until every other caller is waiting on it
    held = drv.loader(loader, wait_for=lambda: cache.stats().coalesced == 31)
    results, errors = drv.concurrently(32, cache.get_or_load, "k", held)
    assert errors == []
    assert len(calls) == 1
    assert release.is_set()
    assert all(r == {"v": 1} for r in results)
    s = cache.stats()
    assert (s.loads, s.coalesced, s.misses) == (1, 31, 32)
    assert cache.get("k") == {"v": 1}


def test_32_callers_through_the_decorator(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf-dec")
    calls = []

    def slow(x: int) -> int:
        calls.append(x)
        return x * 2

    slow = cache.cached()(drv.loader(slow, wait_for=lambda: cache.stats().coalesced == 31))
    results, errors = drv.concurrently(32, slow, 21)
    assert errors == []
    assert calls == [21]
    assert results == [42] * 32


def test_loader_error_propagates_to_every_waiter_and_is_not_cached(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf-err")
    calls = []

    def loader() -> int:
        calls.append(1)
        raise LookupError("row not found")

    held = drv.loader(loader, wait_for=lambda: cache.stats().coalesced == 15)
    _, errors = drv.concurrently(16, cache.get_or_load, "k", held)
    assert len(calls) == 1
    assert len(errors) == 16
    assert all(isinstance(e, LookupError) and "row not found" in str(e) for e in errors)
    assert cache.get("k", "absent") == "absent"
    s = cache.stats()
    assert (s.loads, s.load_failures) == (0, 1)
    # the next caller loads again
    assert cache.get_or_load("k", drv.loader(lambda: 7)) == 7


def test_different_keys_load_in_parallel(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf-par")
    n = 8
    started = [drv.event() for _ in range(n)]

    def all_running() -> bool:  # only true if all n loaders run at the same time
        return all(e.is_set() for e in started)

    handles = [
        drv.spawn(
            cache.get_or_load,
            f"k{i}",
            drv.loader(lambda i=i: i, started=started[i], wait_for=all_running),
        )
        for i in range(n)
    ]
    assert [h.result() for h in handles] == list(range(n))
    assert cache.stats().loads == n
    assert cache.stats().coalesced == 0


def _load_while(drv: Twin, cache: Any, during: Callable[[], object]) -> Any:
    """Run get_or_load("k") in the background, call ``during`` while its loader runs."""
    started, go_on = drv.event(), drv.event()
    loader = drv.loader(lambda: "loaded (stale)", started=started, wait_for=go_on)
    load = drv.spawn(cache.get_or_load, "k", loader)
    assert started.wait(WAIT)
    during()
    go_on.set()
    return load.result()


def test_a_set_during_the_load_wins_over_the_loaded_value(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf-set")
    result = _load_while(drv, cache, lambda: cache.set("k", "written"))
    assert result == "loaded (stale)"  # the caller gets what it loaded
    assert cache.get("k") == "written"  # but the cache keeps the writer's value


def test_a_delete_during_the_load_prevents_storing_the_loaded_value(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf-del")
    result = _load_while(drv, cache, lambda: cache.delete("k"))
    assert result == "loaded (stale)"
    assert cache.get("k", "absent") == "absent"


def test_a_decorator_write_during_the_load_wins(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf-wt", policy=ck.WriteThrough())

    @cache.writes(key="k")
    def save(value: str) -> str:
        return value

    _load_while(drv, cache, lambda: save("saved"))
    assert cache.get("k") == "saved"


def test_without_a_concurrent_write_the_loaded_value_is_stored(drv: Twin) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="sf-plain")
    _load_while(drv, cache, lambda: None)
    assert cache.get("k") == "loaded (stale)"


# ---------------------------------------------------------------- races with writers


@pytest.mark.parametrize("remote", [False, True], ids=["memory", "memory-as-remote"])
def test_a_caller_arriving_after_a_write_does_not_wait_for_the_voided_load(
    drv: Twin, remote: bool
) -> None:
    class Backend(ck.MemoryBackend):
        local = not remote  # as remote: leases and JSON instead of in-process objects

    cache = drv.cache(Backend(), namespace="race", ttl=60)
    in_loader, release = drv.event(), drv.event()
    # read from the source before the write below committed
    slow_old = drv.loader(lambda: "old", started=in_loader, wait_for=release)
    first = drv.spawn(cache.get_or_load, "k", slow_old)
    try:
        assert in_loader.wait(WAIT)
        cache.delete("k")  # a write committed and invalidated the key meanwhile
        # A reader that starts now must see the write: it loads afresh, and must not
        # be handed the voided load's value (it would block on it, then get "old").
        assert cache.get_or_load("k", drv.loader(lambda: "new")) == "new"
        assert cache.get("k") == "new"
    finally:
        release.set()
        first.join(WAIT)
    assert cache.get("k") == "new"  # the voided load stored nothing over it


@pytest.mark.parametrize("policy", [ck.WriteThrough(), ck.CacheAside()], ids=["wt", "ca"])
def test_overlapping_writers_leave_no_older_value_behind(drv: Twin, policy: ck.Policy) -> None:
    cache = drv.cache(ck.MemoryBackend(), namespace="writers", policy=policy.with_ttl(60))
    in_write, release = drv.event(), drv.event()

    def save(uid: int, name: str) -> str:
        return name

    # two writers of one key: the slow one holds its write until released
    save_slow = cache.writes(key="user:{uid}")(drv.loader(save, started=in_write, wait_for=release))
    save = cache.writes(key="user:{uid}")(save)

    # A writes first but its cache update comes last: storing A would keep the older value
    slow_writer = drv.spawn(save_slow, 1, "A")
    try:
        assert in_write.wait(WAIT)
        assert save(1, "B") == "B"
        assert cache.get("user:1") is None  # overlapped: invalidated, not stored
    finally:
        release.set()
        slow_writer.join(WAIT)
    assert cache.get("user:1") is None  # A did not store its possibly older value
    assert save(1, "C") == "C"  # no overlap: stored (write-through) or invalidated
    assert cache.get("user:1") == ("C" if policy.stores_on_write else None)
