"""SQLAlchemy integration: cached repositories and commit-aware write tracking.

::

    from cachekit.sqlalchemy import CachedRepository, track

    users = CachedRepository(User, Session, cache, policy=ck.WriteThrough(),
                             readers=[ReplicaSession])
    users.get(1)            # a detached User, or None
    track(Session, cache, models=[User])   # plain session writes, after commit

    users = AsyncCachedRepository(User, async_sessionmaker(engine), acache)
    await users.get(1)      # the same, awaited (needs SQLAlchemy's asyncio extra)

Needs the ``sqlalchemy`` extra. See ``docs/sqlalchemy.md`` for the guarantees.
"""

from __future__ import annotations

from .aio import AsyncCachedRepository
from .codec import RowCodec
from .repository import CachedRepository
from .tracking import Tracker, track

__all__ = ["AsyncCachedRepository", "CachedRepository", "RowCodec", "Tracker", "track"]
