"""``CachedRepository``: get / get_many / add / update / delete / query of one model, cached.

Reads go through ``Cache.get_or_load`` / ``get_many_or_load``: a miss loads
from a reader session (round-robin over ``readers``, else the writer) and
stores the row's column state race-guarded, so a load that overlapped a
committed write never stores the older row. Writes run in a writer session
and touch the cache only after ``commit()`` returned: write-through stores
the new state, cache-aside drops the entry. A failed commit leaves the cache
untouched. See ``docs/sqlalchemy.md`` for the full guarantees.

``RepositoryBase`` holds what does no I/O of its own: the configuration, the
primary-key checks, and the work done inside one (sync) ``Session``, which
``AsyncCachedRepository`` runs through ``AsyncSession.run_sync``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.exc import StaleDataError

from ..cache import Cache
from ..errors import ConfigurationError, SerializationError
from ..policies import Policy, TTLLike
from ..stats import Stats
from .binding import DELETED, ModelBinding, Op, binding_for, resolve_policy
from .codec import RowCodec, State

__all__ = ["REPOSITORY_SESSION", "UPDATE_RETRIES", "CachedRepository", "RepositoryBase"]

log = logging.getLogger("cachekit.sqlalchemy")

M = TypeVar("M")
SessionFactory = Callable[[], Session]
F = TypeVar("F")

#: ``Session.info`` flag on the repository's own write sessions (``track`` skips them).
REPOSITORY_SESSION = "cachekit.repository"
#: Default ``retries`` of ``update``: re-reads under a row lock after a ``StaleDataError``.
UPDATE_RETRIES = 3
#: Largest ``IN (...)`` list sent in one SELECT by ``get_many``.
_IN_CHUNK = 500


class RepositoryBase(Generic[M, F]):
    """The I/O-free half of a cached repository: configuration, key checks, in-session work.

    ``F`` is the session factory type (``sessionmaker`` or ``async_sessionmaker``);
    every method that takes a ``session`` takes a sync ``Session`` and runs inside it.
    """

    binding: Any  # ModelBinding or AsyncModelBinding: set by the subclass
    codec: RowCodec[M]

    def __init__(
        self,
        model: type[M],
        session_factory: F,
        cache: Any,
        policy: Policy | None,
        readers: Sequence[F] | None,
        ttl: TTLLike,
        absent_ttl: float,
    ) -> None:
        self.model = model
        self.cache = cache
        self.policy, self._ttl = resolve_policy(cache, policy, ttl)
        self._writer = session_factory
        self._readers = tuple(readers or ())
        self._turn = itertools.count()
        self._absent_ttl = absent_ttl
        ttl_value, absent = self._ttl, absent_ttl
        self._load_ttl: Callable[[Any], TTLLike] = lambda v: absent if v is None else ttl_value

    def __repr__(self) -> str:
        name, readers = self.model.__name__, len(self._readers)
        return f"{type(self).__name__}({name}, {self.policy!r}, readers={readers})"

    def _reader_factory(self) -> F:
        """The session factory of the next read: round-robin over readers, else the writer."""
        if not self._readers:
            return self._writer
        return self._readers[next(self._turn) % len(self._readers)]

    def _pk(self, ident: tuple[Any, ...]) -> Any:
        return ident[0] if self.binding.single_pk else ident

    def _wanted(self, pks: Iterable[Any]) -> dict[str, tuple[list[Any], tuple[Any, ...]]]:
        """Return ``key -> (the pks passed for it, identity)``: "5" and 5 are one row, one entry."""
        wanted: dict[str, tuple[list[Any], tuple[Any, ...]]] = {}
        for pk in pks:
            ident = self.binding.ident(pk)
            key = self.binding.key(ident)
            entry = wanted.get(key)
            if entry is None:
                wanted[key] = ([pk], ident)
            else:
                entry[0].append(pk)
        return wanted

    def _checked_update(self, pk: Any, changes: dict[str, Any], retries: int) -> tuple[Any, ...]:
        """Return ``pk``'s identity once ``changes`` and ``retries`` are valid for ``update``."""
        ident: tuple[Any, ...] = self.binding.ident(pk)
        unknown = set(changes) - self.codec.keys
        if unknown:
            raise AttributeError(f"{self.model.__name__} has no column attribute(s) {unknown}")
        if set(changes) & set(self.codec.pk_keys):
            raise ValueError("update() cannot change the primary key; delete and add instead")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries must be an int >= 0, got {retries!r}")
        return ident

    def _retry(
        self, exc: StaleDataError, attempt: int, retries: int, ident: tuple[Any, ...]
    ) -> int:
        """After ``exc``: the next attempt's number, or ``exc`` raised again once out of retries."""
        if attempt >= retries:
            raise exc
        attempt += 1
        log.debug("cachekit: %s %r changed meanwhile; retry %d", self.model, ident, attempt)
        return attempt

    # ------------------------------------------------------------ inside one session

    def _select_one(self, session: Session, ident: tuple[Any, ...]) -> State | None:
        obj = session.get(self.model, self._pk(ident), options=[lazyload("*")])
        return None if obj is None else self.codec.encode(obj)

    def _select_many(
        self, session: Session, idents: list[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], State]:
        cols = self.binding.pk_columns
        out: dict[tuple[Any, ...], State] = {}
        for start in range(0, len(idents), _IN_CHUNK):
            chunk = idents[start : start + _IN_CHUNK]
            where = (
                cols[0].in_([i[0] for i in chunk])
                if self.binding.single_pk
                else sa.tuple_(*cols).in_(chunk)
            )
            stmt = sa.select(self.model).where(where).options(lazyload("*"))
            for obj in session.scalars(stmt).unique():
                out[self.binding.identity_of(obj)] = self.codec.encode(obj)
        return out

    def _select_all(self, session: Session, stmt: sa.Select[Any]) -> list[State]:
        objs = session.scalars(stmt.options(lazyload("*"))).unique().all()
        return [self.codec.encode(o) for o in objs]

    def _state_after_flush(self, session: Session, obj: Any) -> State:
        session.flush()
        # server-side defaults and onupdate values are expired by the flush: load them now
        for attr in self.codec.unloaded(obj):
            getattr(obj, attr)
        return self.codec.encode(obj)

    def _stage_add(self, session: Session, obj: M) -> Op:
        """Add ``obj`` and flush; return the cache change its commit makes."""
        session.add(obj)
        state = self._state_after_flush(session, obj)
        return {self.binding.key(self.binding.identity_of(obj)): state}

    def _stage_update(
        self, session: Session, ident: tuple[Any, ...], changes: dict[str, Any], lock: bool
    ) -> tuple[M, Op] | None:
        """Set ``changes`` on the row and flush; ``None`` if it does not exist."""
        obj = session.get(self.model, self._pk(ident), with_for_update=lock)
        if obj is None:
            return None
        for name, value in changes.items():
            setattr(obj, name, value)
        state = self._state_after_flush(session, obj)
        return obj, {self.binding.key(ident): state}

    def _stage_delete(self, session: Session, ident: tuple[Any, ...]) -> Op | None:
        """Delete the row and flush; ``None`` if it does not exist."""
        obj = session.get(self.model, self._pk(ident))
        if obj is None:
            return None
        session.delete(obj)
        session.flush()
        return {self.binding.key(ident): DELETED}

    def stats(self) -> Stats:
        """Return the counters of this model's row cache."""
        stats: Stats = self.binding.rows.stats()
        return stats


