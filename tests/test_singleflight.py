"""Single-flight: one loader per key at a time, errors shared, stale loads not stored (cache.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import cachekit as ck

WAIT = 10.0  # seconds; a bound for waits that normally take milliseconds


def wait_until(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.001)


def run_threads(n: int, target: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert not any(t.is_alive() for t in threads), "threads did not finish"
    return results, errors


def test_32_threads_on_a_cold_key_run_one_loader() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf")
    calls = []
    release = threading.Event()

    def loader() -> dict[str, int]:
        calls.append(threading.get_ident())
        # hold the load until every other caller is waiting on it
        wait_until(lambda: cache.stats().coalesced == 31)
        release.set()
        return {"v": 1}

    results, errors = run_threads(32, lambda i: cache.get_or_load("k", loader))
    assert errors == []
    assert len(calls) == 1
    assert release.is_set()
    assert all(r == {"v": 1} for r in results)
    s = cache.stats()
    assert (s.loads, s.coalesced, s.misses) == (1, 31, 32)
    assert cache.get("k") == {"v": 1}


def test_32_threads_through_the_decorator() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf-dec")
    calls = []

    @cache.cached()
    def slow(x: int) -> int:
        calls.append(x)
        wait_until(lambda: cache.stats().coalesced == 31)
        return x * 2

    results, errors = run_threads(32, lambda i: slow(21))
    assert errors == []
    assert calls == [21]
    assert results == [42] * 32


def test_loader_error_propagates_to_every_waiter_and_is_not_cached() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf-err")
    calls = []

    def loader() -> int:
        calls.append(1)
        wait_until(lambda: cache.stats().coalesced == 15)
        raise LookupError("row not found")

    _, errors = run_threads(16, lambda i: cache.get_or_load("k", loader))
    assert len(calls) == 1
    assert len(errors) == 16
    assert all(isinstance(e, LookupError) and "row not found" in str(e) for e in errors)
    assert cache.get("k", "absent") == "absent"
    s = cache.stats()
    assert (s.loads, s.load_failures) == (0, 1)
    # the next caller loads again
    assert cache.get_or_load("k", lambda: 7) == 7


def test_different_keys_load_in_parallel() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf-par")
    n = 8
    barrier = threading.Barrier(n, timeout=WAIT)

    def target(i: int) -> int:
        def loader() -> int:
            barrier.wait()  # only passes if all n loaders run at the same time
            return i

        return cache.get_or_load(f"k{i}", loader)

    results, errors = run_threads(n, target)
    assert errors == []
    assert results == list(range(n))
    assert cache.stats().loads == n
    assert cache.stats().coalesced == 0


def _load_while(cache: ck.Cache, during: Callable[[], None]) -> Any:
    """Run get_or_load("k") in a thread, call ``during`` while its loader runs; return result."""
    started, go_on = threading.Event(), threading.Event()
    out: list[Any] = []

    def loader() -> str:
        started.set()
        assert go_on.wait(WAIT)
        return "loaded (stale)"

    t = threading.Thread(target=lambda: out.append(cache.get_or_load("k", loader)))
    t.start()
    assert started.wait(WAIT)
    during()
    go_on.set()
    t.join(WAIT)
    assert not t.is_alive()
    return out[0]


def test_a_set_during_the_load_wins_over_the_loaded_value() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf-set")
    result = _load_while(cache, lambda: cache.set("k", "written"))
    assert result == "loaded (stale)"  # the caller gets what it loaded
    assert cache.get("k") == "written"  # but the cache keeps the writer's value


def test_a_delete_during_the_load_prevents_storing_the_loaded_value() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf-del")
    result = _load_while(cache, lambda: cache.delete("k"))
    assert result == "loaded (stale)"
    assert cache.get("k", "absent") == "absent"


def test_a_decorator_write_during_the_load_wins() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf-wt", policy=ck.WriteThrough())

    @cache.writes(key="k")
    def save(value: str) -> str:
        return value

    _load_while(cache, lambda: save("saved"))
    assert cache.get("k") == "saved"


def test_without_a_concurrent_write_the_loaded_value_is_stored() -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="sf-plain")
    _load_while(cache, lambda: None)
    assert cache.get("k") == "loaded (stale)"


# ---------------------------------------------------------------- races with writers


@pytest.mark.parametrize("remote", [False, True], ids=["memory", "memory-as-remote"])
def test_a_caller_arriving_after_a_write_does_not_wait_for_the_voided_load(remote: bool) -> None:
    class Backend(ck.MemoryBackend):
        local = not remote  # as remote: leases and JSON instead of in-process objects

    cache = ck.Cache(Backend(), namespace="race", ttl=60)
    in_loader, release = threading.Event(), threading.Event()

    def slow_old() -> str:
        in_loader.set()
        assert release.wait(WAIT)
        return "old"  # read from the source before the write below committed

    first = threading.Thread(target=lambda: cache.get_or_load("k", slow_old))
    first.start()
    try:
        assert in_loader.wait(WAIT)
        cache.delete("k")  # a write committed and invalidated the key meanwhile
        # A reader that starts now must see the write: it loads afresh, and must not
        # be handed the voided load's value (it would block on it, then get "old").
        assert cache.get_or_load("k", lambda: "new") == "new"
        assert cache.get("k") == "new"
    finally:
        release.set()
        first.join(WAIT)
    assert cache.get("k") == "new"  # the voided load stored nothing over it


@pytest.mark.parametrize("policy", [ck.WriteThrough(), ck.CacheAside()], ids=["wt", "ca"])
def test_overlapping_writers_leave_no_older_value_behind(policy: ck.Policy) -> None:
    cache = ck.Cache(ck.MemoryBackend(), namespace="writers", policy=policy.with_ttl(60))
    in_write, release = threading.Event(), threading.Event()

    @cache.writes(key="user:{uid}")
    def save(uid: int, name: str, slow: bool = False) -> str:
        if slow:
            in_write.set()
            assert release.wait(WAIT)
        return name

    # A writes first but its cache update comes last: storing A would keep the older value
    slow_writer = threading.Thread(target=lambda: save(1, "A", slow=True))
    slow_writer.start()
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
