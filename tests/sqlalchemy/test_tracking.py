"""track(): ordinary session writes and ORM bulk statements reach the cache after commit only.

Also read replicas: misses load from the readers, writes go to the writer, and
write-through gives read-your-write while a replica lags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository, Tracker, track

from .conftest import Db, User, make_db

MISSING = object()
POLICIES = [ck.WriteThrough(), ck.CacheAside()]


@pytest.fixture
def hooks() -> Iterator[list[Tracker]]:
    made: list[Tracker] = []
    yield made
    for h in made:
        h.remove()


def _setup(
    db: Db, cache: ck.Cache, policy: ck.Policy, hooks: list[Tracker], n: int = 5
) -> CachedRepository[User]:
    with db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in range(1, n + 1)])
    repo = CachedRepository(User, db.Session, cache, policy=policy)
    repo.get_many(range(1, n + 1))  # all cached
    hooks.append(track(db.Session, cache, models=[User], policy=policy))
    return repo


def _cached(repo: CachedRepository[User], pk: int) -> Any:
    return repo.binding.rows.get(repo.binding.key((pk,)), MISSING)


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_session_writes_apply_after_commit(
    db: Db,
    caches: Callable[..., ck.Cache],
    cache_kind: str,
    policy: ck.Policy,
    hooks: list[Tracker],
) -> None:
    repo = _setup(db, caches(cache_kind), policy, hooks)
    with db.Session() as s:
        u1 = s.get(User, 1)
        assert u1 is not None
        u1.name = "renamed"
        s.add(User(id=6, name="u6"))
        u2 = s.get(User, 2)
        s.delete(u2)
        s.flush()
        assert _cached(repo, 1)["name"] == "u1"  # flushed, not committed: cache untouched
        s.commit()
    if policy.stores_on_write:
        assert _cached(repo, 1)["name"] == "renamed"
        assert _cached(repo, 6)["name"] == "u6"
        assert _cached(repo, 2) is None  # deleted: cached as absent
    else:
        assert _cached(repo, 1) is MISSING and _cached(repo, 2) is MISSING
    assert _cached(repo, 3)["name"] == "u3"  # untouched rows stay cached
    got1, got6 = repo.get(1), repo.get(6)
    assert got1 is not None and got1.name == "renamed"
    assert got6 is not None and got6.name == "u6"
    assert repo.get(2) is None


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_rollback_and_savepoints(
    db: Db,
    caches: Callable[..., ck.Cache],
    cache_kind: str,
    policy: ck.Policy,
    hooks: list[Tracker],
) -> None:
    repo = _setup(db, caches(cache_kind), policy, hooks)
    before = {pk: _cached(repo, pk) for pk in range(1, 6)}
    with db.Session() as s:  # flushed, then rolled back
        obj = s.get(User, 1)
        assert obj is not None
        obj.name = "never"
        s.flush()
        s.rollback()
    with db.Session() as s:  # a constraint violation on the second flush
        obj = s.get(User, 2)
        assert obj is not None
        obj.name = "changed"
        s.flush()
        s.add(User(id=9, name="u3"))  # duplicate name
        with pytest.raises(sa.exc.IntegrityError):
            s.commit()
    with db.Session() as s:  # closed without commit
        obj = s.get(User, 3)
        assert obj is not None
        obj.name = "abandoned"
        s.flush()
    assert {pk: _cached(repo, pk) for pk in range(1, 6)} == before

    with db.Session() as s:  # savepoint rolled back, outer committed
        a = s.get(User, 4)
        assert a is not None
        a.name = "kept"
        nested = s.begin_nested()
        b = s.get(User, 5)
        assert b is not None
        b.name = "rolled-back"
        s.flush()
        nested.rollback()
        s.commit()
    got4, got5 = repo.get(4), repo.get(5)
    assert got4 is not None and got4.name == "kept"
    assert got5 is not None and got5.name == "u5"
    assert _cached(repo, 5) == before[5]


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_bulk_update_and_delete(
    db: Db,
    caches: Callable[..., ck.Cache],
    cache_kind: str,
    policy: ck.Policy,
    hooks: list[Tracker],
) -> None:
    repo = _setup(db, caches(cache_kind), policy, hooks)
    with db.Session() as s:  # WHERE pk = literal: that key only
        s.execute(sa.update(User).where(User.id == 1).values(name="bulk1"))
        assert _cached(repo, 1)["name"] == "u1"  # not before commit
        s.commit()
    assert _cached(repo, 1) is MISSING and _cached(repo, 2) is not MISSING
    with db.Session() as s:  # WHERE pk IN (...)
        s.execute(sa.delete(User).where(User.id.in_([2, 3])))
        s.commit()
    assert _cached(repo, 2) is MISSING and _cached(repo, 3) is MISSING
    assert _cached(repo, 4) is not MISSING
    with db.Session() as s:  # bulk UPDATE by primary key (executemany)
        s.execute(sa.update(User), [{"id": 4, "name": "b4"}])
        s.commit()
    assert _cached(repo, 4) is MISSING and _cached(repo, 5) is not MISSING
    with db.Session() as s:  # rolled back: nothing happens
        s.execute(sa.update(User).where(User.name.like("u%")).values(active=False))
        s.rollback()
    assert _cached(repo, 5) is not MISSING
    with db.Session() as s:  # arbitrary WHERE: the whole model is dropped
        s.execute(sa.update(User).where(User.name.like("u%")).values(name="all"))
        s.commit()
    assert _cached(repo, 5) is MISSING
    got1, got4, got5 = repo.get(1), repo.get(4), repo.get(5)
    assert got1 is not None and got1.name == "bulk1"
    assert got4 is not None and got4.name == "b4"
    assert got5 is not None and got5.name == "all"
    assert repo.get(2) is None and repo.get(3) is None


def test_cached_queries_are_invalidated_by_tracked_writes(
    db: Db, caches: Callable[..., ck.Cache], hooks: list[Tracker]
) -> None:
    repo = _setup(db, caches("memory"), ck.WriteThrough(), hooks, n=3)
    stmt = sa.select(User).where(User.active).order_by(User.id)
    assert [u.id for u in repo.query("active", stmt)] == [1, 2, 3]
    n = db.count()
    assert [u.id for u in repo.query("active", stmt)] == [1, 2, 3] and db.count() == n
    with db.Session.begin() as s:
        obj = s.get(User, 2)
        assert obj is not None
        obj.active = False
    assert [u.id for u in repo.query("active", stmt)] == [1, 3]
    with db.Session.begin() as s:
        s.execute(sa.update(User).where(User.id == 2).values(active=True))
    assert [u.id for u in repo.query("active", stmt)] == [1, 2, 3]
    with db.Session.begin() as s:
        obj = s.get(User, 1)
        s.delete(obj)
    assert [u.id for u in repo.query("active", stmt)] == [2, 3]


# ---------------------------------------------------------------- read replicas


@pytest.fixture
def primary_and_replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Db, Db, Db]]:
    dbs = [make_db("sqlite", request, tmp_path, name) for name in ("primary", "r1", "r2")]
    for d in dbs:
        with d.Session.begin() as s:
            s.add_all([User(id=i, name=f"u{i}") for i in range(1, 5)])
    yield dbs[0], dbs[1], dbs[2]
    for d in dbs:
        d.engine.dispose()


def _replicate(primary: Db, replica: Db) -> None:
    """The replica catches up: copy every row from the primary."""
    with primary.Session() as s:
        rows = [(u.id, u.name, u.active) for u in s.scalars(sa.select(User))]
    with replica.Session.begin() as s:
        s.execute(sa.delete(User))
        s.add_all([User(id=i, name=n, active=a) for i, n, a in rows])


@pytest.mark.parametrize("cache_kind", ["memory", "redis", "memcached"])
def test_replica_lag_read_your_write(
    primary_and_replicas: tuple[Db, Db, Db], caches: Callable[..., ck.Cache], cache_kind: str
) -> None:
    primary, r1, r2 = primary_and_replicas
    repo = CachedRepository(
        User,
        primary.Session,
        caches(cache_kind),
        policy=ck.WriteThrough(),
        readers=[r1.Session, r2.Session],
    )
    p0, a0, b0 = primary.count(), r1.count(), r2.count()
    assert repo.get(1) is not None and repo.get(2) is not None
    assert (primary.count(), r1.count(), r2.count()) == (p0, a0 + 1, b0 + 1)  # round-robin

    repo.update(3, name="new3")  # to the primary only; the replicas lag
    repo.add(User(id=5, name="u5"))
    got3, got5 = repo.get(3), repo.get(5)
    assert got3 is not None and got3.name == "new3"  # read-your-write, from the cache
    assert got5 is not None and got5.name == "u5"
    with r1.Session() as s:
        lagging = s.get(User, 3)
        assert lagging is not None and lagging.name == "u3" and s.get(User, 5) is None
    assert repo.delete(4) and repo.get(4) is None  # the replica still has it
    _replicate(primary, r1)
    _replicate(primary, r2)
    got3 = repo.get(3)
    assert got3 is not None and got3.name == "new3"


def test_replica_lag_under_cache_aside_is_bounded_by_the_ttl(
    primary_and_replicas: tuple[Db, Db, Db], caches: Callable[..., ck.Cache]
) -> None:
    """The documented limit: cache-aside invalidates; the next miss reads the lagging replica."""
    primary, r1, _ = primary_and_replicas
    repo = CachedRepository(
        User, primary.Session, caches("memory"), policy=ck.CacheAside(), readers=[r1.Session]
    )
    repo.update(1, name="new1")
    stale = repo.get(1)
    assert stale is not None and stale.name == "u1"
    _replicate(primary, r1)
    repo.invalidate(1)  # or the TTL passes
    fresh = repo.get(1)
    assert fresh is not None and fresh.name == "new1"