class CachedRepository(RepositoryBase[M, SessionFactory]):
    """Cached access to the rows of ``model`` by primary key, plus named cached queries.

    ``policy`` defaults to the cache's policy. TTLs follow ``Cache``'s rule: a
    policy without its own TTL takes the cache's; a policy TTL that differs from
    an explicit cache TTL or from ``ttl`` raises ``ConfigurationError``; ``ttl``
    alone overrides the cache's TTL for this model. ``absent_ttl`` is how long
    "no such row" is remembered (a later ``add`` through the repository or
    ``track`` makes the row visible at once).
    """

    binding: ModelBinding[M]
    cache: Cache

    def __init__(
        self,
        model: type[M],
        session_factory: SessionFactory,
        cache: Cache,
        *,
        policy: Policy | None = None,
        readers: Sequence[SessionFactory] | None = None,
        ttl: TTLLike = None,
        absent_ttl: float = 5.0,
    ) -> None:
        self.binding = binding_for(cache, model)
        self.codec = self.binding.codec
        super().__init__(model, session_factory, cache, policy, readers, ttl, absent_ttl)

    # ------------------------------------------------------------ sessions

    def _reader(self) -> Session:
        return self._reader_factory()()

    def _write_session(self) -> Session:
        session = self._writer()
        session.info[REPOSITORY_SESSION] = True
        # keep the loaded state after commit, so returned objects need no refresh
        session.expire_on_commit = False
        return session

    # ------------------------------------------------------------ reads

    def _load_one(self, ident: tuple[Any, ...]) -> State | None:
        with self._reader() as session:
            return self._select_one(session, ident)

    def _load_many(self, idents: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], State]:
        with self._reader() as session:
            return self._select_many(session, idents)

    def _decode(self, key: str, state: State, reload: Callable[[], State | None]) -> M | None:
        try:
            return self.codec.decode(state)
        except SerializationError:
            # an entry written for another version of the model: drop it, use the database
            self.binding.rows.delete(key)
            fresh = reload()
            return None if fresh is None else self.codec.decode(fresh)

    def get(self, pk: Any) -> M | None:
        """Return a detached instance for primary key ``pk`` (tuple if composite), or ``None``."""
        ident = self.binding.ident(pk)
        key = self.binding.key(ident)
        state = self.binding.rows.get_or_load(key, lambda: self._load_one(ident), self._load_ttl)
        if state is None:
            return None
        return self._decode(key, state, lambda: self._load_one(ident))

    def get_many(self, pks: Iterable[Any]) -> dict[Any, M]:
        """Return ``{pk: instance}`` for the rows that exist; one SELECT for all misses."""
        wanted = self._wanted(pks)

        def load(missing: list[str]) -> dict[str, State | None]:
            rows = self._load_many([wanted[k][1] for k in missing])
            # rows not found are returned as None, so "absent" is cached too
            return {k: rows.get(wanted[k][1]) for k in missing}

        found = self.binding.rows.get_many_or_load(list(wanted), load, self._load_ttl)
        out: dict[Any, M] = {}
        for key, state in found.items():
            if state is None:
                continue
            given, ident = wanted[key]
            obj = self._decode(key, state, lambda i=ident: self._load_one(i))  # type: ignore[misc]
            if obj is not None:
                for pk in given:
                    out[pk] = obj
        return out

    def query(self, name: str, stmt: sa.Select[Any], ttl: TTLLike = None) -> list[M]:
        """Return the instances ``stmt`` selects, cached under ``name`` until the model changes.

        ``name`` must identify the statement and its parameters (for example
        ``"active"`` or ``f"by-team:{team_id}"``). Any write to the model
        through a repository or ``track`` drops every cached query of it.
        """

        def load() -> list[State]:
            with self._reader() as session:
                return self._select_all(session, stmt)

        states = self.binding.queries.get_or_load(name, load, ttl if ttl is not None else self._ttl)
        try:
            return [self.codec.decode(s) for s in states]
        except SerializationError:
            self.binding.queries.delete(name)
            return [self.codec.decode(s) for s in load()]

    # ------------------------------------------------------------ writes

    def _commit(self, session: Session, ops: Op) -> None:
        """Commit ``session``, then apply ``ops`` to the cache; nothing is applied on failure."""
        self.binding.begin_writes(ops)
        try:
            session.commit()
        except BaseException:
            self.binding.end_writes(ops)
            raise
        self.binding.apply(ops, store=self.policy.stores_on_write, ttl=self._ttl)

    def add(self, obj: M) -> M:
        """Insert ``obj``, commit, then cache it (or invalidate) and return it detached."""
        with self._write_session() as session:
            self._commit(session, self._stage_add(session, obj))
        return obj

    def update(self, pk: Any, /, *, retries: int = UPDATE_RETRIES, **changes: Any) -> M | None:
        """Set ``changes`` on row ``pk``, commit, then cache it; ``None`` if it does not exist.

        On a model with a ``version_id_col``, a concurrent update of the row makes
        the write raise ``StaleDataError``; it is then retried up to ``retries``
        times, each time re-reading the row under a row lock (``SELECT ... FOR
        UPDATE``) and setting ``changes`` again. With ``retries=0``, or once the
        retries run out, ``StaleDataError`` propagates as SQLAlchemy raised it.
        """
        ident = self._checked_update(pk, changes, retries)
        attempt = 0
        while True:
            try:
                return self._update_once(ident, changes, lock=attempt > 0)
            except StaleDataError as exc:
                attempt = self._retry(exc, attempt, retries, ident)

    def _update_once(self, ident: tuple[Any, ...], changes: dict[str, Any], lock: bool) -> M | None:
        with self._write_session() as session:
            staged = self._stage_update(session, ident, changes, lock)
            if staged is None:
                return None
            self._commit(session, staged[1])
        return staged[0]

    def delete(self, pk: Any) -> bool:
        """Delete the row ``pk`` and commit, then drop or mark it absent; ``False`` if missing."""
        ident = self.binding.ident(pk)
        with self._write_session() as session:
            ops = self._stage_delete(session, ident)
            if ops is None:
                return False
            self._commit(session, ops)
        return True

    # ------------------------------------------------------------ maintenance

    def invalidate(self, pk: Any) -> None:
        """Drop the cached row ``pk`` (after a write cachekit could not see)."""
        self.binding.rows.delete(self.binding.key(self.binding.ident(pk)))
        self.binding.queries.clear()

    def clear(self) -> None:
        """Drop every cached row and query of this model."""
        self.binding.apply({}, store=False, clear=True)
