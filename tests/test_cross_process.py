"""Stampede across processes: ``lease_wait`` makes a miss wait for another process's load.

Two cache objects over two backend objects share nothing in process (no
flights, no locks), exactly like two processes; only the server is shared.
Every test runs with two ``Cache`` objects (loads in threads) and with two
``AsyncCache`` objects (loads in tasks), through ``tests/twins.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cachekit.cache import LEASE_MARK
from tests.twins import TWIN_KINDS, WAIT, Handle, Twin, open_twin


@pytest.fixture(params=TWIN_KINDS)
def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
    """Each test with ``Cache`` objects, then with ``AsyncCache`` objects."""
    yield from open_twin(request.param)


@pytest.fixture(params=["redis", "memcached"])
def pair(request: pytest.FixtureRequest, drv: Twin) -> Iterator[Callable[..., Any]]:
    """Factory of caches over separate backend objects, one namespace, the same server."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    namespace = "xp-" + uuid.uuid4().hex[:8]
    made: list[Any] = []

    def factory(**options: Any) -> Any:
        cache = drv.cache(drv.backend_from_url(url), namespace=namespace, ttl=60, **options)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()


def _start_slow_load(drv: Twin, a: Any, result: str) -> tuple[Handle, Any]:
    """Process A: a load that holds its lease until released."""
    release = drv.event()
    t = drv.spawn(a.get_or_load, "k", drv.loader(lambda: result, wait_for=release))
    _wait_for_lease(drv, a)
    return t, release


def _wait_for_lease(drv: Twin, cache: Any) -> None:
    deadline = time.monotonic() + WAIT
    while True:  # until the lease is on the server
        raw = drv.run(cache.backend.get(cache.full_key("k")))
        if isinstance(raw, bytes) and raw.startswith(LEASE_MARK):
            return
        assert time.monotonic() < deadline, "no lease was taken"
        drv.sleep(0.001)


def test_a_miss_waits_for_the_other_process_instead_of_loading(
    drv: Twin, pair: Callable[..., Any]
) -> None:
    a, b = pair(), pair(lease_wait=5.0)
    t, release = _start_slow_load(drv, a, "from A")
    polled = drv.event()
    real_get = b.backend.get
    full = b.full_key("k")  # (an AsyncCache reads its namespace version here, on first use)

    def watched_get(key: str) -> Any:
        if key == full:
            polled.set()  # B polls the key A holds the lease of
        return real_get(key)  # the value, or (async) the awaitable of it

    b.backend.get = watched_get
    calls: list[int] = []

    def load_b() -> str:
        calls.append(1)
        return "from B"

    try:
        waiter = drv.spawn(b.get_or_load, "k", drv.loader(load_b))
        assert polled.wait(WAIT)
        release.set()
        got = waiter.result()
    finally:
        release.set()
        t.join(WAIT)
    assert got == "from A" and calls == []
    stats = b.stats()
    assert (stats.loads, stats.coalesced) == (0, 1)
    assert a.get("k") == "from A"


def test_without_lease_wait_a_miss_loads_at_once_and_stores_nothing(
    drv: Twin, pair: Callable[..., Any]
) -> None:
    a, b = pair(), pair()  # lease_wait=0: the default
    t, release = _start_slow_load(drv, a, "from A")
    try:
        assert b.get_or_load("k", drv.loader(lambda: "from B")) == "from B"
        assert b.stats().loads == 1
        assert b.get("k") is None  # A's lease is still there: B stored nothing over it
    finally:
        release.set()
        t.join(WAIT)
    assert b.get("k") == "from A"


def test_a_waiter_gives_up_after_lease_wait_and_loads_itself(
    drv: Twin, pair: Callable[..., Any]
) -> None:
    a, b = pair(), pair(lease_wait=0.05)
    t, release = _start_slow_load(drv, a, "from A")
    try:
        started = time.perf_counter()
        assert b.get_or_load("k", drv.loader(lambda: "from B")) == "from B"
        assert 0.04 < time.perf_counter() - started < 2.0
    finally:
        release.set()
        t.join(WAIT)
    assert a.get("k") == "from A"  # the lease holder still stores its value


def test_a_failed_load_releases_its_lease_so_waiters_do_not_wait_it_out(
    drv: Twin, pair: Callable[..., Any]
) -> None:
    a, b = pair(), pair(lease_wait=5.0)
    release = drv.event()

    def failing() -> str:
        raise RuntimeError("source down")

    t = drv.spawn(a.get_or_load, "k", drv.loader(failing, wait_for=release))
    _wait_for_lease(drv, a)
    stop_timer = drv.later(0.05, release.set)
    try:
        started = time.perf_counter()
        assert b.get_or_load("k", drv.loader(lambda: "from B")) == "from B"
        assert time.perf_counter() - started < 2.0  # far less than lease_wait
    finally:
        release.set()
        stop_timer()
        with pytest.raises(RuntimeError):
            t.result()
