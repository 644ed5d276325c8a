"""A backend whose entries expire on a simulated clock, over any real one (``cachekit bench``)."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..backends.base import MISSING, Backend, SupportsCompareAndSet

__all__ = ["BackendWrapper", "SimExpiryBackend"]

#: Wraps the backend of every cached run (``run_bench(wrap_backend=...)``): a
#: latency injector, a recorder, a fault script.
BackendWrapper = Callable[[Backend], Backend]

_EXPIRY = struct.Struct("!d")  # SimExpiryBackend's header: simulated expiry time (inf: never)


class SimExpiryBackend(Backend):
    """A backend whose entries expire on a simulated clock, over any real one.

    Each value is stored with its simulated expiry time in front; a read past
    it is a miss (counted as an expiry). The server keeps every entry for
    ``real_ttl`` real seconds at most (its namespace version too), so a bench
    leaves nothing behind for long. For ``cachekit bench --cache-url redis://...``
    on the simulated clock: the wrapped backend is a remote one (values are
    bytes), used by one thread.

    Every command costs the same round trips as on the server itself: the
    wrapper remembers what it last read or wrote per key (one thread, a
    namespace of its own), so ``add`` over an expired entry and
    ``compare_and_set`` need no extra ``GET``.
    """

    def __init__(
        self, inner: Backend, clock: Callable[[], float], *, real_ttl: float = 900.0
    ) -> None:
        self.inner, self._clock, self._real_ttl = inner, clock, real_ttl
        size = inner.max_value_size
        self.max_value_size = None if size is None else size - _EXPIRY.size
        self.server_address = inner.server_address
        self._expired = 0
        self._known: dict[str, bytes] = {}  # key -> the stored bytes, as last seen

    def _pack(self, value: Any, ttl: float | None) -> bytes:
        expiry = math.inf if ttl is None else self._clock() + ttl
        return _EXPIRY.pack(expiry) + bytes(value)

    def _real(self, ttl: float | None) -> float | None:
        # even "no expiry" (the namespace version) is kept only real_ttl: a bench's
        # namespaces are its own, and nothing of them should outlive it for long
        return self._real_ttl

    def _live(self, data: bytes) -> Any:
        """The value in ``data``, or MISSING once expired on the simulated clock."""
        (expiry,) = _EXPIRY.unpack_from(data)
        return MISSING if self._clock() >= expiry else data[_EXPIRY.size :]

    def _read(self, key: str, raw: Any) -> Any:
        if raw is MISSING:
            self._known.pop(key, None)
            return MISSING
        data = self._known[key] = bytes(raw)
        value = self._live(data)
        if value is MISSING:
            self._expired += 1
        return value

    def get(self, key: str) -> Any:
        """Return the value, or MISSING once its simulated expiry has passed."""
        return self._read(key, self.inner.get(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys present and not expired."""
        keys = list(keys)
        found = self.inner.get_many(keys)
        out = {}
        for k in keys:
            value = self._read(k, found.get(k, MISSING))
            if value is not MISSING:
                out[k] = value
        return out

    def set(self, key: str, value: Any, ttl: float | None) -> None:
        """Store ``value`` until ``ttl`` simulated seconds from now (``<= 0``: delete)."""
        if ttl is not None and ttl <= 0:
            self.delete(key)
            return
        data = self._pack(value, ttl)
        self.inner.set(key, data, self._real(ttl))
        self._known[key] = data

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> None:
        """Store every item with the same simulated ``ttl``."""
        if ttl is not None and ttl <= 0:
            self.delete_many(mapping)
            return
        packed = {k: self._pack(v, ttl) for k, v in mapping.items()}
        self.inner.set_many(packed, self._real(ttl))
        self._known.update(packed)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """Store ``value`` if ``key`` is absent or expired on the simulated clock."""
        data = self._pack(value, ttl)
        seen = self._known.get(key)
        if seen is not None and self._live(seen) is MISSING:
            self.inner.set(key, data, self._real(ttl))  # there, but expired: take it over
        elif not self.inner.add(key, data, self._real(ttl)):
            raw = self.inner.get(key)  # present: expired without our knowing?
            if raw is not MISSING and self._live(bytes(raw)) is not MISSING:
                self._known[key] = bytes(raw)
                return False
            self.inner.set(key, data, self._real(ttl))
        self._known[key] = data
        return True

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""
        self._known.pop(key, None)
        return self.inner.delete(key)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove ``keys``; return how many were present."""
        keys = list(keys)
        for k in keys:
            self._known.pop(k, None)
        return self.inner.delete_many(keys)

    def compare_and_set(self, key: str, expected: Any, value: Any, ttl: float | None) -> bool:
        """Store ``value`` only if ``key`` holds exactly ``expected`` and has not expired."""
        seen = self._known.get(key)
        if seen is None:
            raw = self.inner.get(key)
            if raw is MISSING:
                return False
            seen = self._known[key] = bytes(raw)
        if self._live(seen) != bytes(expected):
            return False
        gone = ttl is not None and ttl <= 0
        data = seen if gone else self._pack(value, ttl)
        real = 0.0 if gone else self._real(ttl)
        if isinstance(self.inner, SupportsCompareAndSet):
            ok = self.inner.compare_and_set(key, seen, data, real)
        else:  # one thread on the simulated clock: nothing can interleave
            self.inner.set(key, data, real)
            ok = True
        if ok and gone:
            self._known.pop(key, None)
        elif ok:
            self._known[key] = data
        else:
            self._known.pop(key, None)  # someone else's value: read it again next time
        return ok

    def eviction_counts(self) -> tuple[int, int]:
        """Return ``(0, entries read after their simulated expiry)``."""
        return 0, self._expired

    def close(self) -> None:
        """Close the wrapped backend."""
        self._known.clear()
        self.inner.close()
