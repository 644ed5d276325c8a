"""Primary keys are converted to the column's Python type: every spelling of a row is one entry."""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository, Tracker, track
from cachekit.sqlalchemy.identity import IdentityConverter

from .conftest import Db, Pair, Tag, Token, User

MISSING = object()


def _cached(repo: CachedRepository[Any], ident: tuple[Any, ...]) -> Any:
    return repo.binding.rows.get(repo.binding.key(ident), MISSING)


@pytest.fixture
def hooks() -> Iterator[list[Tracker]]:
    made: list[Tracker] = []
    yield made
    for h in made:
        h.remove()


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_integer_key_spellings_are_one_entry(
    db: Db, caches: Callable[..., ck.Cache], cache_kind: str
) -> None:
    with db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in (5, 6, 7)])
    repo = CachedRepository(User, db.Session, caches(cache_kind), policy=ck.WriteThrough())
    got = repo.get(5)
    assert got is not None and got.name == "u5"
    n = db.count()
    for spelling in ("5", " 5", 5.0, decimal.Decimal("5"), (5,), ("5",)):
        same = repo.get(spelling)
        assert same is not None and same.name == "u5", spelling
    assert db.count() == n  # all answered by the one entry

    repo.update(5, name="renamed")  # a write to one spelling is seen through every other
    got = repo.get("5")
    assert got is not None and got.name == "renamed"
    repo.update("6", name="six")
    got = repo.get(6)
    assert got is not None and got.name == "six"

    many = repo.get_many(["5", 5, 6, "7", 99])  # results under the keys passed in
    assert {k: v.name for k, v in many.items()} == {
        "5": "renamed",
        5: "renamed",
        6: "six",
        "7": "u7",
    }
    assert repo.delete("7") is True
    assert repo.get(7) is None and repo.get("7") is None
    repo.invalidate("6")
    assert _cached(repo, (6,)) is MISSING


def test_string_and_uuid_keys_are_normalised(db: Db, caches: Callable[..., ck.Cache]) -> None:
    token = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with db.Session.begin() as s:
        s.add(Tag(code="5", label="five"))
        s.add(Token(id=token, label="tok"))
    cache = caches("memory")
    tags = CachedRepository(Tag, db.Session, cache, policy=ck.WriteThrough())
    tokens = CachedRepository(Token, db.Session, cache, policy=ck.WriteThrough())

    got = tags.get(5)  # an int for a string key: the same row
    assert got is not None and got.label == "five"
    tags.update("5", label="FIVE")
    got = tags.get(5)
    assert got is not None and got.label == "FIVE"

    n = db.count()
    for spelling in (token, str(token), str(token).upper(), token.hex, f"{{{token}}}"):
        found = tokens.get(spelling)
        assert found is not None and found.label == "tok" and found.id == token, spelling
    assert db.count() == n + 1  # one load, then one entry for every spelling
    tokens.update(str(token), label="changed")
    found = tokens.get(token)
    assert found is not None and found.label == "changed"


def test_composite_key_parts_are_normalised(db: Db, caches: Callable[..., ck.Cache]) -> None:
    repo = CachedRepository(Pair, db.Session, caches("memory"), policy=ck.WriteThrough())
    repo.add(Pair(a=1, b="x", v="first"))
    n = db.count()
    for spelling in ((1, "x"), ("1", "x"), [1, "x"], (1.0, "x")):
        got = repo.get(spelling)
        assert got is not None and got.v == "first", spelling
    assert db.count() == n  # cached by add (write-through), every spelling hits it
    repo.update(("1", "x"), v="second")
    got = repo.get((1, "x"))
    assert got is not None and got.v == "second"
    many = repo.get_many([("1", "x"), (1, "x")])
    assert {k: v.v for k, v in many.items()} == {("1", "x"): "second", (1, "x"): "second"}


BAD_INT_KEYS: list[Any] = ["abc", "5.5", "", True, False, 1.5, None, b"5", object(), (1, 2)]


@pytest.mark.parametrize("bad", BAD_INT_KEYS, ids=repr)
def test_unconvertible_keys_raise_invalid_key_error(
    db: Db, caches: Callable[..., ck.Cache], bad: Any
) -> None:
    with db.Session.begin() as s:
        s.add(User(id=1, name="u1"))
    repo = CachedRepository(User, db.Session, caches("memory"), policy=ck.WriteThrough())
    n = db.count()
    calls: list[Callable[[], Any]] = [
        lambda: repo.get(bad),
        lambda: repo.get_many([1, bad]),
        lambda: repo.update(bad, name="x"),
        lambda: repo.delete(bad),
        lambda: repo.invalidate(bad),
    ]
    for call in calls:
        with pytest.raises(ck.InvalidKeyError):  # never a ValueError or a database error
            call()
    assert db.count() == n  # refused before any SQL
    got = repo.get(1)
    assert got is not None and got.name == "u1"


