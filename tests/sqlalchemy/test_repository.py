"""CachedRepository on SQLite and PostgreSQL: codec round trips, zero-SQL hits, writes, rollback."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository, RowCodec

from .conftest import Color, Db, Doc, Everything, Pair, User

FULL = dict(
    i=2**40 + 7,
    s="héllo ✓ 'quoted' \"x\"",
    t="long text " * 20,
    dt=datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
    dtz=datetime.datetime(2024, 2, 29, 13, 14, 15, 654321, tzinfo=datetime.timezone.utc),
    d=datetime.date(1999, 12, 31),
    tm=datetime.time(23, 59, 58, 999),
    n=decimal.Decimal("12345.678901"),
    f=0.1 + 0.2,
    u=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    e=Color.GREEN,
    j={"a": [1, 2, {"b": None}], "ü": True},
    b=b"\x00\xff binary \x80",
    flag=False,
    iv=datetime.timedelta(days=3, seconds=7, microseconds=11),
)


def columns(obj: Any) -> dict[str, Any]:
    return {a.key: getattr(obj, a.key) for a in sa.inspect(type(obj)).column_attrs}


@pytest.mark.parametrize("cache_kind", ["memory", "memory-json", "redis", "memcached"])
@pytest.mark.parametrize("values", [FULL, {}], ids=["values", "nulls"])
def test_codec_round_trip_every_type(
    db: Db, caches: Callable[..., ck.Cache], cache_kind: str, values: dict[str, Any]
) -> None:
    with db.Session.begin() as s:
        s.add(Everything(id=1, **values))
    repo = CachedRepository(Everything, db.Session, caches(cache_kind))
    loaded = repo.get(1)  # miss: loaded from the database, encoded, stored
    cached = repo.get(1)  # hit: rebuilt from the cache
    with db.Session() as s:
        fresh = s.get(Everything, 1)
        assert fresh is not None
        expected = columns(fresh)
    assert loaded is not None and cached is not None
    assert columns(cached) == expected == columns(loaded)
    if values:
        # what the database gives back, e.g. PostgreSQL keeps the offset, SQLite drops it
        assert cached.e is Color.GREEN and cached.j == FULL["j"] and cached.b == FULL["b"]
        assert type(cached.n) is decimal.Decimal and type(cached.u) is uuid.UUID
    assert sa.inspect(cached).detached


def test_codec_state_is_json_native() -> None:
    codec = RowCodec(Everything)
    state = codec.encode(Everything(id=1, **FULL))
    assert ck.JsonSerializer().dumps(state)[:1] == b"j"  # no tags needed: plain JSON
    assert codec.decode_values(state) == {"id": 1, **FULL}
    # a decoded JSON document is a fresh object every time: mutating it cannot touch the cache
    assert codec.decode(state).j is not codec.decode(state).j


def test_hits_issue_no_sql(db: Db, caches: Callable[..., ck.Cache]) -> None:
    with db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in range(1, 6)])
    repo = CachedRepository(User, db.Session, caches("memory"))
    n = db.count()
    assert repo.get(1) is not None
    assert db.count() == n + 1
    for _ in range(3):
        u = repo.get(1)
        assert u is not None and u.name == "u1"
    assert db.count() == n + 1
    many = repo.get_many([1, 2, 3, 99])  # one SELECT for the three misses
    assert sorted(many) == [1, 2, 3] and many[2].name == "u2"
    assert db.count() == n + 2
    assert sorted(repo.get_many([1, 2, 3, 99])) == [1, 2, 3]  # 99 is cached as absent
    assert db.count() == n + 2
    assert repo.get(99) is None and db.count() == n + 2
    assert sorted(repo.get_many([3, 4, 5])) == [3, 4, 5]
    assert db.count() == n + 3


@pytest.mark.parametrize("policy", [ck.WriteThrough(), ck.CacheAside()], ids=repr)
def test_absent_is_cached_and_add_makes_it_visible(
    db: Db, caches: Callable[..., ck.Cache], policy: ck.Policy
) -> None:
    repo = CachedRepository(User, db.Session, caches("memory"), policy=policy)
    assert repo.get(7) is None
    n = db.count()
    assert repo.get(7) is None and db.count() == n  # absent, from the cache
    added = repo.add(User(id=7, name="seven"))
    assert added.name == "seven" and sa.inspect(added).detached
    got = repo.get(7)
    assert got is not None and got.name == "seven"
    assert db.count() == n + (0 if policy.stores_on_write else 1)


@pytest.mark.parametrize("policy", [ck.WriteThrough(), ck.CacheAside()], ids=repr)
def test_update_and_delete(db: Db, caches: Callable[..., ck.Cache], policy: ck.Policy) -> None:
    repo = CachedRepository(User, db.Session, caches("memory"), policy=policy)
    repo.add(User(id=1, name="a"))
    assert repo.get(1) is not None
    updated = repo.update(1, name="b")
    assert updated is not None and updated.name == "b"
    n = db.count()
    got = repo.get(1)
    assert got is not None and got.name == "b"
    assert db.count() == n + (0 if policy.stores_on_write else 1)
    assert repo.update(42, name="x") is None
    assert repo.delete(1) is True
    assert repo.get(1) is None
    assert repo.delete(1) is False
    with pytest.raises(AttributeError):
        repo.update(1, nope=1)


def test_composite_primary_key(db: Db, caches: Callable[..., ck.Cache]) -> None:
    repo = CachedRepository(Pair, db.Session, caches("memory"), policy=ck.WriteThrough())
    # keys must not collide, whatever the strings hold
    repo.add(Pair(a=1, b="x, 2", v="first"))
    repo.add(Pair(a=1, b="x", v="second"))
    repo.add(Pair(a=12, b="", v="third"))
    assert repo.binding.key((1, "x, 2")) != repo.binding.key((1, "x"))
    n = db.count()
    first, second = repo.get((1, "x, 2")), repo.get((1, "x"))
    assert first is not None and first.v == "first"
    assert second is not None and second.v == "second"
    assert db.count() == n
    repo.binding.rows.clear()
    many = repo.get_many([(1, "x"), (12, ""), (5, "none")])
    assert {k: p.v for k, p in many.items()} == {(1, "x"): "second", (12, ""): "third"}
    assert db.count() == n + 1
    updated = repo.update((12, ""), v="3rd")
    assert updated is not None
    got = repo.get((12, ""))
    assert got is not None and got.v == "3rd"
    assert repo.delete((1, "x")) and repo.get((1, "x")) is None
    with pytest.raises(ck.InvalidKeyError):
        repo.get(1)


def _snapshot(repo: CachedRepository[Any], keys: list[Any]) -> tuple[Any, ...]:
    b = repo.binding
    rows = b.rows.stats()
    return (
        {k: b.rows.get(b.key(b.ident(k)), "<missing>") for k in keys},
        b.rows.full_key("x"),
        b.queries.full_key("x"),
        rows.sets,
        rows.deletes,
    )


@pytest.mark.parametrize("policy", [ck.WriteThrough(), ck.CacheAside()], ids=repr)
def test_failed_commit_leaves_cache_exactly_as_it_was(
    db: Db, caches: Callable[..., ck.Cache], policy: ck.Policy
) -> None:
    repo = CachedRepository(User, db.Session, caches("memory"), policy=policy)
    repo.add(User(id=1, name="a"))
    repo.add(User(id=2, name="b"))
    repo.get(1), repo.get(3)
    repo.query("all", sa.select(User))
    before = _snapshot(repo, [1, 2, 3])
    with pytest.raises(sa.exc.IntegrityError):
        repo.add(User(id=3, name="a"))  # unique name violated
    with pytest.raises(sa.exc.IntegrityError):
        repo.update(2, name="a")
    with pytest.raises(sa.exc.IntegrityError):
        repo.add(User(id=1, name="dup"))  # primary key violated
    assert _snapshot(repo, [1, 2, 3]) == before
    got = repo.get(2)
    assert got is not None and got.name == "b"


def test_versioned_model_write_through(db: Db, caches: Callable[..., ck.Cache]) -> None:
    repo = CachedRepository(Doc, db.Session, caches("memory"), policy=ck.WriteThrough())
    repo.add(Doc(id=1, body="v1"))
    repo.update(1, body="v2")
    got = repo.get(1)
    assert got is not None and (got.body, got.version) == ("v2", 2)
    # a late, older post-commit write must not replace the newer entry
    old = dict(repo.binding.rows.get("1"))
    old.update(body="v1", version=1)
    repo.binding.apply({"1": old}, store=True)
    got = repo.get(1)
    assert got is not None and (got.body, got.version) == ("v2", 2)


def test_cached_queries_are_invalidated_by_writes(db: Db, caches: Callable[..., ck.Cache]) -> None:
    repo = CachedRepository(User, db.Session, caches("memory"), policy=ck.WriteThrough())
    for i in range(1, 4):
        repo.add(User(id=i, name=f"u{i}", active=i != 2))
    active = sa.select(User).where(User.active).order_by(User.id)
    assert [u.id for u in repo.query("active", active)] == [1, 3]
    n = db.count()
    assert [u.id for u in repo.query("active", active)] == [1, 3]
    assert db.count() == n
    repo.update(2, active=True)
    assert [u.id for u in repo.query("active", active)] == [1, 2, 3]
    repo.delete(3)
    assert [u.id for u in repo.query("active", active)] == [1, 2]
    repo.add(User(id=4, name="u4"))
    assert [u.id for u in repo.query("active", active)] == [1, 2, 4]


@pytest.mark.parametrize("bound", ["encrypted", "signed-pickle"])
def test_versioned_write_through_with_a_key_bound_serializer(
    sqlite_db: Db, caches: Callable[..., ck.Cache], bound: str
) -> None:
    ser: ck.Serializer
    if bound == "encrypted":
        ser = ck.EncryptedSerializer(
            ck.JsonSerializer(), keys=[ck.EncryptedSerializer.generate_key()]
        )
    else:
        ser = ck.PickleSerializer(b"k" * 32)
    repo = CachedRepository(
        Doc, sqlite_db.Session, caches("redis", serializer=ser), policy=ck.WriteThrough()
    )
    repo.add(Doc(id=1, body="v1"))
    repo.update(1, body="v2")
    n = sqlite_db.count()
    got = repo.get(1)
    assert got is not None and (got.body, got.version) == ("v2", 2)
    assert sqlite_db.count() == n  # served from the cache, not the database
    assert repo.binding.rows.stats().errors_by_operation.get("decode", 0) == 0
