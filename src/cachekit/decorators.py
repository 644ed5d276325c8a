"""Decorators: ``cached`` (lazy loading), ``writes`` (write-through or invalidate), ``evicts``.

Generated with the cache from the async source: ``_sync/decorators.py`` for a
``Cache``, ``_async/decorators.py`` for an ``AsyncCache``.
"""

from __future__ import annotations

from ._async.decorators import AsyncCachedCallable
from ._sync.decorators import (
    CachedCallable,
    CachedFunction,
    CachedMethod,
    cached,
    evicts,
    writes,
)

__all__ = [
    "AsyncCachedCallable",
    "CachedCallable",
    "CachedFunction",
    "CachedMethod",
    "cached",
    "evicts",
    "writes",
]
