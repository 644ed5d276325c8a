"""AsyncCachedRepository on SQLite (aiosqlite) and PostgreSQL (psycopg async), memory and Redis.

Each test runs its coroutine with ``asyncio.run``; the async engine and cache
are made inside it (their connections belong to that loop). The tables are
made by the sync fixtures of ``conftest.py``, whose ``Db`` also gives a sync
session over the same database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_only

import cachekit as ck
from cachekit.aio import AsyncCache
from cachekit.backends.aio.memory import AsyncMemoryBackend
from cachekit.sqlalchemy import AsyncCachedRepository, CachedRepository, track

from .conftest import Base, Db, Doc, Pair, User, make_db

T = TypeVar("T")
MISSING = object()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Target:
    """One database under test: its sync ``Db`` and how to reach it asynchronously."""

    db: Db
    url: str
    connect_args: dict[str, Any]


def _target(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Target:
    db = make_db(kind, request, tmp_path, name)
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.sqlite'}"
        return Target(db, url, {"timeout": 30})
    schema = request.getfixturevalue("pg_schema")
    url = str(request.getfixturevalue("postgres_url"))
    return Target(db, url, {"options": f"-csearch_path={schema}"})


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Each database kind in turn, with fresh tables."""
    t = _target(str(request.param), request, tmp_path, "db")
    yield t
    with t.db.engine.begin() as conn:
        Base.metadata.drop_all(conn)
    t.db.engine.dispose()


@dataclass
class Env:
    """An async engine over a target, its session factory, and the SELECTs it sent."""

    engine: AsyncEngine
    Session: async_sessionmaker[Any]
    selects: list[str] = field(default_factory=list)

    def count(self) -> int:
        return len(self.selects)


@asynccontextmanager
async def opened(t: Target) -> AsyncIterator[Env]:
    engine = create_async_engine(t.url, connect_args=t.connect_args)
    env = Env(engine, async_sessionmaker(engine))

    @sa.event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            env.selects.append(statement)

    try:
        yield env
    finally:
        await engine.dispose()


@dataclass
class Caches:
    """A sync and an async cache over one store and namespace (they share entries)."""

    kind: str
    url: str
    namespace: str = field(default_factory=lambda: "asa-" + uuid.uuid4().hex[:12])
    memory: ck.MemoryBackend = field(default_factory=ck.MemoryBackend)

    def sync(self, **options: Any) -> ck.Cache:
        if self.kind == "memory":
            return ck.Cache(self.memory, namespace=self.namespace, **options)
        return ck.Cache.from_url(self.url, namespace=self.namespace, **options)

    def aio(self, **options: Any) -> AsyncCache:
        if self.kind == "memory":
            backend = AsyncMemoryBackend(self.memory)
            return AsyncCache(backend, namespace=self.namespace, **options)
        return AsyncCache.from_url(self.url, namespace=self.namespace, **options)


@pytest.fixture(params=["memory", "redis"])
def caches(request: pytest.FixtureRequest) -> Caches:
    kind = str(request.param)
    url = "" if kind == "memory" else str(request.getfixturevalue("redis_url"))
    return Caches(kind, url)


@asynccontextmanager
async def repository(
    t: Target, caches: Caches, model: type[Any] = User, **options: Any
) -> AsyncIterator[tuple[AsyncCachedRepository[Any], Env]]:
    async with opened(t) as env:
        acache = caches.aio()
        try:
            yield AsyncCachedRepository(model, env.Session, acache, **options), env
        finally:
            await acache.aclose()


POLICIES = [ck.WriteThrough(), ck.CacheAside()]


# ---------------------------------------------------------------- reads


