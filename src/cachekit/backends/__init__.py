"""Backend registry: URL scheme -> backend class, imported only when first used.

Third parties register a scheme with ``register_backend("myscheme",
"mypkg.mod:MyBackend")`` or with an entry point in the ``cachekit.backends``
group (name = scheme, value = ``module:Class``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import MISSING, Backend, Missing

__all__ = ["MISSING", "Backend", "Missing", "backend_from_url", "redact_url", "register_backend"]

# scheme -> ("module:Class" or the class itself, extra that provides its driver)
_REGISTRY: dict[str, tuple[str | type[Backend], str | None]] = {
    "memory": ("cachekit.backends.memory:MemoryBackend", None),
    "redis": ("cachekit.backends.redis:RedisBackend", "redis"),
    "rediss": ("cachekit.backends.redis:RedisBackend", "redis"),
    "unix": ("cachekit.backends.redis:RedisBackend", "redis"),
    "redis+cluster": ("cachekit.backends.redis:RedisClusterBackend", "redis"),
    "rediss+cluster": ("cachekit.backends.redis:RedisClusterBackend", "redis"),
    "redis+sentinel": ("cachekit.backends.sentinel:RedisSentinelBackend", "redis"),
    "rediss+sentinel": ("cachekit.backends.sentinel:RedisSentinelBackend", "redis"),
    "memcached": ("cachekit.backends.memcached:MemcachedBackend", "memcached"),
}


def redact_url(url: str) -> str:
    """``url`` with everything before its last ``@`` after the scheme shown as ``***``.

    Cutting at the last ``@`` also hides a password whose unencoded ``/``,
    ``?`` or ``#`` made a URL parser see it as the path or query.
    """
    if "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    host = rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}***@{host}"


def register_backend(scheme: str, target: str | type[Backend]) -> None:
    """Register a backend class (or its ``"module:Class"`` path) for a URL scheme."""
    if isinstance(target, type) and not issubclass(target, Backend):
        raise ConfigurationError(f"{target!r} is not a cachekit Backend")
    _REGISTRY[scheme.lower()] = (target, None)


def _resolve(scheme: str) -> type[Backend]:
    entry = _REGISTRY.get(scheme)
    if entry is None:
        for ep in entry_points(group="cachekit.backends"):
            if ep.name == scheme:
                entry = (ep.value, None)
                break
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigurationError(f"no cachekit backend for URL scheme {scheme!r} (known: {known})")
    target, extra = entry
    if isinstance(target, type):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'cachekit-py[{extra}]'" if extra else ""
        raise ConfigurationError(
            f"backend for {scheme}:// needs a driver that is not installed ({exc.name}){hint}"
        ) from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigurationError(f"{target} is not a cachekit Backend")
    return cls


def backend_from_url(url: str, **options: Any) -> Backend:
    """Build the backend that serves ``url``'s scheme."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        raise ConfigurationError(f"malformed cache URL {redact_url(url)!r}") from None
    if not scheme:
        raise ConfigurationError(
            f"cache URL {redact_url(url)!r} has no scheme (e.g. memory://, redis://)"
        )
    return _resolve(scheme).from_url(url, **options)
