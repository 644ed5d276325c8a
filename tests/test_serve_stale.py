"""Serve-stale (``stale_ttl``): off by default; when on, a failing backend or loader is
answered with the last value this process saw, for at most ``stale_ttl`` seconds.

Every test runs with a ``Cache`` and with an ``AsyncCache`` (``tests/twins.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import cachekit as ck

from .conftest import FakeClock
from .test_cache import FlakyBackend
from .twins import TWIN_KINDS, Twin, open_twin


@pytest.fixture(params=TWIN_KINDS)
def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
    """Each test with a ``Cache``, then with an ``AsyncCache``."""
    yield from open_twin(request.param)


def stale_cache(drv: Twin, flaky: FlakyBackend, clock: FakeClock, **opts: object) -> Any:
    """A cache of the driver's kind over ``flaky``."""
    breaker = ck.CircuitBreaker(3, 5.0, timer=clock)
    return drv.cache(flaky, namespace="s", breaker=breaker, timer=clock, **opts)


@pytest.fixture
def flaky(clock: FakeClock) -> FlakyBackend:
    return FlakyBackend(clock)


def test_off_by_default_a_down_backend_gives_the_default(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = stale_cache(drv, flaky, clock)
    cache.set("k", "v1")
    assert cache.get("k") == "v1"
    flaky.down = True
    assert cache.get("k", "dflt") == "dflt"
    assert cache.stats().stale_served == 0


def test_a_down_backend_serves_the_last_value_within_stale_ttl(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = stale_cache(drv, flaky, clock, stale_ttl=30.0)
    cache.set("k", {"n": 1})
    assert cache.get("k") == {"n": 1}
    flaky.down = True
    assert cache.get("k", "dflt") == {"n": 1}  # backend error: the last value
    for _ in range(5):  # breaker open: still served, without touching the backend
        assert cache.get("k", "dflt") == {"n": 1}
    assert cache.get("never-seen", "dflt") == "dflt"
    clock.advance(31)  # older than stale_ttl: no longer served
    assert cache.get("k", "dflt") == "dflt"
    stats = cache.stats()
    assert stats.stale_served == 6
    assert stats.circuit_open


def test_an_invalidated_key_is_never_served_stale(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = stale_cache(drv, flaky, clock, stale_ttl=30.0)
    cache.set("k", "old")
    assert cache.get("k") == "old"
    flaky.down = True
    cache.delete("k")  # the source changed; the delete could not reach the backend
    assert cache.get("k", "dflt") == "dflt"
    cache.set("j", "new")  # a write during the outage is the newest value we know
    assert cache.get("j", "dflt") == "new"


def test_a_failing_loader_is_answered_with_the_last_value(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = stale_cache(drv, flaky, clock, stale_ttl=60.0, ttl=10)
    assert cache.get_or_load("k", drv.loader(lambda: "v1")) == "v1"
    clock.advance(11)  # the entry expired: the next read loads again

    def source_down() -> str:
        raise ConnectionError("database is down")

    assert cache.get_or_load("k", drv.loader(source_down)) == "v1"
    stats = cache.stats()
    assert (stats.load_failures, stats.stale_served) == (1, 1)
    clock.advance(60)  # now too old: the loader's error reaches the caller
    with pytest.raises(ConnectionError):
        cache.get_or_load("k", drv.loader(source_down))


def test_clear_forgets_the_remembered_values(
    drv: Twin, flaky: FlakyBackend, clock: FakeClock
) -> None:
    cache = stale_cache(drv, flaky, clock, stale_ttl=30.0)
    cache.set("k", "v")
    cache.clear()
    flaky.down = True
    assert cache.get("k", "dflt") == "dflt"


def test_stale_ttl_is_validated(drv: Twin) -> None:
    with pytest.raises(ck.ConfigurationError):
        drv.cache(ck.MemoryBackend(), stale_ttl=-1)
