"""A repository's (and track()'s) TTL follows Cache's rule: inherit, or refuse a conflict."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository, Tracker, track

from .conftest import Db, User


@pytest.fixture
def hooks() -> Iterator[list[Tracker]]:
    made: list[Tracker] = []
    yield made
    for h in made:
        h.remove()


def _server_ttl(repo: CachedRepository[User], redis_url: str, pk: int) -> float:
    """Seconds Redis says the cached row has left to live."""
    client = redis.Redis.from_url(redis_url)
    try:
        full = repo.binding.rows.full_key(repo.binding.key((pk,)))
        return int(client.pttl(full)) / 1000.0
    finally:
        client.close()


def test_policy_without_ttl_inherits_the_cache_ttl(
    db: Db, caches: Callable[..., ck.Cache], redis_url: str, hooks: list[Tracker]
) -> None:
    cache = caches("redis", ttl=5)
    repo = CachedRepository(User, db.Session, cache, policy=ck.WriteThrough())
    assert repo.policy.ttl.seconds == 5 and repo.policy.stores_on_write
    repo.add(User(id=1, name="written"))  # write-through store
    assert 0 < _server_ttl(repo, redis_url, 1) <= 5
    with db.Session.begin() as s:
        s.add(User(id=2, name="loaded"))
    assert repo.get(2) is not None  # stored on a miss
    assert 0 < _server_ttl(repo, redis_url, 2) <= 5
    repo.update(2, name="updated")
    assert 0 < _server_ttl(repo, redis_url, 2) <= 5

    # track() follows the same rule
    hooks.append(track(db.Session, cache, models=[User], policy=ck.WriteThrough()))
    assert hooks[0].ttl.seconds == 5
    with db.Session.begin() as s:
        s.add(User(id=3, name="tracked"))
    assert 0 < _server_ttl(repo, redis_url, 3) <= 5


def test_conflicting_ttls_raise(db: Db, caches: Callable[..., ck.Cache]) -> None:
    with pytest.raises(ck.ConfigurationError):  # the rule being copied
        ck.Cache(ck.MemoryBackend(), ttl=5, policy=ck.WriteThrough(ttl=10))
    cache = caches("memory", ttl=5)
    with pytest.raises(ck.ConfigurationError):
        CachedRepository(User, db.Session, cache, policy=ck.WriteThrough(ttl=10))
    with pytest.raises(ck.ConfigurationError):
        track(db.Session, cache, models=[User], policy=ck.WriteThrough(ttl=10))
    with pytest.raises(ck.ConfigurationError):  # the policy's TTL and ttl= disagree
        CachedRepository(User, db.Session, caches("memory"), policy=ck.WriteThrough(10), ttl=20)


def test_agreeing_and_overriding_ttls(db: Db, caches: Callable[..., ck.Cache]) -> None:
    five = caches("memory", ttl=5)
    same = CachedRepository(User, db.Session, five, policy=ck.WriteThrough(ttl=5))
    assert same.policy.ttl.seconds == 5
    # no explicit cache TTL: an explicit policy TTL is used as given
    plain = caches("memory")
    ten = CachedRepository(User, db.Session, plain, policy=ck.CacheAside(ttl=10))
    assert ten.policy.ttl.seconds == 10 and not ten.policy.stores_on_write
    # ttl= overrides the cache's TTL for this model, with or without a policy
    assert CachedRepository(User, db.Session, five, ttl=60)._ttl.seconds == 60
    over = CachedRepository(User, db.Session, five, policy=ck.WriteThrough(), ttl=60)
    assert over._ttl.seconds == 60 and over.policy.ttl.seconds == 60
    # no policy: the cache's own, TTL included
    default = CachedRepository(User, db.Session, five)
    assert default.policy is five.policy and default._ttl.seconds == 5
    jittered = ck.TTL(5, jitter=0.1)
    inherit = CachedRepository(
        User, db.Session, caches("memory", ttl=jittered), policy=ck.WriteThrough()
    )
    assert inherit.policy.ttl == jittered
