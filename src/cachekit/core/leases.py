"""Lease placeholders: what a loading caller puts on a missing key so a write can void its load.

A lease is a value no serializer produces (it starts with a NUL byte): a
write overwrites it, and the loader's final compare-and-set over its own
lease then fails, so an older loaded value never replaces a newer write.
"""

from __future__ import annotations

import secrets

__all__ = ["LEASE_MARK", "RELEASED", "is_lease", "new_lease"]

#: Leading bytes of a lease placeholder; no serializer's output starts with a NUL byte.
LEASE_MARK = b"\x00ck-lease:"
#: What a lease is swapped for when its load stores nothing: read as a miss.
RELEASED = LEASE_MARK + b"released"


def new_lease() -> bytes:
    """A fresh lease token."""
    return LEASE_MARK + secrets.token_hex(8).encode()


def is_lease(raw: object) -> bool:
    """Whether a stored value is a lease (or a released one), not a cached value."""
    return isinstance(raw, bytes) and raw.startswith(LEASE_MARK)
