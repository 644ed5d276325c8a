"""track() with savepoints: the binding's in-progress write tables always end empty.

A key flushed in a transaction and again in a savepoint of it used to stay in
the tables for ever, so every later write-through of that row turned into an
invalidation. Each scenario here checks the tables' size once it is over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository, Tracker, track

from .conftest import Db, User

MISSING = object()


class Boom(Exception):
    pass


@pytest.fixture
def hooks() -> Iterator[list[Tracker]]:
    made: list[Tracker] = []
    yield made
    for h in made:
        h.remove()


def _rename(s: Session, pk: int, name: str) -> None:
    obj = s.get(User, pk)
    assert obj is not None
    obj.name = name
    s.flush()


def _tables(repo: CachedRepository[User]) -> tuple[int, int]:
    b = repo.binding
    return len(b._writing), len(b._conflicted)


def _cached(repo: CachedRepository[User], pk: int) -> Any:
    return repo.binding.rows.get(repo.binding.key((pk,)), MISSING)


def _names(db: Db) -> dict[int, str]:
    with db.Session() as s:
        return {u.id: u.name for u in s.scalars(sa.select(User))}


def _scenarios(db: Db) -> list[tuple[str, Callable[[], None]]]:
    def flushed_in_txn_and_savepoint_committed() -> None:
        with db.Session() as s:
            _rename(s, 1, "outer")
            with s.begin_nested():
                _rename(s, 1, "inner")
            s.commit()

    def savepoint_rolled_back_outer_committed() -> None:
        with db.Session() as s:
            _rename(s, 2, "outer")
            nested = s.begin_nested()
            _rename(s, 2, "inner-rolled-back")
            _rename(s, 3, "only-in-savepoint")
            nested.rollback()
            s.commit()

    def outer_rolled_back_after_committed_savepoint() -> None:
        with db.Session() as s:
            _rename(s, 1, "never")
            with s.begin_nested():
                _rename(s, 1, "never-inner")
                _rename(s, 3, "never-3")
            s.rollback()

    def exception_in_savepoint_then_commit() -> None:
        with db.Session() as s:
            _rename(s, 4, "outer4")
            with pytest.raises(Boom), s.begin_nested():
                _rename(s, 4, "inner4")
                _rename(s, 5, "inner5")
                raise Boom
            s.commit()

    def exception_in_transaction() -> None:
        with pytest.raises(Boom), db.Session.begin() as s:
            _rename(s, 5, "lost")
            with s.begin_nested():
                _rename(s, 5, "lost-inner")
            raise Boom

    def flushed_again_after_a_released_savepoint() -> None:
        with db.Session() as s:
            _rename(s, 2, "first")
            with s.begin_nested():
                _rename(s, 2, "second")
            _rename(s, 2, "third")  # the newest state, flushed in the outer transaction
            s.commit()

    def nested_savepoints_then_close_without_commit() -> None:
        with db.Session() as s:
            _rename(s, 3, "a")
            with s.begin_nested():
                _rename(s, 3, "b")
                with s.begin_nested():
                    _rename(s, 3, "c")
            # closed without commit: rolled back

    return [
        (
            "flushed in the transaction and in a committed savepoint",
            (flushed_in_txn_and_savepoint_committed),
        ),
        ("savepoint rolled back, outer committed", savepoint_rolled_back_outer_committed),
        (
            "outer rolled back after a committed savepoint",
            (outer_rolled_back_after_committed_savepoint),
        ),
        ("exception in a savepoint, outer committed", exception_in_savepoint_then_commit),
        ("exception in the transaction", exception_in_transaction),
        ("flushed again after a released savepoint", flushed_again_after_a_released_savepoint),
        ("nested savepoints, closed without commit", nested_savepoints_then_close_without_commit),
    ]


@pytest.mark.parametrize("policy", [ck.WriteThrough(), ck.CacheAside()], ids=repr)
@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_write_tables_end_empty_after_every_savepoint_scenario(
    db: Db,
    caches: Callable[..., ck.Cache],
    cache_kind: str,
    policy: ck.Policy,
    hooks: list[Tracker],
) -> None:
    with db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in range(1, 6)])
    cache = caches(cache_kind)
    repo = CachedRepository(User, db.Session, cache, policy=policy)
    hooks.append(track(db.Session, cache, models=[User], policy=policy))
    for name, scenario in _scenarios(db):
        repo.get_many(range(1, 6))
        scenario()
        assert _tables(repo) == (0, 0), name
        # the cache agrees with the database after each scenario
        names = _names(db)
        for pk in range(1, 6):
            got = repo.get(pk)
            assert got is not None and got.name == names[pk], (name, pk)
    assert _names(db) == {1: "inner", 2: "third", 3: "u3", 4: "outer4", 5: "u5"}


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_write_through_still_stores_after_a_savepoint_flush(
    db: Db, caches: Callable[..., ck.Cache], cache_kind: str, hooks: list[Tracker]
) -> None:
    """The symptom: after the leak, every later write of the row invalidated instead of storing."""
    with db.Session.begin() as s:
        s.add(User(id=1, name="u1"))
    cache = caches(cache_kind)
    repo = CachedRepository(User, db.Session, cache, policy=ck.WriteThrough())
    hooks.append(track(db.Session, cache, models=[User], policy=ck.WriteThrough()))
    with db.Session() as s:
        _rename(s, 1, "outer")
        with s.begin_nested():
            _rename(s, 1, "inner")
        s.commit()
    assert _cached(repo, 1)["name"] == "inner"
    repo.update(1, name="through-repo")
    assert _cached(repo, 1)["name"] == "through-repo"  # stored, not invalidated
    with db.Session.begin() as s:
        _rename(s, 1, "through-session")
    assert _cached(repo, 1)["name"] == "through-session"
    assert _tables(repo) == (0, 0)
