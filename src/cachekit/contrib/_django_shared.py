"""The registry of cachekit caches that ``CachekitCache`` objects with equal settings share."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from django.core.exceptions import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    ImproperlyConfigured,
)

from .._async.cache import CACHE_OPTIONS
from ..aio import AsyncCache
from ..backends.aio._loops import PerLoop
from ..backends.aio.memory import AsyncMemoryBackend
from ..backends.memory import MemoryBackend
from ..cache import Cache
from ..serializers import JsonSerializer, PickleSerializer, Serializer


class _Shared:
    """The cachekit caches behind every ``CachekitCache`` with the same LOCATION and OPTIONS.

    Django builds a backend object per thread (and per async context); they all
    share one connection pool, one namespace version and one async cache per
    event loop through this object.
    """

    def __init__(
        self, location: str, namespace: str, serializer: Serializer, options: dict[str, Any]
    ) -> None:
        # the option objects stay alive with this entry: the registry names them by id()
        self.options = dict(options)
        cache_opts = {k: options.pop(k) for k in CACHE_OPTIONS if k in options}
        common: dict[str, Any] = {
            "namespace": namespace,
            "serializer": serializer,
            "fail_open": False,  # the Django layer decides, so set_many can name failed keys
        }
        self.sync = Cache.from_url(location, **common, **options, **cache_opts)
        store = self.sync.backend
        if isinstance(store, MemoryBackend):
            # the same in-process store (and namespace version) for both kinds of call
            template = AsyncCache(AsyncMemoryBackend(store), **common, **cache_opts)
        else:
            template = AsyncCache.from_url(location, **common, **options, **cache_opts)
        self._template = template
        # asyncio locks belong to one loop: one AsyncCache per loop over one shared backend
        self._per_loop: PerLoop[AsyncCache] = PerLoop(
            "CachekitCache", lambda: template.child(namespace), _keep_backend_open
        )

    def acache(self) -> AsyncCache:
        """The running event loop's ``AsyncCache``."""
        return self._per_loop.get()

    def close(self) -> None:
        """Close the sync cache's connections (the async ones close with their loops)."""
        self.sync.close()


async def _keep_backend_open(acache: AsyncCache) -> None:
    """A loop's AsyncCache needs no disposal: its backend is shared by every loop."""


_SHARED: dict[tuple[Any, ...], _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _identity(value: Any) -> Any:
    """A hashable stand-in for an option value (objects by identity: they stay alive)."""
    if value is None or isinstance(value, (str, bytes, int, float, bool)):
        return value
    return ("object", id(value))


def close_shared_caches() -> None:
    """Close every cache connection the Django backends of this process opened (tests, shutdown)."""
    with _SHARED_LOCK:
        shared = list(_SHARED.values())
        _SHARED.clear()
    for item in shared:
        item.close()


def _serializer(name: Any, pickle_key: Any) -> tuple[Serializer, Any]:
    """The serializer ``OPTIONS["serializer"]`` names (``pickle`` by default), and an identity."""
    if name == "json":
        return JsonSerializer(), "json"
    if name == "pickle":
        if pickle_key is None:
            from django.utils.crypto import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
                salted_hmac,
            )

            # derived from SECRET_KEY, never SECRET_KEY itself
            key: bytes = salted_hmac(
                "cachekit.contrib.django.CachekitCache", "pickle", algorithm="sha256"
            ).digest()
        else:
            key = pickle_key.encode() if isinstance(pickle_key, str) else pickle_key
        # caches with different keys never share: identified by a digest, never the key
        return PickleSerializer(key), ("pickle", hashlib.sha256(key).hexdigest())
    if isinstance(name, str):
        raise ImproperlyConfigured(
            f"CachekitCache OPTIONS['serializer'] must be 'pickle', 'json' or a serializer, "
            f"not {name!r}"
        )
    return name, _identity(name)
