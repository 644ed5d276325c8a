"""The workload's database: a seeded ``users`` table behind SQLAlchemy Core, with query counts.

Needs SQLAlchemy (``pip install 'cachekit-py[sqlalchemy]'``); ``import cachekit``
never imports this module.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

try:
    import sqlalchemy as sa
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the cachekit workload needs SQLAlchemy: pip install 'cachekit-py[sqlalchemy]'"
    ) from exc

__all__ = ["SqlUserStore", "users_table"]


def users_table(metadata: sa.MetaData, name: str = "users", payload: int = 0) -> sa.Table:
    """Define the ``users`` table: a few columns and a version counter bumped by each write.

    ``payload`` > 0 adds a ``payload`` column holding that many characters per row.
    """
    extra = [sa.Column("payload", sa.Text, nullable=False)] if payload > 0 else []
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("email", sa.String(128), nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        *extra,
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _plain(row: sa.Row[Any]) -> dict[str, Any]:
    # Column names are SQLAlchemy quoted_name (a str subclass); the JSON
    # serializer of remote backends takes only exact str keys.
    return {str(k): v for k, v in row._mapping.items()}


def _payload(key: int, size: int) -> str:
    stem = f"{key:x}-"
    return (stem * (size // len(stem) + 1))[:size]


class SqlUserStore:
    """Reads and writes ``users`` rows; counts every statement with ``before_cursor_execute``.

    Each statement commits on its own (autocommit), so a value read by any
    connection after a write returns is the committed one. Each thread gets
    its own connection (``release_thread`` returns it to the pool); ``table``
    and ``payload`` name the table and size its payload column.
    """

    def __init__(
        self,
        url: str,
        rows: int = 10_000,
        *,
        seed: int = 42,
        table: str = "users",
        payload: int = 0,
    ) -> None:
        self.url, self.rows, self.seed, self.payload = url, rows, seed, payload
        self.engine = sa.create_engine(url, pool_size=2, max_overflow=64)
        if self.engine.dialect.name == "sqlite":
            # Without this every autocommitted UPDATE waits for an fsync, and the
            # demo would measure the disk instead of the cache.
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.table = users_table(sa.MetaData(), table, payload)
        self._reads = self._writes = 0
        self._seeded = False
        self._dirty: set[int] = set()
        self._count_lock = threading.Lock()
        self._local = threading.local()
        sa.event.listen(self.engine, "before_cursor_execute", self._count)
        self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._owner = threading.get_ident()
        t = self.table
        self._select = sa.select(t).where(t.c.id == sa.bindparam("uid"))
        update = (
            sa.update(t)
            .where(t.c.id == sa.bindparam("uid"))
            .values(
                score=sa.bindparam("score"),
                version=t.c.version + 1,
                updated_at=sa.bindparam("now"),
            )
        )
        self._returning = self.engine.dialect.update_returning
        self._update = update.returning(*t.c) if self._returning else update

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        read = statement.lstrip()[:6].upper() == "SELECT"
        with self._count_lock:
            if read:
                self._reads += 1
            else:
                self._writes += 1

    def _connection(self) -> sa.Connection:
        if threading.get_ident() == self._owner:
            return self._conn
        conn: sa.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = conn
        return conn

    def release_thread(self) -> None:
        """Return the calling thread's connection to the pool (call it before the thread ends)."""
        conn: sa.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _scores(self) -> list[int]:
        rng = random.Random(self.seed)
        return [rng.randrange(1_000_000) for _ in range(self.rows)]

    def reset(self) -> None:
        """Restore the seeded table, then zero the query counters.

        The first call (re)creates and seeds the table; later calls put back
        only the rows written since (seconds saved per run on 10,000 rows).
        """
        t = self.table
        if self._seeded:
            dirty, self._dirty = sorted(self._dirty), set()
            if dirty:
                scores = self._scores()
                restore = (
                    sa.update(t)
                    .where(t.c.id == sa.bindparam("uid"))
                    .values(score=sa.bindparam("score"), version=0, updated_at=0.0)
                )
                self._conn.execute(restore, [{"uid": i, "score": scores[i - 1]} for i in dirty])
            self._reads = self._writes = 0
            return
        scores = self._scores()
        t.drop(self._conn, checkfirst=True)
        t.create(self._conn)
        self._conn.execute(
            t.insert(),
            [
                {
                    "id": i,
                    "name": f"user {i}",
                    "email": f"user{i}@example.com",
                    "score": scores[i - 1],
                    "version": 0,
                    "updated_at": 0.0,
                    **({"payload": _payload(i, self.payload)} if self.payload else {}),
                }
                for i in range(1, self.rows + 1)
            ],
        )
        self._seeded = True
        self._dirty.clear()
        self._reads = self._writes = 0

    def load(self, key: int) -> dict[str, Any] | None:
        """Return the committed row for ``key`` as a dict, or None."""
        row = self._connection().execute(self._select, {"uid": key}).first()
        return None if row is None else _plain(row)

    def save(self, key: int, value: int, now: float) -> dict[str, Any]:
        """Set ``score`` and bump ``version`` of ``key``; return the new row."""
        self._dirty.add(key)
        result = self._connection().execute(self._update, {"uid": key, "score": value, "now": now})
        if self._returning:
            return _plain(result.one())
        new = self.load(key)
        if new is None:
            raise LookupError(f"no user {key}")
        return new

    def repository(
        self, cache: Any, now: Callable[[], float]
    ) -> tuple[Callable[[int], dict[str, Any] | None], Callable[[int, int], dict[str, Any]], Any]:
        """Return ``(read, write, repository)`` going through a ``CachedRepository``.

        The table is mapped to a fresh ORM class with ``version`` as its
        ``version_id_col``, so the repository's write-through is version-guarded.
        """
        from sqlalchemy import orm

        from ..policies import WriteThrough
        from ..sqlalchemy import CachedRepository

        class UserRow:
            """A user row (mapped imperatively onto the demo's table)."""

            id: int
            score: int
            version: int
            updated_at: float

        orm.registry().map_imperatively(UserRow, self.table, version_id_col=self.table.c.version)
        sessions = orm.sessionmaker(self.engine, expire_on_commit=False)
        repo = CachedRepository(UserRow, sessions, cache, policy=WriteThrough(cache.policy.ttl))

        def read(user_id: int) -> dict[str, Any] | None:
            row = repo.get(user_id)
            return None if row is None else {"id": row.id, "version": row.version}

        def write(user_id: int, value: int) -> dict[str, Any]:
            self._dirty.add(user_id)
            row = repo.update(user_id, score=value, updated_at=now())
            if row is None:
                raise LookupError(f"no user {user_id}")
            return {"id": row.id, "version": row.version}

        return read, write, repo

    def query_counts(self) -> tuple[int, int]:
        """Return ``(reads, writes)`` sent to the database since the last reset."""
        return self._reads, self._writes

    def drop(self) -> None:
        """Drop the table (a shared database keeps no trace of the run)."""
        self._seeded = False
        self.table.drop(self._conn, checkfirst=True)

    def close(self) -> None:
        """Close the connection and dispose of the engine."""
        self._conn.close()
        sa.event.remove(self.engine, "before_cursor_execute", self._count)
        self.engine.dispose()

    def __enter__(self) -> SqlUserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
