"""The stale-set race: a load that read the old row before a write committed never wins.

Deterministic: the reader is paused right after its SELECT (``after_cursor_execute``
waits on an event), a write commits, the reader is released; the cache must
then hold the new row (write-through) or nothing (cache-aside) — never the old
one. Randomized: readers and writers interleave with random pauses after every
SELECT; once they stop, every cached entry equals the database.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository, track

from .conftest import Db, Doc, Gate, User

POLICIES = [ck.WriteThrough(), ck.CacheAside()]
MISSING = object()


def _text_attr(model: type[Any]) -> str:
    return "name" if model is User else "body"


def _seed(db: Db, model: type[Any], n: int) -> None:
    attr = _text_attr(model)
    with db.Session.begin() as s:
        s.add_all([model(id=i, **{attr: f"old{i}"}) for i in range(1, n + 1)])


def _db_state(db: Db, repo: CachedRepository[Any], pk: int) -> Any:
    with db.Session() as s:
        obj = s.get(repo.model, pk)
        return None if obj is None else repo.codec.encode(obj)


@pytest.fixture
def tracked() -> Iterator[list[Any]]:
    hooks: list[Any] = []
    yield hooks
    for h in hooks:
        h.remove()


def _write(how: str, db: Db, repo: CachedRepository[Any], pk: int, value: str) -> None:
    attr = _text_attr(repo.model)
    if how == "repository":
        repo.update(pk, **{attr: value})
    else:  # an ordinary session, seen through track()
        with db.Session() as s:
            obj = s.get(repo.model, pk)
            assert obj is not None
            setattr(obj, attr, value)
            s.commit()


@pytest.mark.parametrize("model", [User, Doc], ids=["plain", "versioned"])
@pytest.mark.parametrize("writer", ["repository", "track"])
@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_paused_reader_cannot_store_the_old_row(
    db: Db,
    caches: Callable[..., ck.Cache],
    cache_kind: str,
    policy: ck.Policy,
    writer: str,
    model: type[Any],
    tracked: list[Any],
) -> None:
    cache = caches(cache_kind)
    repo = CachedRepository(model, db.Session, cache, policy=policy)
    _seed(db, model, 1)  # before track(): the row starts uncached
    if writer == "track":
        tracked.append(track(db.Session, cache, models=[model], policy=policy))
    attr = _text_attr(model)

    gate = Gate(model.__tablename__)
    db.after_execute = gate
    seen: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: seen.setdefault("obj", repo.get(1)))
    gate.thread = reader
    reader.start()
    try:
        assert gate.paused.wait(10), "the reader never ran its SELECT"
        _write(writer, db, repo, 1, "new")  # commits while the reader holds the old row
    finally:
        gate.release.set()
        reader.join(10)
    db.after_execute = None
    assert getattr(seen["obj"], attr) == "old1"  # the reader returns what it read...

    cached = repo.binding.rows.get(repo.binding.key((1,)), MISSING)
    if policy.stores_on_write:  # ...but the cache keeps the committed write
        assert cached is not MISSING and cached[attr] == "new"
    else:
        assert cached is MISSING
    n = db.count()
    got = repo.get(1)
    assert got is not None and getattr(got, attr) == "new"
    assert db.count() == n + (0 if policy.stores_on_write else 1)


@pytest.mark.slow
@pytest.mark.parametrize("model", [User, Doc], ids=["plain", "versioned"])
@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_random_interleavings_converge(
    db: Db,
    caches: Callable[..., ck.Cache],
    cache_kind: str,
    policy: ck.Policy,
    model: type[Any],
    tracked: list[Any],
) -> None:
    """Many rounds of: cold key, two readers and two writers started with random delays."""
    cache = caches(cache_kind)
    repo = CachedRepository(model, db.Session, cache, policy=policy)
    tracked.append(track(db.Session, cache, models=[model], policy=policy))
    keys = [1, 2]
    _seed(db, model, len(keys))
    rng = random.Random(20240229)
    delays = threading.local()

    def pause(statement: str) -> None:
        # the window between a reader's SELECT and its cache store, at random widths
        if statement.lstrip().upper().startswith("SELECT"):
            time.sleep(getattr(delays, "after_select", 0.0))

    db.after_execute = pause
    errors: list[BaseException] = []
    lost = (sa.exc.OperationalError, sa.orm.exc.StaleDataError)

    def run(start: float, after_select: float, op: Callable[[], Any]) -> None:
        delays.after_select = after_select
        time.sleep(start)
        try:
            op()
        except lost:
            pass  # a failed write (SQLite busy, version conflict) must leave the cache right too
        except BaseException as exc:
            errors.append(exc)

    for i in range(40):
        pk = rng.choice(keys)
        repo.invalidate(pk)  # every round starts with a miss
        ops: list[Callable[[], Any]] = [
            lambda pk=pk: repo.get(pk),
            lambda: repo.get_many(keys),
            lambda pk=pk, i=i: _write("repository", db, repo, pk, f"r{i}"),
            lambda pk=pk, i=i: _write("track", db, repo, pk, f"t{i}"),
        ]
        threads = [
            threading.Thread(target=run, args=(rng.random() * 0.004, rng.random() * 0.006, op))
            for op in ops
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for k in keys:
            cached = repo.binding.rows.get(repo.binding.key((k,)), MISSING)
            assert cached is MISSING or cached == _db_state(db, repo, k), (i, k, cached)
    db.after_execute = None


@pytest.mark.parametrize("first", ["repository", "track"])
def test_a_slow_cache_update_never_lands_over_a_newer_overlapping_write(
    db: Db,
    caches: Callable[..., ck.Cache],
    cache_kind: str,
    first: str,
    tracked: list[Any],
) -> None:
    """Writer A commits, then stalls before its cache update; writer B commits and updates.

    Without a version column their order at the database is only known in-process by
    overlap: A must not store its (older) row over B's once it resumes.
    """
    cache = caches(cache_kind)
    repo = CachedRepository(User, db.Session, cache, policy=ck.WriteThrough())
    _seed(db, User, 1)
    tracked.append(track(db.Session, cache, models=[User], policy=ck.WriteThrough()))
    binding = repo.binding
    stalled, resume = threading.Event(), threading.Event()
    real_apply = binding._apply
    slow = threading.current_thread()  # replaced by A's thread below

    def apply(*args: Any, **kwargs: Any) -> None:
        if threading.current_thread() is slow:
            stalled.set()
            assert resume.wait(10)
        real_apply(*args, **kwargs)

    binding._apply = apply  # type: ignore[method-assign]
    second = "track" if first == "repository" else "repository"
    a = threading.Thread(target=_write, args=(first, db, repo, 1, "A"))
    slow = a
    a.start()
    try:
        assert stalled.wait(10), "writer A never reached its cache update"
        _write(second, db, repo, 1, "B")  # commits after A: the database holds B
    finally:
        resume.set()
        a.join(10)
    binding._apply = real_apply  # type: ignore[method-assign]
    assert _db_state(db, repo, 1)["name"] == "B"
    cached = binding.rows.get(binding.key((1,)), MISSING)
    assert cached is MISSING or cached["name"] == "B", cached