def test_round_trip_and_hits_issue_no_sql(target: Target, caches: Caches) -> None:
    async def main() -> None:
        async with repository(target, caches, policy=ck.WriteThrough()) as (users, env):
            await users.add(User(id=1, name="ann"))
            await users.add(User(id=2, name="bob", active=False))
            await users.invalidate(1)
            before = env.count()
            got = await users.get(1)  # miss: one SELECT
            assert got is not None and (got.id, got.name, got.active) == (1, "ann", True)
            assert env.count() == before + 1
            before = env.count()
            again = await users.get(1)
            many = await users.get_many([1, 2])
            assert again is not None and again.name == "ann" and again is not got
            assert {pk: u.name for pk, u in many.items()} == {1: "ann", 2: "bob"}
            assert many[2].active is False
            assert env.count() == before, env.selects[before:]  # hits: no SQL at all
            assert sa.inspect(again).detached
            # an absent row is remembered as absent
            assert await users.get(3) is None
            before = env.count()
            assert await users.get(3) is None and await users.get_many([3]) == {}
            assert env.count() == before
            stats = users.stats()
            assert stats.hits >= 4 and stats.misses >= 2

    run(main())


def test_get_many_loads_every_miss_with_one_select(target: Target, caches: Caches) -> None:
    with target.db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in range(1, 11)])

    async def main() -> None:
        async with repository(target, caches) as (users, env):
            assert (await users.get(4)) is not None
            before = env.count()
            found = await users.get_many(range(1, 13))
            assert sorted(found) == list(range(1, 11))
            assert env.count() == before + 1  # the nine cold rows (and two absent) at once

    run(main())


def test_primary_keys_are_normalised(target: Target, caches: Caches) -> None:
    with target.db.Session.begin() as s:
        s.add(User(id=5, name="five"))

    async def main() -> None:
        async with repository(target, caches) as (users, env):
            before = env.count()
            a, b = await users.get("5"), await users.get(5)
            assert a is not None and b is not None and a.name == b.name == "five"
            assert env.count() == before + 1  # "5" and 5: one row, one entry
            many = await users.get_many(["5", 5, 5.0])
            assert set(many) == {"5", 5} and many[5].name == "five"  # 5.0 == 5 as a dict key
            assert env.count() == before + 1
            with pytest.raises(ck.InvalidKeyError):
                await users.get("five")
            with pytest.raises(ck.InvalidKeyError):
                await users.get(True)
            assert await users.update("5", name="V") is not None
            got = await users.get(5)
            assert got is not None and got.name == "V"

    run(main())


def test_composite_primary_key(target: Target, caches: Caches) -> None:
    async def main() -> None:
        async with repository(target, caches, Pair, policy=ck.WriteThrough()) as (pairs, env):
            await pairs.add(Pair(a=1, b="x", v="one"))
            before = env.count()
            got = await pairs.get(("1", "x"))
            assert got is not None and got.v == "one"
            assert (await pairs.get_many([(1, "x"), (1, "y")])).keys() == {(1, "x")}
            assert env.count() == before + 1  # (1, "y") was loaded, (1, "x") a hit
            with pytest.raises(ck.InvalidKeyError):
                await pairs.get(1)

    run(main())


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_concurrent_tasks_on_a_cold_row_send_one_select(
    target: Target, cache_kind: str, request: pytest.FixtureRequest
) -> None:
    with target.db.Session.begin() as s:
        s.add(User(id=1, name="hot"))
    url = "" if cache_kind == "memory" else str(request.getfixturevalue("redis_url"))
    caches = Caches(cache_kind, url)

    async def main() -> None:
        async with repository(target, caches) as (users, env):
            before = env.count()
            got = await asyncio.gather(*(users.get(1) for _ in range(32)))
            assert all(u is not None and u.name == "hot" for u in got)
            assert env.count() == before + 1, env.selects[before:]

    run(main())


