"""``AsyncCache``: the asyncio twin of ``Cache``, with the same contract, awaited."""

from __future__ import annotations

from ._async.cache import AsyncCache
from ._async.decorators import AsyncCachedCallable

__all__ = ["AsyncCache", "AsyncCachedCallable"]
