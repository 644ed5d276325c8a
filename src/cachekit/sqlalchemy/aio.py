"""``AsyncCachedRepository``: ``CachedRepository`` over ``async_sessionmaker`` and ``AsyncCache``.

The same guarantees, awaited: reads go through ``AsyncCache.get_or_load`` /
``get_many_or_load`` (one SELECT per cold row however many tasks ask),
writes touch the cache only after ``await session.commit()`` returned, and a
failed commit leaves the cache untouched. The work inside a session is the
sync repository's own (``RepositoryBase``), run through
``AsyncSession.run_sync``; keys, row codec and namespaces are the same, so a
``CachedRepository`` and an ``AsyncCachedRepository`` over one database and
one cache server read each other's rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from .._async.cache import AsyncCache
from ..errors import SerializationError
from ..policies import Policy, TTLLike
from .binding import AsyncModelBinding, Op, async_binding_for
from .codec import State
from .repository import REPOSITORY_SESSION, UPDATE_RETRIES, RepositoryBase

__all__ = ["AsyncCachedRepository", "AsyncSessionFactory"]

M = TypeVar("M")
#: An ``async_sessionmaker`` (or any callable returning an ``AsyncSession``).
AsyncSessionFactory = Callable[[], AsyncSession]


class AsyncCachedRepository(RepositoryBase[M, AsyncSessionFactory]):
    """Cached access to the rows of ``model`` by primary key, awaited.

    ``await get(pk)``, ``get_many``, ``add``, ``update``, ``delete``, ``query``,
    ``invalidate`` and ``clear`` behave as ``CachedRepository``'s (same
    ``policy``, ``readers``, ``ttl`` and ``absent_ttl`` rules). A write whose
    task is cancelled while it commits drops the row's entry, since the
    commit may have happened; one cancelled after the commit still finishes
    its cache update.
    """

    binding: AsyncModelBinding[M]
    cache: AsyncCache

    def __init__(
        self,
        model: type[M],
        session_factory: AsyncSessionFactory,
        cache: AsyncCache,
        *,
        policy: Policy | None = None,
        readers: Sequence[AsyncSessionFactory] | None = None,
        ttl: TTLLike = None,
        absent_ttl: float = 5.0,
    ) -> None:
        self.binding = async_binding_for(cache, model)
        self.codec = self.binding.codec
        super().__init__(model, session_factory, cache, policy, readers, ttl, absent_ttl)

    # ------------------------------------------------------------ sessions

    def _reader(self) -> AsyncSession:
        return self._reader_factory()()

    def _write_session(self) -> AsyncSession:
        session = self._writer()
        session.info[REPOSITORY_SESSION] = True
        # keep the loaded state after commit, so returned objects need no refresh
        session.sync_session.expire_on_commit = False
        return session

    # ------------------------------------------------------------ reads

    async def _load_one(self, ident: tuple[Any, ...]) -> State | None:
        async with self._reader() as session:
            return await session.run_sync(self._select_one, ident)

    async def _load_many(self, idents: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], State]:
        async with self._reader() as session:
            return await session.run_sync(self._select_many, idents)

    async def _decode(self, key: str, state: State, ident: tuple[Any, ...]) -> M | None:
        try:
            return self.codec.decode(state)
        except SerializationError:
            # an entry written for another version of the model: drop it, use the database
            await self.binding.rows.delete(key)
            fresh = await self._load_one(ident)
            return None if fresh is None else self.codec.decode(fresh)

    async def get(self, pk: Any) -> M | None:
        """Return a detached instance for primary key ``pk`` (tuple if composite), or ``None``."""
        ident = self.binding.ident(pk)
        key = self.binding.key(ident)
        state = await self.binding.rows.get_or_load(
            key, lambda: self._load_one(ident), self._load_ttl
        )
        if state is None:
            return None
        return await self._decode(key, state, ident)

    async def get_many(self, pks: Iterable[Any]) -> dict[Any, M]:
        """Return ``{pk: instance}`` for the rows that exist; one SELECT for all misses."""
        wanted = self._wanted(pks)

        async def load(missing: list[str]) -> dict[str, State | None]:
            rows = await self._load_many([wanted[k][1] for k in missing])
            # rows not found are returned as None, so "absent" is cached too
            return {k: rows.get(wanted[k][1]) for k in missing}

        found = await self.binding.rows.get_many_or_load(list(wanted), load, self._load_ttl)
        out: dict[Any, M] = {}
        for key, state in found.items():
            if state is None:
                continue
            given, ident = wanted[key]
            obj = await self._decode(key, state, ident)
            if obj is not None:
                for pk in given:
                    out[pk] = obj
        return out

    async def query(self, name: str, stmt: sa.Select[Any], ttl: TTLLike = None) -> list[M]:
        """Return the instances ``stmt`` selects, cached under ``name`` until the model changes.

        ``name`` must identify the statement and its parameters; any write to
        the model through a repository or ``track`` drops every cached query of it.
        """

        async def load() -> list[State]:
            async with self._reader() as session:
                return await session.run_sync(self._select_all, stmt)

        queries = self.binding.queries
        states = await queries.get_or_load(name, load, ttl if ttl is not None else self._ttl)
        try:
            return [self.codec.decode(s) for s in states]
        except SerializationError:
            await queries.delete(name)
            return [self.codec.decode(s) for s in await load()]

    # ------------------------------------------------------------ writes

    async def _commit(self, session: AsyncSession, ops: Op) -> None:
        """Commit ``session``, then apply ``ops`` to the cache; nothing is applied on failure."""
        binding = self.binding
        binding.begin_writes(ops)
        try:
            await session.commit()
        except asyncio.CancelledError:
            # the commit may have reached the database: drop the entries (always safe)
            await asyncio.shield(binding.apply(ops, store=False))
            raise
        except BaseException:
            binding.end_writes(ops)
            raise
        # a task cancelled now still finishes the cache update of what it committed
        await asyncio.shield(binding.apply(ops, store=self.policy.stores_on_write, ttl=self._ttl))

    async def add(self, obj: M) -> M:
        """Insert ``obj``, commit, then cache it (or invalidate) and return it detached."""
        async with self._write_session() as session:
            ops = await session.run_sync(self._stage_add, obj)
            await self._commit(session, ops)
        return obj

    async def update(
        self, pk: Any, /, *, retries: int = UPDATE_RETRIES, **changes: Any
    ) -> M | None:
        """Set ``changes`` on row ``pk``, commit, then cache it; ``None`` if it does not exist.

        Version conflicts (``StaleDataError``) are retried as ``CachedRepository.update`` does.
        """
        ident = self._checked_update(pk, changes, retries)
        attempt = 0
        while True:
            try:
                return await self._update_once(ident, changes, lock=attempt > 0)
            except StaleDataError as exc:
                attempt = self._retry(exc, attempt, retries, ident)

    async def _update_once(
        self, ident: tuple[Any, ...], changes: dict[str, Any], lock: bool
    ) -> M | None:
        async with self._write_session() as session:
            staged = await session.run_sync(self._stage_update, ident, changes, lock)
            if staged is None:
                return None
            await self._commit(session, staged[1])
        return staged[0]

    async def delete(self, pk: Any) -> bool:
        """Delete the row ``pk`` and commit, then drop or mark it absent; ``False`` if missing."""
        ident = self.binding.ident(pk)
        async with self._write_session() as session:
            ops = await session.run_sync(self._stage_delete, ident)
            if ops is None:
                return False
            await self._commit(session, ops)
        return True

    # ------------------------------------------------------------ maintenance

    async def invalidate(self, pk: Any) -> None:
        """Drop the cached row ``pk`` (after a write cachekit could not see)."""
        await self.binding.rows.delete(self.binding.key(self.binding.ident(pk)))
        await self.binding.queries.clear()

    async def clear(self) -> None:
        """Drop every cached row and query of this model."""
        await self.binding.apply({}, store=False, clear=True)