def test_bad_uuid_and_composite_shapes(db: Db, caches: Callable[..., ck.Cache]) -> None:
    cache = caches("memory")
    tokens = CachedRepository(Token, db.Session, cache)
    pairs = CachedRepository(Pair, db.Session, cache)
    for bad in ("not-a-uuid", 5, True):
        with pytest.raises(ck.InvalidKeyError):
            tokens.get(bad)
    for bad_pair in (1, (1,), (1, "x", 3), ("a", "x"), (1, None)):
        with pytest.raises(ck.InvalidKeyError):
            pairs.get(bad_pair)


def test_tracked_bulk_writes_use_the_normalised_key(
    db: Db, caches: Callable[..., ck.Cache], hooks: list[Tracker]
) -> None:
    with db.Session.begin() as s:
        s.add_all([User(id=i, name=f"u{i}") for i in (1, 2, 3)])
    cache = caches("memory")
    repo = CachedRepository(User, db.Session, cache, policy=ck.WriteThrough())
    repo.get_many([1, 2, 3])
    hooks.append(track(db.Session, cache, models=[User], policy=ck.WriteThrough()))
    with db.Session.begin() as s:
        # per-row bulk UPDATE whose parameter sets spell the key as text
        s.execute(sa.update(User), [{"id": "2", "name": "two"}])
        s.execute(sa.update(User).where(User.id.in_([3])).values(name="three"))
    assert _cached(repo, (2,)) is MISSING and _cached(repo, (3,)) is MISSING
    assert _cached(repo, (1,))["name"] == "u1"  # only those keys were dropped
    got2, got3 = repo.get("2"), repo.get("3")
    assert got2 is not None and got2.name == "two"
    assert got3 is not None and got3.name == "three"


class Shade(enum.Enum):
    DARK = "d"
    LIGHT = "l"


U = uuid.UUID("12345678-1234-5678-1234-567812345678")
CONVERSIONS: list[tuple[sa.types.TypeEngine[Any], Any, Any]] = [
    (sa.Integer(), "  42", 42),
    (sa.BigInteger(), decimal.Decimal("7"), 7),
    (sa.String(10), 7, "7"),
    (sa.String(10), U, str(U)),
    (sa.Uuid(), U.hex.upper(), U),
    (sa.Uuid(as_uuid=False), U.hex, str(U)),
    (sa.Numeric(10, 2), "1.50", decimal.Decimal("1.50")),
    (sa.Enum(Shade), "DARK", Shade.DARK),
    (sa.Date(), "2024-02-29", datetime.date(2024, 2, 29)),
    (sa.DateTime(), "2024-02-29T01:02:03", datetime.datetime(2024, 2, 29, 1, 2, 3)),
    (sa.Time(), "01:02", datetime.time(1, 2)),
    (sa.Boolean(), True, True),
]
REFUSED: list[tuple[sa.types.TypeEngine[Any], Any]] = [
    (sa.Integer(), True),
    (sa.Integer(), "0x10"),
    (sa.Integer(), float("nan")),
    (sa.Integer(), decimal.Decimal("Infinity")),
    (sa.String(10), b"x"),
    (sa.String(10), False),
    (sa.Uuid(), 5),
    (sa.Numeric(10, 2), "many"),
    (sa.Numeric(10, 2), True),
    (sa.Enum(Shade), "d"),
    (sa.Date(), datetime.datetime(2024, 2, 29)),
    (sa.Date(), "yesterday"),
    (sa.Boolean(), 1),
]


@pytest.mark.parametrize(("type_", "given", "expected"), CONVERSIONS, ids=repr)
def test_converter_per_column_type(type_: Any, given: Any, expected: Any) -> None:
    convert = IdentityConverter("M", [sa.Column("k", type_)])
    got = convert(given)
    assert got == (expected,) and type(got[0]) is type(expected)


@pytest.mark.parametrize(("type_", "given"), REFUSED, ids=repr)
def test_converter_refuses_with_invalid_key_error(type_: Any, given: Any) -> None:
    convert = IdentityConverter("M", [sa.Column("k", type_)])
    with pytest.raises(ck.InvalidKeyError, match=r"M\.k"):
        convert(given)
