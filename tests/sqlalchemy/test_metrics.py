"""register_prometheus(repo): a repository's own counters, scraped from a real registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

import cachekit as ck
from cachekit.metrics import register_prometheus, unregister_prometheus
from cachekit.sqlalchemy import CachedRepository
from tests.test_metrics import scrape, value

from .conftest import Db, User


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_repository_counters_are_exported_under_its_own_label(
    db: Db, caches: Callable[..., ck.Cache], cache_kind: str
) -> None:
    with db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in range(1, 6)])
    cache = caches(cache_kind, ttl=60)
    repo = CachedRepository(User, db.Session, cache, policy=ck.WriteThrough())
    registry = CollectorRegistry()
    register_prometheus(repo, registry)
    register_prometheus(cache, registry)  # the parent cache is a series of its own
    label = f"{cache.namespace}/ck_users"
    backend = "memory" if cache_kind == "memory" else "redis"

    for pk in (1, 2, 3, 1, 2, 1, 99):  # 4 misses (1, 2, 3, 99), 3 hits
        repo.get(pk)
    repo.get_many([1, 2, 4, 5])  # 2 hits, 2 misses, one load of both
    repo.update(1, name="x")
    repo.get(1)  # hit: written through

    samples = scrape(registry)
    st = repo.stats()
    assert (st.hits, st.misses) == (6, 6)
    for family, expected in (
        ("cachekit_hits_total", st.hits),
        ("cachekit_misses_total", st.misses),
        ("cachekit_loads_total", st.loads),
    ):
        assert value(samples, family, cache=label, backend=backend) == expected, family
    assert st.loads >= 4
    count = value(samples, "cachekit_load_duration_seconds_count", cache=label, backend=backend)
    assert count == st.loads
    # the parent cache saw none of it: its own series reads 0
    assert value(samples, "cachekit_hits_total", cache=cache.namespace, backend=backend) == 0

    with pytest.raises(ck.ConfigurationError, match="already registered"):
        register_prometheus(repo, registry)
    twin = CachedRepository(User, db.Session, cache)  # same model and cache: same counters
    with pytest.raises(ck.ConfigurationError, match="already registered"):
        register_prometheus(twin, registry)

    assert unregister_prometheus(repo, registry) is True
    assert unregister_prometheus(repo, registry) is False
    samples = scrape(registry)
    assert not [k for k in samples if ("cache", label) in k[1]]
    register_prometheus(repo, registry)  # registers again after unregistering
    assert value(scrape(registry), "cachekit_hits_total", cache=label, backend=backend) == 6
    assert unregister_prometheus(repo, registry) and unregister_prometheus(cache, registry)