# ---------------------------------------------------------------- writes


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_update_and_delete(target: Target, caches: Caches, policy: ck.Policy) -> None:
    async def main() -> None:
        async with repository(target, caches, policy=policy) as (users, env):
            added = await users.add(User(id=1, name="a"))
            assert sa.inspect(added).detached and added.name == "a"
            assert await users.get(1) is not None
            updated = await users.update(1, name="b")
            assert updated is not None and updated.name == "b"
            before = env.count()
            got = await users.get(1)
            assert got is not None and got.name == "b"
            # write-through stored the new row; cache-aside dropped it (one reload)
            assert env.count() == before + (0 if policy.stores_on_write else 1)
            assert await users.update(9, name="x") is None
            assert await users.delete(1) is True
            assert await users.delete(1) is False
            before = env.count()
            assert await users.get(1) is None
            assert env.count() == before + (0 if policy.stores_on_write else 1)
            with target.db.Session() as s:
                assert s.get(User, 1) is None
            with pytest.raises(AttributeError):
                await users.update(1, nope=1)
            with pytest.raises(ValueError):
                await users.update(1, id=2)
            with pytest.raises(ck.ConfigurationError):
                await users.update(1, retries=-1, name="x")

    run(main())


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_failed_commit_leaves_the_cache_as_it_was(
    target: Target, caches: Caches, policy: ck.Policy
) -> None:
    async def main() -> None:
        async with repository(target, caches, policy=policy) as (users, _env):
            await users.add(User(id=1, name="a"))
            await users.add(User(id=2, name="b"))
            await users.get(1), await users.get(3)
            await users.query("all", sa.select(User))
            rows, queries = users.binding.rows, users.binding.queries

            async def snapshot() -> tuple[Any, ...]:
                keys = [users.binding.key((i,)) for i in (1, 2, 3)]
                entries = [await rows.get(k, MISSING) for k in keys]
                stats = rows.stats()
                return (*entries, await queries.get("all", MISSING), stats.sets, stats.deletes)

            before = await snapshot()
            with pytest.raises(sa.exc.IntegrityError):
                await users.add(User(id=3, name="a"))  # unique name violated
            with pytest.raises(sa.exc.IntegrityError):
                await users.update(2, name="a")
            with pytest.raises(sa.exc.IntegrityError):
                await users.add(User(id=1, name="dup"))  # primary key violated
            assert await snapshot() == before
            got = await users.get(2)
            assert got is not None and got.name == "b"

    run(main())


def test_cached_queries_are_dropped_by_writes(target: Target, caches: Caches) -> None:
    async def main() -> None:
        async with repository(target, caches) as (users, env):
            await users.add(User(id=1, name="a", active=True))
            stmt = sa.select(User).where(User.active.is_(True)).order_by(User.id)
            assert [u.name for u in await users.query("active", stmt)] == ["a"]
            before = env.count()
            assert [u.name for u in await users.query("active", stmt)] == ["a"]
            assert env.count() == before
            await users.add(User(id=2, name="b", active=True))
            assert [u.name for u in await users.query("active", stmt)] == ["a", "b"]
            await users.update(1, active=False)
            assert [u.name for u in await users.query("active", stmt)] == ["b"]

    run(main())


def test_versioned_rows_never_go_back(target: Target, caches: Caches) -> None:
    """A late post-commit store of an older version leaves the newer entry (compare-and-set)."""

    async def main() -> None:
        async with repository(target, caches, Doc, policy=ck.WriteThrough()) as (docs, env):
            await docs.add(Doc(id=1, body="v1"))
            updated = await docs.update(1, body="v2")
            assert updated is not None and updated.version == 2
            key = docs.binding.key((1,))
            old = dict(await docs.binding.rows.get(key))
            old.update(body="v1", version=1)
            await docs.binding.apply({key: old}, store=True)
            before = env.count()
            got = await docs.get(1)
            assert got is not None and (got.body, got.version) == ("v2", 2)
            assert env.count() == before  # still cached, not dropped

    run(main())


def test_a_version_conflict_is_retried(target: Target, caches: Caches) -> None:
    """Another writer bumps the version between our read and our flush: the update retries."""
    with target.db.Session.begin() as s:
        s.add(Doc(id=1, body="v1"))
    sneaked: list[int] = []

    @sa.event.listens_for(Doc, "before_update")
    def _sneak(_mapper: Any, _conn: Any, obj: Any) -> None:
        if not sneaked:  # once: a concurrent writer commits in between
            sneaked.append(1)
            with target.db.engine.begin() as conn:
                conn.execute(sa.update(Doc).where(Doc.id == 1).values(version=Doc.version + 1))

    async def main() -> None:
        async with repository(target, caches, Doc, policy=ck.WriteThrough()) as (docs, _):
            got = await docs.update(1, body="mine")
            assert got is not None and got.body == "mine" and got.version == 3
            cached = await docs.get(1)
            assert cached is not None and (cached.body, cached.version) == ("mine", 3)

    try:
        run(main())
    finally:
        sa.event.remove(Doc, "before_update", _sneak)
    assert sneaked == [1]


