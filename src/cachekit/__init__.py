"""cachekit: cache-aside, write-through and TTL caching over memory, Redis or Memcached.

Nothing is created at import time; build a ``Cache`` yourself::

    import cachekit as ck
    cache = ck.Cache.from_url("memory://?maxsize=10000", namespace="app", ttl=300)

    @cache.cached(ttl=60)
    def get_user(user_id: int) -> dict: ...
"""

from __future__ import annotations

from .aio import AsyncCache
from .backends import MISSING, Backend, backend_from_url, register_backend
from .backends.base import AsyncBackend
from .backends.memory import MemoryBackend
from .cache import Cache
from .decorators import CachedCallable
from .encryption import EncryptedSerializer
from .errors import (
    BackendRejectedError,
    BackendUnavailableError,
    CacheError,
    ConfigurationError,
    InvalidKeyError,
    ReentrantLoadError,
    SerializationError,
    ValueTooLargeError,
)
from .policies import NO_EXPIRY, TTL, CacheAside, Policy, WriteThrough
from .resilience import CircuitBreaker
from .serializers import (
    JsonSerializer,
    KeyBoundSerializer,
    PassthroughSerializer,
    PickleSerializer,
    Serializer,
)
from .stats import Stats

__version__ = "0.1.0"

__all__ = [
    "MISSING",
    "NO_EXPIRY",
    "TTL",
    "AsyncBackend",
    "AsyncCache",
    "Backend",
    "BackendRejectedError",
    "BackendUnavailableError",
    "Cache",
    "CacheAside",
    "CacheError",
    "CachedCallable",
    "CircuitBreaker",
    "ConfigurationError",
    "EncryptedSerializer",
    "InvalidKeyError",
    "JsonSerializer",
    "KeyBoundSerializer",
    "MemoryBackend",
    "PassthroughSerializer",
    "PickleSerializer",
    "Policy",
    "ReentrantLoadError",
    "SerializationError",
    "Serializer",
    "Stats",
    "ValueTooLargeError",
    "WriteThrough",
    "__version__",
    "backend_from_url",
    "register_backend",
]


def __getattr__(name: str) -> object:
    # Optional backends are imported on first use, so their drivers stay optional.
    lazy = {
        "RedisBackend": ("cachekit.backends.redis", "RedisBackend"),
        "RedisClusterBackend": ("cachekit.backends.redis", "RedisClusterBackend"),
        "MemcachedBackend": ("cachekit.backends.memcached", "MemcachedBackend"),
    }
    if name in lazy:
        import importlib

        module, attr = lazy[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cachekit' has no attribute {name!r}")
