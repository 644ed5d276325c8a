"""Async backend registry: URL scheme -> ``AsyncBackend`` class, imported only when first used.

The asyncio twins of the sync backends: ``memory://`` (over a ``MemoryBackend``),
``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
``rediss+cluster://``, ``redis+sentinel://``, ``rediss+sentinel://``
(``redis.asyncio``) and ``memcached://`` (a small
asyncio text-protocol client, see ``memcached.py``). They read the same URLs,
and write the same bytes, as the sync drivers of those schemes.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConfigurationError
from .. import redact_url
from ..base import AsyncBackend

__all__ = ["async_backend_from_url", "register_async_backend"]

# scheme -> ("module:Class" or the class itself, extra that provides its driver)
_REGISTRY: dict[str, tuple[str | type[AsyncBackend], str | None]] = {
    "memory": ("cachekit.backends.aio.memory:AsyncMemoryBackend", None),
    "redis": ("cachekit.backends.aio.redis:AsyncRedisBackend", "redis"),
    "rediss": ("cachekit.backends.aio.redis:AsyncRedisBackend", "redis"),
    "unix": ("cachekit.backends.aio.redis:AsyncRedisBackend", "redis"),
    "redis+cluster": ("cachekit.backends.aio.redis:AsyncRedisClusterBackend", "redis"),
    "rediss+cluster": ("cachekit.backends.aio.redis:AsyncRedisClusterBackend", "redis"),
    "redis+sentinel": ("cachekit.backends.aio.sentinel:AsyncRedisSentinelBackend", "redis"),
    "rediss+sentinel": ("cachekit.backends.aio.sentinel:AsyncRedisSentinelBackend", "redis"),
    "memcached": ("cachekit.backends.aio.memcached:AsyncMemcachedBackend", "memcached"),
}


def register_async_backend(scheme: str, target: str | type[AsyncBackend]) -> None:
    """Register an async backend class (or its ``"module:Class"`` path) for a URL scheme."""
    if isinstance(target, type) and not issubclass(target, AsyncBackend):
        raise ConfigurationError(f"{target!r} is not a cachekit AsyncBackend")
    _REGISTRY[scheme.lower()] = (target, None)


def _resolve(scheme: str) -> type[AsyncBackend]:
    entry = _REGISTRY.get(scheme)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigurationError(
            f"no cachekit async backend for URL scheme {scheme!r} (known: {known})"
        )
    target, extra = entry
    if isinstance(target, type):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'cachekit-py[{extra}]'" if extra else ""
        raise ConfigurationError(
            f"async backend for {scheme}:// needs a driver that is not installed ({exc.name}){hint}"
        ) from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, AsyncBackend)):
        raise ConfigurationError(f"{target} is not a cachekit AsyncBackend")
    return cls


def async_backend_from_url(url: str, **options: Any) -> AsyncBackend:
    """Build the async backend that serves ``url``'s scheme (no connection is opened yet)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        raise ConfigurationError(f"malformed cache URL {redact_url(url)!r}") from None
    if not scheme:
        raise ConfigurationError(
            f"cache URL {redact_url(url)!r} has no scheme (e.g. memory://, redis://)"
        )
    return _resolve(scheme).from_url(url, **options)