def test_a_write_cancelled_after_its_commit_still_updates_the_cache(
    target: Target, caches: Caches
) -> None:
    async def main() -> None:
        async with repository(target, caches, policy=ck.WriteThrough()) as (users, _):
            await users.add(User(id=1, name="a"))
            rows = users.binding.rows
            entered, release = asyncio.Event(), asyncio.Event()
            real_set = rows.set

            async def slow_set(key: str, value: Any, ttl: Any = None) -> None:
                entered.set()
                await release.wait()
                await real_set(key, value, ttl)

            rows.set = slow_set  # type: ignore[method-assign]
            task = asyncio.create_task(users.update(1, name="b"))
            await asyncio.wait_for(entered.wait(), 10)  # committed, storing
            task.cancel()
            await asyncio.sleep(0)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):  # the shielded update finishes on its own
                if (await rows.get(users.binding.key((1,)), MISSING)) is not MISSING and (
                    await rows.get(users.binding.key((1,)))
                )["name"] == "b":
                    break
                await asyncio.sleep(0.01)
            del rows.set
            got = await users.get(1)
            assert got is not None and got.name == "b"
            with target.db.Session() as s:
                assert s.get(User, 1).name == "b"  # type: ignore[union-attr]

    run(main())


# ---------------------------------------------------------------- races


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_a_load_that_overlapped_a_write_never_stores_the_older_row(
    target: Target, caches: Caches, policy: ck.Policy
) -> None:
    """A cold read pauses after its SELECT; a write commits meanwhile; the read must not land."""
    with target.db.Session.begin() as s:
        s.add(User(id=1, name="old"))

    async def main() -> None:
        async with repository(target, caches, policy=policy) as (users, env):
            paused, resume = asyncio.Event(), asyncio.Event()
            armed = [True]

            @sa.event.listens_for(env.engine.sync_engine, "after_cursor_execute")
            def _pause(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if armed[0] and statement.lstrip().upper().startswith("SELECT"):
                    armed[0] = False
                    paused.set()
                    await_only(resume.wait())  # inside SQLAlchemy's greenlet: suspends the task

            reader = asyncio.create_task(users.get(1))
            await asyncio.wait_for(paused.wait(), 10)  # the reader holds the old row
            assert await users.update(1, name="new") is not None
            resume.set()
            old = await reader
            assert old is not None and old.name == "old"  # what it read is what it returns
            cached = await users.binding.rows.get(users.binding.key((1,)), MISSING)
            assert cached is MISSING or cached["name"] == "new", cached
            got = await users.get(1)
            assert got is not None and got.name == "new"

    run(main())


def test_a_slow_cache_update_never_lands_over_a_newer_overlapping_write(
    target: Target, caches: Caches
) -> None:
    """Task A commits then stalls before its cache update; task B commits and updates the cache.

    Without a version column their order is only known in-process by overlap: A must
    not store its (older) row over B's once it resumes.
    """
    with target.db.Session.begin() as s:
        s.add(User(id=1, name="seed"))

    async def main() -> None:
        async with repository(target, caches, policy=ck.WriteThrough()) as (users, _):
            binding = users.binding
            stalled, resume = asyncio.Event(), asyncio.Event()
            real_apply = binding._apply
            first = [True]

            async def apply(*args: Any, **kwargs: Any) -> None:
                if first[0]:
                    first[0] = False
                    stalled.set()
                    await resume.wait()
                await real_apply(*args, **kwargs)

            binding._apply = apply  # type: ignore[method-assign]
            a = asyncio.create_task(users.update(1, name="A"))
            await asyncio.wait_for(stalled.wait(), 10)
            await users.update(1, name="B")  # commits after A: the database holds B
            resume.set()
            await a
            del binding._apply
            with target.db.Session() as s:
                assert s.get(User, 1).name == "B"  # type: ignore[union-attr]
            cached = await binding.rows.get(binding.key((1,)), MISSING)
            assert cached is MISSING or cached["name"] == "B", cached
            got = await users.get(1)
            assert got is not None and got.name == "B"

    run(main())


def test_a_write_cancelled_during_its_commit_drops_the_entry(
    target: Target, caches: Caches
) -> None:
    """The commit reached the database, then the task was cancelled: no stale entry stays."""

    async def main() -> None:
        async with repository(target, caches, policy=ck.WriteThrough()) as (users, env):
            await users.add(User(id=1, name="a"))
            entered = asyncio.Event()

            def factory() -> Any:
                session = env.Session()
                real_commit = session.commit

                async def commit() -> None:
                    await real_commit()  # committed ...
                    entered.set()
                    await asyncio.sleep(3600)  # ... but commit() has not returned yet

                session.commit = commit  # type: ignore[method-assign]
                return session

            users._writer = factory
            task = asyncio.create_task(users.update(1, name="b"))
            await asyncio.wait_for(entered.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            users._writer = env.Session
            cached = await users.binding.rows.get(users.binding.key((1,)), MISSING)
            assert cached is MISSING, cached  # not the old "a"
            got = await users.get(1)
            assert got is not None and got.name == "b"

    run(main())


# ---------------------------------------------------------------- interop


def test_sync_and_async_repositories_read_each_others_rows(target: Target, caches: Caches) -> None:
    cache = caches.sync()
    sync_users = CachedRepository(User, target.db.Session, cache, policy=ck.WriteThrough())
    sync_docs = CachedRepository(Doc, target.db.Session, cache, policy=ck.WriteThrough())
    sync_users.add(User(id=1, name="from-sync"))
    sync_docs.add(Doc(id=1, body="d1"))

    async def main() -> None:
        async with opened(target) as env:
            acache = caches.aio()
            users = AsyncCachedRepository(User, env.Session, acache, policy=ck.WriteThrough())
            docs = AsyncCachedRepository(Doc, env.Session, acache, policy=ck.WriteThrough())
            assert users.binding.key((1,)) == sync_users.binding.key((1,))
            got, doc = await users.get(1), await docs.get(1)
            assert env.count() == 0  # the sync writes' entries, read by the async side
            assert got is not None and got.name == "from-sync"
            assert doc is not None and (doc.body, doc.version) == ("d1", 1)
            await users.update(1, name="from-async")
            await docs.update(1, body="d2")
            await users.add(User(id=2, name="two"))
            await users.delete(2)
            await acache.aclose()

    run(main())
    target.db.selects.clear()
    got = sync_users.get(1)
    doc = sync_docs.get(1)
    assert got is not None and got.name == "from-async"
    assert doc is not None and (doc.body, doc.version) == ("d2", 2)
    assert sync_users.get(2) is None
    assert target.db.count() == 0  # all hits: the async writes' entries
    cache.close()


# ---------------------------------------------------------------- replicas


def test_replicas_serve_misses_and_writes_read_back_at_once(
    request: pytest.FixtureRequest, tmp_path: Path, caches: Caches
) -> None:
    primary = _target("sqlite", request, tmp_path, "primary")
    replica = _target("sqlite", request, tmp_path, "replica")
    with replica.db.Session.begin() as s:
        s.add(User(id=7, name="only-on-replica"))

    async def main() -> None:
        async with opened(primary) as p, opened(replica) as r:
            acache = caches.aio()
            users = AsyncCachedRepository(
                User, p.Session, acache, policy=ck.WriteThrough(), readers=[r.Session]
            )
            got = await users.get(7)  # a miss reads the replica
            assert got is not None and got.name == "only-on-replica"
            assert r.count() == 1 and p.count() == 0
            await users.add(User(id=1, name="new"))  # the replica lags: never sees it
            before = r.count()
            mine = await users.get(1)  # read-your-write: from the cache
            assert mine is not None and mine.name == "new"
            assert r.count() == before
            await acache.aclose()

    try:
        run(main())
    finally:
        for t in (primary, replica):
            t.db.engine.dispose()


# ---------------------------------------------------------------- track() over an AsyncCache


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_track_applies_plain_async_session_writes_after_commit(
    target: Target, caches: Caches, policy: ck.Policy
) -> None:
    async def main() -> None:
        async with opened(target) as env:
            acache = caches.aio()
            users = AsyncCachedRepository(User, env.Session, acache, policy=policy)
            tracker = track(env.Session, acache, models=[User], policy=policy)
            key = users.binding.key((1,))
            rows = users.binding.rows
            sync_rows = caches.sync().child(rows.namespace)
            try:
                async with env.Session.begin() as s:
                    s.add(User(id=1, name="a"))
                # done when commit() returned: a blocking read, no chance for a late task
                seen = sync_rows.get(key, MISSING)
                assert seen == (
                    {"id": 1, "name": "a", "active": True} if policy.stores_on_write else MISSING
                )
                assert (await rows.get(key, MISSING)) == (
                    {"id": 1, "name": "a", "active": True} if policy.stores_on_write else MISSING
                )
                assert (await users.get(1)).name == "a"  # type: ignore[union-attr]
                async with env.Session() as s:
                    u = await s.get(User, 1)
                    assert u is not None
                    u.name = "b"
                    await s.flush()
                    assert (await users.get(1)).name == "a"  # type: ignore[union-attr]
                    await s.rollback()  # nothing reaches the cache
                assert (await rows.get(key))["name"] == "a"
                async with env.Session.begin() as s:
                    u = await s.get(User, 1)
                    assert u is not None
                    u.name = "c"
                before = env.count()
                assert (await users.get(1)).name == "c"  # type: ignore[union-attr]
                assert env.count() == before + (0 if policy.stores_on_write else 1)
                async with env.Session.begin() as s:  # a bulk UPDATE by primary key
                    await s.execute(sa.update(User).where(User.id == 1).values(name="d"))
                assert (await rows.get(key, MISSING)) is MISSING
                assert (await users.get(1)).name == "d"  # type: ignore[union-attr]
                async with env.Session.begin() as s:
                    await s.delete(await s.get(User, 1))
                assert await users.get(1) is None
                # another factory over the same engine is not tracked
                other = async_sessionmaker(env.engine)
                async with other.begin() as s:
                    s.add(User(id=2, name="untracked"))
                assert (await rows.get(users.binding.key((2,)), MISSING)) is MISSING
            finally:
                tracker.remove()
                await acache.aclose()
                sync_rows.close()

    run(main())


def test_track_over_an_async_cache_refuses_a_sync_sessionmaker(target: Target) -> None:
    async def main() -> None:
        acache = AsyncCache(AsyncMemoryBackend(), namespace="asa-" + uuid.uuid4().hex[:8])
        with pytest.raises(ck.ConfigurationError, match="async_sessionmaker"):
            track(target.db.Session, acache, models=[User])
        await acache.aclose()

    run(main())


# ---------------------------------------------------------------- metrics


def test_register_prometheus_exports_an_async_repository(target: Target, caches: Caches) -> None:
    from prometheus_client import CollectorRegistry

    from cachekit.metrics import register_prometheus, unregister_prometheus
    from tests.test_metrics import scrape, value

    with target.db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in range(1, 4)])

    async def main() -> None:
        async with repository(target, caches, policy=ck.WriteThrough()) as (users, _):
            registry = CollectorRegistry()
            register_prometheus(users, registry)
            for pk in (1, 2, 1, 1, 99):  # 3 misses (1, 2, 99), 2 hits
                await users.get(pk)
            samples = scrape(registry)
            label = users.binding.rows.namespace
            backend = f"async-{caches.kind}"  # how the async drivers name themselves
            assert value(samples, "cachekit_hits_total", cache=label, backend=backend) == 2
            assert value(samples, "cachekit_misses_total", cache=label, backend=backend) == 3
            assert unregister_prometheus(users, registry) is True

    run(main())
