"""Fixtures for the SQLAlchemy tests: real databases (SQLite file in WAL, PostgreSQL), caches.

PostgreSQL tables live in a schema private to this test session, dropped at the end.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import cachekit as ck


class Base(DeclarativeBase):
    pass


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


class User(Base):
    __tablename__ = "ck_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
    active: Mapped[bool] = mapped_column(default=True)


class Doc(Base):
    """A row with a version counter (``version_id_col``)."""

    __tablename__ = "ck_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.String(50))
    version: Mapped[int] = mapped_column(nullable=False)
    __mapper_args__ = {"version_id_col": version}


class Pair(Base):
    """Composite primary key."""

    __tablename__ = "ck_pairs"
    a: Mapped[int] = mapped_column(primary_key=True)
    b: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    v: Mapped[str] = mapped_column(sa.String(20))


class Token(Base):
    """A UUID primary key."""

    __tablename__ = "ck_tokens"
    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(20))


class Tag(Base):
    """A string primary key."""

    __tablename__ = "ck_tags"
    code: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(20))


class Everything(Base):
    """One column of every type the codec knows."""

    __tablename__ = "ck_everything"
    id: Mapped[int] = mapped_column(primary_key=True)
    i: Mapped[int | None] = mapped_column(sa.BigInteger)
    s: Mapped[str | None] = mapped_column(sa.String(100))
    t: Mapped[str | None] = mapped_column(sa.Text)
    dt: Mapped[datetime.datetime | None] = mapped_column(sa.DateTime())
    dtz: Mapped[datetime.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    d: Mapped[datetime.date | None] = mapped_column(sa.Date)
    tm: Mapped[datetime.time | None] = mapped_column(sa.Time)
    n: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    f: Mapped[float | None] = mapped_column(sa.Float)
    u: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    e: Mapped[Color | None] = mapped_column(sa.Enum(Color, name="ck_color"))
    j: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    b: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    flag: Mapped[bool | None] = mapped_column(sa.Boolean)
    iv: Mapped[datetime.timedelta | None] = mapped_column(sa.Interval)


@dataclass
class Db:
    """One database under test: engine, session factory, SELECT counter, pause hook."""

    kind: str
    engine: sa.Engine
    Session: sessionmaker[Session]
    selects: list[str] = field(default_factory=list)
    #: when set, called after every cursor execute (from the executing thread)
    after_execute: Callable[[str], None] | None = None

    def count(self) -> int:
        return len(self.selects)


def _install_hooks(db: Db) -> None:
    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            db.selects.append(statement)

    @sa.event.listens_for(db.engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        hook = db.after_execute
        if hook is not None:
            hook(statement)


def sqlite_engine(path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    return engine


@pytest.fixture(scope="session")
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema private to this test session on the shared PostgreSQL."""
    schema = "ck_sa_" + uuid.uuid4().hex[:10]
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield schema
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


def make_db(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str = "db") -> Db:
    if kind == "sqlite":
        engine = sqlite_engine(tmp_path / f"{name}.sqlite")
    else:
        url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")
        engine = sa.create_engine(
            url, connect_args={"options": f"-csearch_path={schema}"}, pool_size=10
        )
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        Base.metadata.create_all(conn)
    db = Db(kind, engine, sessionmaker(engine))
    _install_hooks(db)
    return db


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """Each database kind in turn, with fresh tables."""
    d = make_db(str(request.param), request, tmp_path)
    yield d
    d.after_execute = None
    with d.engine.begin() as conn:
        Base.metadata.drop_all(conn)
    d.engine.dispose()


@pytest.fixture
def sqlite_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    d = make_db("sqlite", request, tmp_path)
    yield d
    d.engine.dispose()


def make_cache(kind: str, request: pytest.FixtureRequest, **options: Any) -> ck.Cache:
    namespace = "sa-" + uuid.uuid4().hex[:12]
    if kind == "memory":
        return ck.Cache(ck.MemoryBackend(), namespace=namespace, **options)
    if kind == "memory-json":
        return ck.Cache(
            ck.MemoryBackend(), namespace=namespace, serializer=ck.JsonSerializer(), **options
        )
    url = request.getfixturevalue(f"{kind}_url")
    return ck.Cache.from_url(url, namespace=namespace, **options)


@pytest.fixture
def caches(request: pytest.FixtureRequest) -> Iterator[Callable[..., ck.Cache]]:
    """Factory ``caches(kind, **options)``; every cache is closed after the test."""
    made: list[ck.Cache] = []

    def factory(kind: str, **options: Any) -> ck.Cache:
        c = make_cache(kind, request, **options)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


@pytest.fixture(params=["memory", "redis", "memcached"])
def cache_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Gate:
    """Pauses one thread after its matching SELECT until released (for race tests)."""

    def __init__(self, match: str) -> None:
        self.match = match.upper()
        self.thread: threading.Thread | None = None
        self.paused = threading.Event()
        self.release = threading.Event()

    def __call__(self, statement: str) -> None:
        if threading.current_thread() is not self.thread:
            return
        if statement.lstrip().upper().startswith("SELECT") and self.match in statement.upper():
            self.paused.set()
            assert self.release.wait(20), "gate never released"
