"""Stampede across processes: ``lease_wait`` makes a miss wait for another process's load.

Two ``Cache`` objects over two backend objects share nothing in process (no
flights, no locks), exactly like two processes; only the server is shared.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cachekit as ck
from cachekit.cache import LEASE_MARK

WAIT = 10.0


@pytest.fixture(params=["redis", "memcached"])
def pair(request: pytest.FixtureRequest) -> Iterator[Callable[..., ck.Cache]]:
    """Factory of caches over separate backend objects, one namespace, the same server."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    namespace = "xp-" + uuid.uuid4().hex[:8]
    made: list[ck.Cache] = []

    def factory(**options: Any) -> ck.Cache:
        cache = ck.Cache(ck.backend_from_url(url), namespace=namespace, ttl=60, **options)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()


def _start_slow_load(a: ck.Cache, result: str) -> tuple[threading.Thread, threading.Event]:
    """Process A: a load that holds its lease until released."""
    release = threading.Event()

    def slow() -> str:
        assert release.wait(WAIT)
        return result

    t = threading.Thread(target=lambda: a.get_or_load("k", slow))
    t.start()
    _wait_for_lease(a)
    return t, release


def _wait_for_lease(cache: ck.Cache) -> None:
    deadline = time.monotonic() + WAIT
    while True:  # until the lease is on the server
        raw = cache.backend.get(cache.full_key("k"))
        if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
            return
        assert time.monotonic() < deadline, "no lease was taken"
        time.sleep(0.001)


def test_a_miss_waits_for_the_other_process_instead_of_loading(
    pair: Callable[..., ck.Cache],
) -> None:
    a, b = pair(), pair(lease_wait=5.0)
    t, release = _start_slow_load(a, "from A")
    polled = threading.Event()
    real_get = b.backend.get

    def watched_get(key: str) -> Any:
        polled.set()
        return real_get(key)

    b.backend.get = watched_get  # type: ignore[method-assign]
    calls: list[int] = []
    got: list[str] = []
    def load_b() -> str:
        calls.append(1)
        return "from B"

    waiter = threading.Thread(target=lambda: got.append(b.get_or_load("k", load_b)))
    try:
        waiter.start()
        assert polled.wait(WAIT)
        release.set()
        waiter.join(WAIT)
    finally:
        release.set()
        t.join(WAIT)
    assert got == ["from A"] and calls == []
    stats = b.stats()
    assert (stats.loads, stats.coalesced) == (0, 1)
    assert a.get("k") == "from A"


def test_without_lease_wait_a_miss_loads_at_once_and_stores_nothing(
    pair: Callable[..., ck.Cache],
) -> None:
    a, b = pair(), pair()  # lease_wait=0: the default
    t, release = _start_slow_load(a, "from A")
    try:
        assert b.get_or_load("k", lambda: "from B") == "from B"
        assert b.stats().loads == 1
        assert b.get("k") is None  # A's lease is still there: B stored nothing over it
    finally:
        release.set()
        t.join(WAIT)
    assert b.get("k") == "from A"


def test_a_waiter_gives_up_after_lease_wait_and_loads_itself(
    pair: Callable[..., ck.Cache],
) -> None:
    a, b = pair(), pair(lease_wait=0.05)
    t, release = _start_slow_load(a, "from A")
    try:
        started = time.perf_counter()
        assert b.get_or_load("k", lambda: "from B") == "from B"
        assert 0.04 < time.perf_counter() - started < 2.0
    finally:
        release.set()
        t.join(WAIT)
    assert a.get("k") == "from A"  # the lease holder still stores its value


def test_a_failed_load_releases_its_lease_so_waiters_do_not_wait_it_out(
    pair: Callable[..., ck.Cache],
) -> None:
    a, b = pair(), pair(lease_wait=5.0)
    release = threading.Event()

    def failing() -> str:
        assert release.wait(WAIT)
        raise RuntimeError("source down")

    def run_a() -> None:
        with pytest.raises(RuntimeError):
            a.get_or_load("k", failing)

    t = threading.Thread(target=run_a)
    t.start()
    _wait_for_lease(a)
    timer = threading.Timer(0.05, release.set)
    timer.start()
    try:
        started = time.perf_counter()
        assert b.get_or_load("k", lambda: "from B") == "from B"
        assert time.perf_counter() - started < 2.0  # far less than lease_wait
    finally:
        release.set()
        timer.join()
        t.join(WAIT)
