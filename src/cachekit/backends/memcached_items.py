"""How a cache entry becomes a memcached item: its key, its expiry time (``exptime``) and its bytes.

I/O-free, shared by the sync and asyncio memcached backends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final

from ..errors import ConfigurationError, SerializationError
from ..keys import encode_key

__all__ = [
    "MAX_ABSOLUTE_EXPTIME",
    "MAX_KEY_BYTES",
    "MAX_RELATIVE_TTL",
    "memcached_expire",
    "memcached_key",
]

#: memcached's key limit in bytes (the text protocol refuses longer keys).
MAX_KEY_BYTES: Final = 250
#: Expiry times above this many seconds are read by memcached as a unix timestamp.
MAX_RELATIVE_TTL: Final = 60 * 60 * 24 * 30
#: The latest absolute expiry memcached reads as such: it parses a signed 32-bit
#: number, and a later time wraps into the past (the item is expired at once).
MAX_ABSOLUTE_EXPTIME: Final = 2**31 - 1


def memcached_expire(ttl: float | None, now: Callable[[], float] = time.time) -> int | None:
    """Return memcached's ``exptime`` for ``ttl`` seconds, or ``None`` when the entry must go.

    ``None`` and ``inf`` -> 0 (no expiry); ``ttl <= 0`` -> ``None`` (delete
    instead of storing); sub-second TTLs round up to 1 s (memcached counts whole
    seconds, and rounding down would give 0 = never expire); TTLs over 30 days
    become an absolute unix time, because memcached reads larger numbers that
    way, capped at ``MAX_ABSOLUTE_EXPTIME`` (January 2038) so that it never
    wraps into the past.
    """
    if ttl is None or ttl == math.inf:
        return 0
    if ttl != ttl:  # NaN
        raise ConfigurationError("ttl must be a number of seconds, not NaN")
    if ttl <= 0:
        return None
    if ttl > MAX_RELATIVE_TTL:
        at = now() + ttl
        return MAX_ABSOLUTE_EXPTIME if at >= MAX_ABSOLUTE_EXPTIME else math.ceil(at)
    return math.ceil(ttl)


def memcached_key(key: str) -> str:
    """Return the key memcached receives for ``key`` (printable ASCII, at most 250 bytes)."""
    # the common case in C string methods: ASCII, printable and no space is
    # exactly encode_key's "\x21-\x7e" (a hit should not pay for a regex)
    if (
        len(key) <= MAX_KEY_BYTES
        and key.isascii()
        and key.isprintable()
        and " " not in key
        and not key.startswith("~")
    ):
        return key
    return encode_key(key, max_length=MAX_KEY_BYTES, ascii_only=True)


def _as_bytes(key: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise SerializationError(
        f"MemcachedBackend stores bytes, got {type(value).__name__} for key {key!r}; "
        "give the Cache a serializer"
    )
