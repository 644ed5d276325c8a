"""The exception tree: every error cachekit raises derives from ``CacheError``.

::

    CacheError
     ├── InvalidKeyError          a key (or decorator argument) that cannot be keyed
     ├── SerializationError       a value the serializer cannot encode or decode
     ├── ValueTooLargeError       a value over the backend's item-size limit
     ├── BackendUnavailableError  the backend is down or did not answer in time
     ├── BackendRejectedError     the backend answered but refused this one command
     │                            (out of memory, a value or TTL out of its range)
     ├── ReentrantLoadError       a loader asked for the key it is loading
     └── ConfigurationError       a bad URL, option, or a missing optional extra

A rejected command is the caller's or the data's problem, not an outage: it is
counted as an error but never opens the circuit breaker.

Driver exceptions (redis-py, pymemcache, SQLAlchemy) are translated at the edge
with ``raise ... from exc`` so the original cause stays attached.
"""

from __future__ import annotations

__all__ = [
    "BackendRejectedError",
    "BackendUnavailableError",
    "CacheError",
    "ConfigurationError",
    "InvalidKeyError",
    "ReentrantLoadError",
    "SerializationError",
    "ValueTooLargeError",
]


class CacheError(Exception):
    """Base class of every error raised by cachekit."""


class InvalidKeyError(CacheError, ValueError):
    """A key, or a decorated function's argument, that cannot form a cache key."""


class SerializationError(CacheError, ValueError):
    """A value that the configured serializer cannot encode, or bytes it cannot decode."""


class ValueTooLargeError(CacheError, ValueError):
    """A value whose encoded size is over the backend's item-size limit."""

    def __init__(self, size: int, limit: int, key: str | None = None) -> None:
        where = f" for key {key!r}" if key is not None else ""
        super().__init__(f"value of {size} bytes{where} is over the backend limit of {limit} bytes")
        self.size = size
        self.limit = limit


class BackendUnavailableError(CacheError):
    """The backend did not answer in time, refused the connection, or failed the call."""


class BackendRejectedError(CacheError):
    """The backend answered but refused the command (e.g. Redis OOM); the server is healthy."""


class ReentrantLoadError(CacheError):
    """A loader asked, directly or through other loads, for the key it is loading."""


class ConfigurationError(CacheError):
    """An invalid configuration: a bad URL or option, or a missing optional dependency."""
