"""``CachekitCache`` whose blocking methods run their ``a*`` twins: Django's suite on the async API.

Each call runs in a fresh event loop (``asyncio.run``), so every call also
exercises building the loop's ``AsyncCache``; nothing here goes to a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cachekit.contrib.django import CachekitCache


class AsyncDrivenCachekitCache(CachekitCache):
    """Every Django cache method, answered by the awaited implementation."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aget(*args, **kwargs))

    def set(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aset(*args, **kwargs))

    def add(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aadd(*args, **kwargs))

    def get_many(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aget_many(*args, **kwargs))

    def set_many(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aset_many(*args, **kwargs))

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.adelete(*args, **kwargs))

    def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.adelete_many(*args, **kwargs))

    def has_key(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.ahas_key(*args, **kwargs))

    def get_or_set(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aget_or_set(*args, **kwargs))

    def incr(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aincr(*args, **kwargs))

    def decr(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.adecr(*args, **kwargs))

    def touch(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.atouch(*args, **kwargs))

    def incr_version(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.aincr_version(*args, **kwargs))

    def decr_version(self, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.adecr_version(*args, **kwargs))

    def clear(self) -> None:
        asyncio.run(self.aclear())
