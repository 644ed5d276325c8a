"""update(retries=N): on StaleDataError (version_id_col) re-read the row under a lock, retry."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

import cachekit as ck
from cachekit.sqlalchemy import CachedRepository

from .conftest import Db, Doc, make_db

MISSING = object()


def _db_row(db: Db, pk: int) -> tuple[str, int]:
    with db.Session() as s:
        doc = s.get(Doc, pk)
        assert doc is not None
        return doc.body, doc.version


def _cached(repo: CachedRepository[Doc], pk: int) -> Any:
    state = repo.binding.rows.get(repo.binding.key((pk,)), MISSING)
    return state if state is MISSING else (state["body"], state["version"])


def _interfere_once(db: Db) -> list[str]:
    """After this thread's next SELECT of the row, another connection commits a new version."""
    me = threading.current_thread()
    fired: list[str] = []

    def hook(statement: str) -> None:
        if fired or threading.current_thread() is not me:
            return
        if not statement.lstrip().upper().startswith("SELECT") or "ck_docs" not in statement:
            return
        fired.append(statement)
        table = Doc.__table__
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.id == 1)
                .values(body="concurrent", version=table.c.version + 1)
            )

    db.after_execute = hook
    return fired


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_stale_update_is_retried_on_the_fresh_row(
    db: Db, caches: Callable[..., ck.Cache], cache_kind: str
) -> None:
    repo = CachedRepository(Doc, db.Session, caches(cache_kind), policy=ck.WriteThrough())
    repo.add(Doc(id=1, body="v1"))
    fired = _interfere_once(db)
    n = db.count()
    got = repo.update(1, retries=1, body="mine")
    db.after_execute = None
    reads = db.selects[n:]
    assert fired  # the concurrent write did happen between our read and our write
    assert got is not None and (got.body, got.version) == ("mine", 3)
    assert _db_row(db, 1) == ("mine", 3) == _cached(repo, 1)
    assert len(reads) == 2  # the first read, then one retry
    if db.kind == "postgres":  # the retry read the row under a row lock
        assert "FOR UPDATE" not in reads[0].upper() and "FOR UPDATE" in reads[1].upper()
    got = repo.get(1)
    assert got is not None and (got.body, got.version) == ("mine", 3)


def test_retries_zero_propagates_stale_data_error(db: Db, caches: Callable[..., ck.Cache]) -> None:
    repo = CachedRepository(Doc, db.Session, caches("memory"), policy=ck.WriteThrough())
    repo.add(Doc(id=1, body="v1"))
    before = _cached(repo, 1)
    _interfere_once(db)
    with pytest.raises(StaleDataError):
        repo.update(1, retries=0, body="mine")
    db.after_execute = None
    assert _db_row(db, 1) == ("concurrent", 2)  # the other writer's row stands
    assert _cached(repo, 1) == before == ("v1", 1)  # a failed write never touches the cache
    assert not repo.binding._writing and not repo.binding._conflicted
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ck.ConfigurationError):
            repo.update(1, retries=bad, body="x")


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    d = make_db("postgres", request, tmp_path)
    yield d
    with d.engine.begin() as conn:
        Doc.__table__.drop(conn, checkfirst=True)
    d.engine.dispose()


@pytest.mark.parametrize("cache_kind", ["memory", "redis"])
def test_contended_updates_all_succeed_with_retries(
    pg_db: Db, caches: Callable[..., ck.Cache], cache_kind: str
) -> None:
    threads, per_thread = 8, 40
    repo = CachedRepository(Doc, pg_db.Session, caches(cache_kind), policy=ck.WriteThrough())
    repo.add(Doc(id=1, body="start"))
    start = threading.Barrier(threads)
    errors: list[BaseException] = []
    results: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        start.wait()
        for j in range(per_thread):
            try:
                got = repo.update(1, body=f"t{t}-{j}")  # the default retries
            except BaseException as exc:  # collected and asserted below
                with lock:
                    errors.append(exc)
                continue
            assert got is not None
            with lock:
                results.append((got.body, got.version))

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    total = threads * per_thread
    # every update committed exactly once: versions 2 .. total + 1, each seen by one caller
    assert sorted(v for _, v in results) == list(range(2, total + 2))
    final = _db_row(pg_db, 1)
    assert final[1] == total + 1
    assert _cached(repo, 1) == final  # the cache converged to the database
    got = repo.get(1)
    assert got is not None and (got.body, got.version) == final
