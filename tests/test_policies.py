"""Policies and TTLs: validation, jitter, as_ttl, Cache(ttl=, policy=) (policies.py).

The tests that build a cache run with a ``Cache`` and with an ``AsyncCache``
(``tests/twins.py``); the others involve no cache.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest

import cachekit as ck
from cachekit.policies import DEFAULT_TTL, as_ttl
from tests.twins import TWIN_KINDS, Twin, open_twin


@pytest.fixture(params=TWIN_KINDS)
def drv(request: pytest.FixtureRequest) -> Iterator[Twin]:
    """Each cache test with a ``Cache``, then with an ``AsyncCache``."""
    yield from open_twin(request.param)


@pytest.mark.parametrize("seconds", [0, 1, 2.5, 10**6, None])
def test_valid_ttls(seconds: float | None) -> None:
    assert ck.TTL(seconds).seconds == seconds
    assert ck.TTL(seconds).sample() == seconds


@pytest.mark.parametrize("seconds", [-1, -0.001, "10", [1], float("nan"), True])
def test_invalid_ttl_seconds(seconds: object) -> None:
    with pytest.raises(ck.ConfigurationError):
        ck.TTL(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("jitter", [-0.1, 1.0, 1.5, float("nan")])
def test_invalid_jitter(jitter: float) -> None:
    with pytest.raises(ck.ConfigurationError):
        ck.TTL(10, jitter=jitter)


def test_jitter_stays_within_bounds_and_spreads() -> None:
    ttl = ck.TTL(100, jitter=0.1, _rng=random.Random(7))
    samples = [ttl.sample() for _ in range(5000)]
    assert all(s is not None and 90 <= s <= 110 for s in samples)
    values = [s for s in samples if s is not None]
    assert min(values) < 91 and max(values) > 109  # really uniform over the range
    assert 99 < sum(values) / len(values) < 101
    assert len(set(values)) > 4000


def test_zero_jitter_and_no_expiry_are_exact() -> None:
    assert {ck.TTL(30).sample() for _ in range(100)} == {30}
    assert ck.NO_EXPIRY.seconds is None
    assert ck.TTL(None, jitter=0.5).sample() is None


def test_as_ttl() -> None:
    default = ck.TTL(7)
    assert as_ttl(None, default) is default
    t = ck.TTL(5, jitter=0.2)
    assert as_ttl(t, default) is t
    assert as_ttl(3, default) == ck.TTL(3.0)
    assert as_ttl(2.5, default) == ck.TTL(2.5)
    for bad in (True, "5", [5], -1):
        with pytest.raises(ck.ConfigurationError):
            as_ttl(bad, default)  # type: ignore[arg-type]


def test_ttl_is_a_frozen_value() -> None:
    assert ck.TTL(5) == ck.TTL(5.0)
    assert ck.TTL(5) != ck.TTL(5, jitter=0.1)
    with pytest.raises(AttributeError):
        ck.TTL(5).seconds = 6  # type: ignore[misc]


def test_policies() -> None:
    assert ck.CacheAside().stores_on_write is False
    assert ck.WriteThrough().stores_on_write is True
    assert ck.CacheAside().ttl == DEFAULT_TTL
    assert ck.WriteThrough(ttl=60).ttl == ck.TTL(60)
    assert ck.CacheAside(ttl=ck.TTL(60, jitter=0.1)).ttl.jitter == 0.1
    assert "WriteThrough" in repr(ck.WriteThrough(ttl=5))


def test_cache_combines_ttl_and_policy(drv: Twin) -> None:
    b = ck.MemoryBackend()
    assert drv.cache(b, namespace="a").policy.ttl == DEFAULT_TTL
    c = drv.cache(b, namespace="b", ttl=60)
    assert isinstance(c.policy, ck.CacheAside)
    assert c.policy.ttl == ck.TTL(60)
    c = drv.cache(b, namespace="c", ttl=60, policy=ck.WriteThrough())
    assert isinstance(c.policy, ck.WriteThrough)
    assert c.policy.ttl == ck.TTL(60)
    c = drv.cache(b, namespace="d", policy=ck.WriteThrough(ttl=ck.TTL(30, jitter=0.2)))
    assert c.policy.ttl == ck.TTL(30, jitter=0.2)
    # the same TTL given twice is not a conflict
    c = drv.cache(b, namespace="e", ttl=30, policy=ck.CacheAside(ttl=30))
    assert c.policy.ttl == ck.TTL(30)
    c = drv.cache(b, namespace="f", ttl=ck.NO_EXPIRY)
    assert c.policy.ttl.seconds is None


def test_conflicting_ttls_raise(drv: Twin) -> None:
    b = ck.MemoryBackend()
    with pytest.raises(ck.ConfigurationError, match="conflicts"):
        drv.cache(b, ttl=30, policy=ck.WriteThrough(ttl=60))
    with pytest.raises(ck.ConfigurationError):
        drv.cache(b, ttl=ck.TTL(60, jitter=0.1), policy=ck.CacheAside(ttl=60))
    with pytest.raises(ck.ConfigurationError):
        drv.cache(b, ttl="soon")


def test_default_ttl_is_finite() -> None:
    assert DEFAULT_TTL.seconds is not None
    assert not math.isinf(DEFAULT_TTL.seconds)
